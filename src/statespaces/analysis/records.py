r"""Records of the explicit operator: one :class:`Oscillator`, the :class:`OscillatorAnalysis` of a layer and the
closed-form kernel :func:`green_kernel` they evaluate (thesis eq. 3.2 with conjugate pairs, §3.4.5; seed 000, seed
001, notes Parts 6.1-6.2).

``K[l] = sum_n 2 Re(c_n lambda_n^l)`` with discrete eigenvalues ``lambda_n`` and complex residues ``c_n``. Shapes:
SISO layers (H, M), MIMO layers (LinOSS, S5) residues (H_out, H_in, P); all float64/complex128. What every field
means, and how each layer is read into these records (:mod:`statespaces.analysis.extraction`), is told in
:mod:`statespaces.analysis.oscillators`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from .._checks import all_finite, check_int, check_length, check_real, check_sequence
from ..layers.modes import MODES_TOL

Tensor = torch.Tensor

__all__ = ["Oscillator", "OscillatorAnalysis", "green_kernel"]


@dataclass(frozen=True)
class Oscillator:
    """One damped oscillator of a SISO channel: ``K[l] += amplitude * exp(-zeta w0 t) cos(w_d t + phase)``
    with ``t = l dt``, ``w_d = w0 sqrt(1 - zeta^2)`` (i.e. ``2 Re(c lambda^l)``, ``c = amplitude/2 e^{i phase}``).

    Fields (checked on construction, ``TypeError``/``ValueError``): ``channel`` (int >= 0), ``frequency``
    natural angular frequency ``w0 >= 0`` (rad per unit time), ``damping`` ratio ``zeta`` in [-1, 1]
    (negative: a growing mode), ``amplitude >= 0``, ``phase`` (rad), ``dt > 0`` (the channel's step
    size); all finite.

    One mode of a diagonal SSM (thesis §3.4.5) read as an oscillator (seed 000; notes Part 6.2): the eigenvalue
    ``s = w0 (-zeta + i sqrt(1 - zeta^2))`` and its conjugate. ``|zeta| = 1`` is a real eigenvalue: a
    first-order relaxation ``amplitude cos(phase) e^{-zeta w0 t}``, not a critically damped oscillator.
    ``|zeta| > 1`` (overdamped) is refused: ``q'' + 2 zeta w0 q' + w0^2 q`` then has two distinct real
    eigenvalues, two relaxations that one record cannot hold (the message gives their two records).
    """

    channel: int
    frequency: float
    damping: float
    amplitude: float
    phase: float
    dt: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", check_int("Oscillator channel", self.channel, 0))
        for name in ("frequency", "damping", "amplitude", "phase", "dt"):
            object.__setattr__(self, name, check_real(f"Oscillator {name}", getattr(self, name), positive=False,
                                                      what="finite real number"))
        if not (self.frequency >= 0 and self.amplitude >= 0 and self.dt > 0):
            raise ValueError(f"invalid {self}: need frequency >= 0, amplitude >= 0 and dt > 0")
        z, w0 = self.damping, self.frequency
        if abs(z) > 1:
            r = math.sqrt(z * z - 1)
            raise ValueError(
                f"Oscillator damping {z} (|zeta| > 1, overdamped): the mode has two real eigenvalues "
                f"{-w0 * (z - r):.6g} and {-w0 * (z + r):.6g}, two first-order relaxations, not one oscillator; "
                f"pass two records with damping={math.copysign(1.0, z):g} and frequencies {abs(w0 * (z - r)):.6g} "
                f"and {abs(w0 * (z + r)):.6g}")

    def continuous_eigenvalue(self) -> complex:
        """``s = w0 (-zeta + i sqrt(1 - zeta^2))`` (Im >= 0; real for ``|zeta| = 1``)."""
        w0, z = self.frequency, self.damping
        return complex(-z * w0, w0 * math.sqrt(1.0 - z * z))


def _inv_decay(rate: Tensor) -> Tensor:
    neg = rate < 0
    return torch.where(neg, -1.0 / torch.where(neg, rate, -torch.ones_like(rate)), torch.full_like(rate, math.inf))


def _finite_complex(name: str, x: Any) -> Tensor:
    """``x`` (a tensor or array-like of numbers, with finite entries) as complex128."""
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a tensor of numbers, got {type(x).__name__} ({e})") from None
    if t.dtype == torch.bool:
        raise TypeError(f"{name} must be a tensor of numbers, got dtype {t.dtype}")
    if not all_finite(t):
        raise ValueError(f"{name} contains {int((~torch.isfinite(t)).sum())} non-finite value(s) (NaN or inf)")
    return t.to(torch.complex128)


def green_kernel(log_eig: Tensor, residue: Tensor, L: int) -> Tensor:
    r"""``K[..., l] = sum_n 2 Re(residue_n exp(l log_eig_n))``: residue (..., N), log_eig broadcastable; (..., L)
    float64 (both are taken in complex128, whatever their dtype, and must be finite). ``L``: a positive integer.
    Seed 000's closed-form kernel: thesis eq. 3.2 with conjugate pairs (§3.4.5)."""
    L = check_length(L)
    log_eig = _finite_complex("log_eig", log_eig)
    residue = _finite_complex("residue", residue)
    try:
        torch.broadcast_shapes(log_eig.shape, residue.shape)
    except RuntimeError:
        raise ValueError(f"log_eig {tuple(log_eig.shape)} does not broadcast against residue {tuple(residue.shape)} "
                         "(residue (..., N), log_eig (N,) or (..., N))") from None
    l = torch.arange(L, dtype=torch.float64, device=residue.device)
    powers = torch.exp(log_eig.unsqueeze(-1) * l)                   # (..., N, L)
    return 2 * torch.einsum("...n,...nl->...l", residue, powers).real


@dataclass
class OscillatorAnalysis:
    r"""Oscillators of one layer (see :mod:`statespaces.analysis.oscillators` for the meaning of every field;
    seed 000 and seed 001, notes Parts 6.1-6.2).

    Shapes (complex128 / float64): S4D-like (``kind in {'s4d', 's4'}``): ``log_eig``, ``dt``,
    ``eig_nominal``, ``residue``, ``valid`` (H, M); LinOSS: ``log_eig``, ``dt``, ``eig_nominal`` (P,),
    ``residue`` and ``ramp`` (H_out, H_in, P), ``gf_residue`` (P,); S5 (``kind == 's5'``): as LinOSS
    with M modes, no ramp, and ``lag0`` (H_out, H_in) for a bidirectional layer's forward kernel; ``D`` (H,).
    """

    kind: str
    discretization: str
    log_eig: Tensor
    dt: Tensor
    residue: Tensor
    D: Tensor
    eig_nominal: Tensor
    name: str = ""
    ramp: Optional[Tensor] = None
    gf_residue: Optional[Tensor] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    #: ``"causal"`` (a causal layer), or ``"forward"``/``"backward"`` (a direction of a bidirectional one)
    direction: str = "causal"
    #: the kernel's entry l acts on lag ``l`` (causal, forward) or on lag ``-(l + lag_offset)`` (backward)
    lag_offset: int = 0
    #: SISO (H, M) bool: which entries are oscillators (None: all); the rest pad channels with fewer
    #: oscillators (residue 0, a repeated eigenvalue) and are left out of tables, counts and records
    valid: Optional[Tensor] = None
    #: ``"time"``: ``dt`` is the layer's step, frequencies are in rad per unit time; ``"step"``: the
    #: layer's modes carry no step size, ``dt`` is 1 and frequencies are in rad per step, times in steps
    time_unit: str = "time"
    #: MIMO (H_out, H_in) float64 or None: a lag-0 term of the kernel that is no sum of oscillators (the
    #: backward scan of a bidirectional S5 reads the current input; ``Modes.feedthrough``)
    lag0: Optional[Tensor] = None

    # ---- derived quantities ---------------------------------------------------------------------
    @property
    def mimo(self) -> bool:
        """Whether the oscillators are shared by all channels (LinOSS, S5): residues (H_out, H_in, P)."""
        return self.log_eig.dim() == 1

    @property
    def backward(self) -> bool:
        return self.direction == "backward"

    @property
    def eig(self) -> Tensor:
        """Discrete eigenvalues lambda (Im >= 0 representatives)."""
        return torch.exp(self.log_eig)

    @property
    def angle(self) -> Tensor:
        """arg(lambda) in [0, pi], rad per step."""
        return torch.angle(self.eig).abs()

    @property
    def decay_steps(self) -> Tensor:
        """-1/log|lambda| (inf for |lambda| >= 1)."""
        return _inv_decay(self.log_eig.real)

    @property
    def eig_continuous(self) -> Tensor:
        """``s = (log|lambda| + i arg lambda)/dt``: exact continuous equivalent of the discrete kernel, per unit
        time (per step where the layer gave no dt: ``time_unit == "step"``)."""
        return torch.complex(self.log_eig.real, self.angle) / self.dt

    @property
    def natural_frequency(self) -> Tensor:
        """``w0 = |s|`` (for a relaxation: its rate)."""
        return self.eig_continuous.abs()

    @property
    def relaxation(self) -> Tensor:
        """bool: the mode has a real ``s`` (``angle`` 0): a first-order relaxation ``e^{s t}``, not an oscillator
        (see :mod:`statespaces.analysis.oscillators`); its ``damping_ratio`` is 1 (-1 if it grows)."""
        return self.angle == 0

    @property
    def damping_ratio(self) -> Tensor:
        """``zeta = -Re s/|s|`` in [-1, 1] (1 for ``s = 0``); ``|zeta| = 1`` marks a :attr:`relaxation`."""
        s = self.eig_continuous
        mag = s.abs()
        safe = torch.where(mag > 0, mag, torch.ones_like(mag))
        return torch.where(mag > 0, -s.real / safe, torch.ones_like(mag)) + 0.0

    @property
    def damped_frequency(self) -> Tensor:
        return self.eig_continuous.imag

    @property
    def decay_time(self) -> Tensor:
        """-1/Re s in units of time (inf when undamped)."""
        return _inv_decay(self.eig_continuous.real)

    @property
    def amplitude(self) -> Tensor:
        """``2 |c|`` per residue (S4D (H, M); LinOSS (H_out, H_in, P))."""
        return 2 * self.residue.abs()

    @property
    def phase(self) -> Tensor:
        return torch.angle(self.residue)

    @property
    def d_model(self) -> int:
        return self.D.shape[0]

    @property
    def kernel_error(self) -> Optional[float]:
        """Largest relative error of the layer's modes' kernel against the layer's own (S4: measured by
        ``S4.modes``, Lemma 6.6); None where the modes are exact by construction (S4D, LinOSS)."""
        err = self.extra.get("kernel_error")
        return None if err is None else float(err.max())

    @property
    def n_oscillators(self) -> int:
        """Number of oscillators (padding excluded)."""
        return int(self.log_eig.numel() if self.valid is None else self.valid.sum())

    def _entries(self, t: Tensor) -> Tensor:
        """The oscillators' values of a per-entry tensor, flattened (padding dropped)."""
        return t.flatten() if self.valid is None else t[self.valid]

    # ---- the operator -----------------------------------------------------------------------------
    def kernel(self, L: int) -> Tensor:
        r"""Closed-form Green's function ``K[l] = sum_n 2 Re(c_n lambda_n^l)`` (+ LinOSS ramps, + ``lag0`` at
        l = 0): (H, L) for SISO layers, (H_out, H_in, L) for LinOSS and S5. float64."""
        L = check_length(L)
        K = green_kernel(self.log_eig, self.residue, L)
        if self.ramp is not None and bool((self.ramp != 0).any()):
            l = torch.arange(L, dtype=torch.float64)
            r = torch.exp(self.log_eig.real)                          # (P,)
            negative = torch.cos(self.log_eig.imag) < 0               # a double eigenvalue at -r
            alt = torch.where(negative.unsqueeze(-1), 1.0 - 2.0 * torch.remainder(l, 2.0), torch.ones_like(l))
            basis = (l + 1) * torch.exp(l * torch.log(r).unsqueeze(-1)) * alt     # (P, L): (l + 1) lambda^l
            K = K + torch.einsum("hkp,pl->hkl", self.ramp, basis)
        if self.lag0 is not None:
            K[..., 0] += self.lag0
        return K

    def apply(self, u: Tensor) -> Tensor:
        r"""The explicit operator on an input (B, L, H) by direct sums (float64): ``y = K * u + D u``
        (causal); a backward direction sums over later steps, ``y_t = sum_{s>t} K[s-t-1] u_s``
        (``lag_offset`` 1; 0 for a concat layer's reverse half, which also has its own ``D``). ``u``: a finite
        real floating tensor of shape (B, L, H) with H the analysed layer's input channels; returns (B, L, H)."""
        check_sequence(u, self.residue.shape[1] if self.mimo else self.d_model, torch.float64, name="u")
        u = u.to(torch.float64)
        if self.backward:                       # anti-causal = causal on the reversed sequence
            v = u.flip(1)
            if self.lag_offset:
                v = torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], 1)       # delay by one step
                return self._causal(v, self.kernel(u.shape[1])).flip(1)
            return (self._causal(v, self.kernel(u.shape[1])) + v * self.D).flip(1)
        return self._causal(u, self.kernel(u.shape[1])) + u * self.D

    def _causal(self, u: Tensor, K: Tensor) -> Tensor:
        L = u.shape[1]
        y = torch.zeros_like(u)
        for lag in range(L):                                          # O(L^2 H): a readable reference
            if self.mimo:
                y[:, lag:] += torch.einsum("blk,hk->blh", u[:, : L - lag], K[:, :, lag])
            else:
                y[:, lag:] += u[:, : L - lag] * K[:, lag]
        return y

    def frequency_response(self, L: int = 2048, n_freq: int = 512) -> Tuple[Tensor, Tensor]:
        r"""``H(e^{i w}) = D + sum_{l<L} K[l] e^{-i w l}`` on ``n_freq`` points of [0, pi].

        Returns ``(w, H)`` with H (H, n_freq) (SISO) or (H_out, H_in, n_freq) (LinOSS), complex.
        """
        n_freq = check_length(n_freq, "n_freq")
        K = self.kernel(L)
        w = torch.linspace(0, math.pi, n_freq, dtype=torch.float64)
        lags = torch.arange(L, dtype=torch.float64)
        if self.backward:                                             # entry l sits at lag -(l + offset)
            lags = -(lags + self.lag_offset)
        E = torch.exp(-1j * w.unsqueeze(0) * lags.unsqueeze(1))       # (L, F)
        Hf = K.to(torch.complex128) @ E
        if self.mimo:
            Hf = Hf + torch.diag(self.D).to(torch.complex128).unsqueeze(-1)
        else:
            Hf = Hf + self.D.to(torch.complex128).unsqueeze(-1)
        return w, Hf

    # ---- tables -------------------------------------------------------------------------------------
    def table(self) -> List[Dict[str, Any]]:
        """One row per oscillator: per (channel, mode) for SISO layers, per oscillator for MIMO layers
        (with ``gain`` = Frobenius norm of its channel-mixing matrix: LinOSS ``Re(C_:p B_p:)``, S5
        ``C_:p B_p:``; ``amplitude`` and ``phase`` are then those of the oscillator's own unit response, 1 and 0
        for S5's first-order modes; LinOSS rows add the stiffness ``A`` and ``degenerate``). Every row
        says its ``time_unit`` and whether it is a first-order ``relaxation`` (real ``s``, not an oscillator);
        rows of an S4 layer also carry their channel's ``kernel_error``."""
        cols = {
            "eig_re": self.eig.real, "eig_im": self.eig.imag, "eig_abs": self.eig.abs(),
            "angle_per_step": self.angle, "decay_steps": self.decay_steps,
            "s_re": self.eig_continuous.real, "s_im": self.eig_continuous.imag,
            "nominal_re": self.eig_nominal.real, "nominal_im": self.eig_nominal.imag,
            "natural_frequency": self.natural_frequency, "damping_ratio": self.damping_ratio,
            "damped_frequency": self.damped_frequency, "decay_time": self.decay_time, "dt": self.dt,
        }
        relax = self.relaxation
        rows: List[Dict[str, Any]] = []
        if self.mimo:
            W = self.extra["mixing"]                                   # (H, H, P)
            gain = W.flatten(0, 1).norm(dim=0)
            assert self.gf_residue is not None                         # set for every MIMO analysis
            amp = 2 * self.gf_residue.abs()
            ph = torch.angle(self.gf_residue)
            for p in range(self.log_eig.shape[0]):
                row: Dict[str, Any] = {"layer": self.name, "oscillator": p}
                if "A" in self.extra:
                    row["A"] = float(self.extra["A"][p])
                row.update({k: float(v[p]) for k, v in cols.items()})
                row["relaxation"] = bool(relax[p])
                row.update({"amplitude": float(amp[p]), "phase": float(ph[p]), "gain": float(gain[p])})
                if "degenerate" in self.extra:
                    row["degenerate"] = bool(self.extra["degenerate"][p])
                row["time_unit"] = self.time_unit
                rows.append(row)
            return rows
        amp, ph = self.amplitude, self.phase
        err = self.extra.get("kernel_error")
        for h, m in self._indices():
            row = {"layer": self.name, "channel": h, "mode": m}
            row.update({k: float(v[h, m]) for k, v in cols.items()})
            row["relaxation"] = bool(relax[h, m])
            row.update({"amplitude": float(amp[h, m]), "phase": float(ph[h, m]), "time_unit": self.time_unit})
            if err is not None:
                row["kernel_error"] = float(err[h])
            rows.append(row)
        return rows

    def _indices(self) -> List[Tuple[int, int]]:
        """SISO: the (channel, mode) index of every oscillator, padding excluded."""
        H, M = self.log_eig.shape
        valid = None if self.valid is None else self.valid.tolist()
        return [(h, m) for h in range(H) for m in range(M) if valid is None or valid[h][m]]

    def to_oscillators(self) -> List[Oscillator]:
        """SISO layers only: the :class:`Oscillator` records (input of :func:`s4d_from_oscillators`)."""
        if self.mimo:
            raise TypeError(f"{self.kind} mixes channels (MIMO); its oscillators cannot be listed per channel for S4D")
        w0, z, amp, ph = self.natural_frequency, self.damping_ratio, self.amplitude, self.phase
        return [
            Oscillator(h, float(w0[h, m]), float(z[h, m]), float(amp[h, m]), float(ph[h, m]), float(self.dt[h, m]))
            for h, m in self._indices()
        ]

    def summary(self) -> Dict[str, Any]:
        """Small JSON-able summary. ``kernel_error`` (None: exact by construction) and ``faithful``
        (``kernel_error <= MODES_TOL``) say whether the oscillators describe the layer (S4, Lemma 6.6);
        ``time_unit`` whether frequencies are per unit time or per step (no dt known); ``n_relaxations`` how
        many of the ``n_oscillators`` modes are first-order relaxations (real ``s``)."""
        mag, w0, zeta = (self._entries(t) for t in (self.eig.abs(), self.natural_frequency, self.damping_ratio))
        err = self.kernel_error
        return {
            "layer": self.name, "kind": self.kind, "discretization": self.discretization, "direction": self.direction,
            "d_model": self.d_model, "n_oscillators": self.n_oscillators,
            "n_relaxations": int(self._entries(self.relaxation).sum()),
            "max_abs_eig": float(mag.max()), "min_abs_eig": float(mag.min()),
            "natural_frequency_range": [float(w0.min()), float(w0.max())],
            "damping_ratio_range": [float(zeta.min()), float(zeta.max())],
            "time_unit": self.time_unit, "kernel_error": err, "faithful": None if err is None else err <= MODES_TOL,
        }
