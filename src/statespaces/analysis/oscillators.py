r"""The explicit operator of a trained SSM layer: its oscillators and closed-form Green's function.

Seed 000 (with the corrections of notes Part 6.2) and seed 001 (LinOSS, notes Part 6.1). A linear
time-invariant layer's convolution kernel is a sum of damped discrete oscillators:

    K[l] = sum_n 2 Re(c_n lambda_n^l)                      (l = 0, 1, ..., L-1)

with discrete eigenvalues ``lambda_n`` (one representative per conjugate pair, ``Im >= 0``) and
complex residues ``c_n`` (amplitude ``2|c_n|``, phase ``arg c_n``). The layer's output is
``y = K * u + D u``. This module extracts ``(lambda_n, c_n)`` from a layer and reports, per
oscillator:

* ``eig``: discrete eigenvalue ``lambda = exp(log_eig)``; ``angle`` = arg(lambda) (rad per step),
  ``decay_steps`` = -1/log|lambda| (steps for the envelope to fall by e);
* ``eig_continuous`` ``s = log(lambda)/dt`` (principal log): the continuous eigenvalue whose samples
  at ``t = l dt`` reproduce the discrete kernel exactly, ``K[l] = sum 2 Re(c e^{s t_l})``;
  from it ``natural_frequency`` ``w0 = |s|``, ``damping_ratio`` ``zeta = -Re s/|s|``,
  ``damped_frequency`` ``Im s`` (rad per unit time; time unit = the one dt is measured in) and
  ``decay_time`` ``-1/Re s``. For complex ``s`` the pair (s, conj s) is the first-order form of
  ``q'' + 2 zeta w0 q' + w0^2 q = input`` (notes 6.2), with ``|zeta| < 1``. A **real** ``s`` (a real
  positive ``lambda``, ``angle`` 0) is no oscillator but a single first-order relaxation ``e^{s t}``
  (its conjugate is itself): it is reported with ``zeta = 1`` (``-1`` if it grows) and ``w0 = |s|``, the
  relaxation rate, and marked ``relaxation`` (property, table column, ``summary()['n_relaxations']``).
  It is *not* the critically damped oscillator of that equation, whose Green's function
  ``t e^{-w0 t}`` needs a double eigenvalue. A layer whose modes carry no ``dt`` is
  analysed with ``dt = 1`` step and says so: ``time_unit == "step"`` (frequencies in rad per step,
  decay times in steps) instead of ``"time"``.
* ``eig_nominal``: the continuous eigenvalue of the layer's own ODE before discretization.

What frequency and damping mean depends on the discretization (notes 6.2):

* S4D **ZOH**: ``lambda = exp(dt A)``, so ``s = A`` exactly (up to aliasing of Im A by 2 pi/dt).
* S4D **bilinear** (and the other GBT rules): ``lambda = (1 + dt A/2)/(1 - dt A/2)``, so
  ``s != A``: the frequency is tan-warped (for Re A = 0: ``Im s = (2/dt) arctan(dt Im A / 2)``) and
  the damping changes. We report ``s`` (what the discrete kernel does) and ``A`` as ``eig_nominal``.
* **LinOSS**: the ODE ``y'' = -A y`` is undamped (``eig_nominal = i sqrt(A)``, zeta = 0); IM adds
  numerical damping ``|lambda| = (1 + dt^2 A)^{-1/2}``; IMEX keeps ``|lambda| = 1``.
  LinOSS is MIMO: its residues are ``c_{h,k,p} = Re(C_hp B_pk) c_p`` (H_out, H_in, P) where
  ``c_p`` is the residue of oscillator p's position Green's function (unit forcing).
  An oscillator with ``dt sqrt(A) < 1e-6`` (A ~ 0: a double eigenvalue, Jordan block) is not a sum
  of exponentials; it is kept as a ramp ``K[l] += ramp * (l + 1) r^l`` (:attr:`ramp`).
* **S5** (MIMO, first-order modes shared by all channels): each mode ``lambda_m`` is one oscillator
  (ZOH: ``s = Lambda_m``; bilinear: warped as S4D's), with the complex mixing residues
  ``c_{h,j,m} = C_hm B_mj / 2`` (H_out, H_in, M). A bidirectional S5's backward scan also reads the
  current input: that lag-0 matrix ``Re(C_b B_bar)`` is no oscillator and is kept as :attr:`lag0`.

Supported layers: any layer with a ``modes(rate)`` view (:class:`~statespaces.layers.modes.Modes`):
:class:`~statespaces.layers.s4d.S4D` (and any :class:`~statespaces.layers.base.DiagonalSSM`), S4
(its diagonalised DPLR form), :class:`~statespaces.layers.linoss.LinOSS`, D-LinOSS and
:class:`~statespaces.layers.s5.S5`. This module
reads nothing else of a layer (no type tests, no raw parameters). All numbers are float64/complex128, computed
from a float64 copy of a float32 layer.

**S4** (modes of structure ``dplr``: all N eigenvalues of the real N x N system per channel) lists each
conjugate pair ``(lambda, conj lambda)`` as one oscillator with the pair's residue ``c + conj c'``, and
each real eigenvalue as one oscillator, exactly as S4D with the same system would. Channels can then
have different numbers of oscillators; the (H, M) tensors are padded, and :attr:`OscillatorAnalysis.valid`
marks the oscillators (tables, counts and :meth:`~OscillatorAnalysis.to_oscillators` skip the padding,
which has residue 0 and repeats a real entry's eigenvalue, so the kernel and plots are unchanged).
S4's modes come from an eigendecomposition whose accuracy is measured (``Modes.kernel_error``, Lemma
6.6); the analysis keeps it (``extra['kernel_error']`` per channel, ``summary()['kernel_error']``,
a ``kernel_error`` column in :meth:`~OscillatorAnalysis.table`): above
:data:`~statespaces.layers.modes.MODES_TOL` the table is not a faithful picture of the layer
(``summary()['faithful']`` is False, and ``S4.modes`` has warned).

**Bidirectional layers** have two kernels over the same oscillators: the causal (``forward``)
one, acting on lags ``0..L-1`` with the skip ``D``, and the anti-causal (``backward``) one with its
own output vector (``C[1]``, LinOSS ``C_back``), acting on lags ``-1..-L``:
``y_t += sum_{s>t} K_back[s-t-1] u_s``. :func:`oscillators` takes ``direction="forward"`` or
``"backward"`` for such a layer; :func:`layer_analyses` returns both. A LinOSS with
``bidirectional="concat"`` runs an independent ``reverse`` layer on the reversed sequence (lags
``0..-(L-1)``, its own ``D``) and mixes the two outputs with a linear map: its backward analysis is
that of the reverse layer (``lag_offset = 0``), and the mixing map is not part of either kernel.

:func:`s4d_from_oscillators` maps a list of :class:`Oscillator` records back to an S4D layer with
the same kernel (round trip).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .._checks import all_finite, check_int, check_length, check_real, check_real_float, check_sequence
from ..layers.linoss import DEGENERATE_THETA
from ..layers.modes import MODES_TOL, Modes

if TYPE_CHECKING:
    from ..layers.s4d import S4D

Tensor = torch.Tensor

__all__ = ["Oscillator", "OscillatorAnalysis", "oscillators", "s4d_from_oscillators", "supported_layer", "green_kernel",
           "layer_analyses", "unsupported_reason", "DIRECTIONS"]

#: Directions of a bidirectional layer (``forward`` = causal).
DIRECTIONS = ("forward", "backward")


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
    r"""Oscillators of one layer (see the module docstring for the meaning of every field; seed 000 and
    seed 001, notes Parts 6.1-6.2).

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
        (see the module docstring); its ``damping_ratio`` is 1 (-1 if it grows)."""
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


# ---- extraction ---------------------------------------------------------------------------------------
def _canonical(log_eig: Tensor, residue: Tensor, nominal: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Use the representative with Im(lambda) >= 0: 2 Re(c lambda^l) = 2 Re(conj(c) conj(lambda)^l).

    The nominal eigenvalue is canonicalized on its own (Im >= 0): with ZOH aliasing (dt Im A > pi)
    the discrete representative and the nominal one can lie in opposite half-planes.
    """
    flip = torch.sin(log_eig.imag) < 0
    return (torch.where(flip, log_eig.conj(), log_eig), torch.where(flip, residue.conj(), residue),
            torch.where(nominal.imag < 0, nominal.conj(), nominal))


def supported_layer(module: nn.Module) -> bool:
    """Whether :func:`oscillators` can analyze ``module``: any module with a ``modes(rate)`` view
    (:class:`~statespaces.layers.modes.Modes`), causal or bidirectional."""
    return isinstance(module, nn.Module) and callable(getattr(module, "modes", None))


def unsupported_reason(module: nn.Module) -> Optional[str]:
    """Why :func:`oscillators` cannot analyze this SSM layer (None: it can, or it is no SSM layer)."""
    from ..layers.base import SSMLayer

    if supported_layer(module) or not isinstance(module, SSMLayer):
        return None
    return (f"{type(module).__name__} has no oscillator form here: it has no modes() view (layers with one: "
            "S4D and other DiagonalSSM layers, S4, LinOSS, D-LinOSS, S5)")


def _bidirectional_mode(layer: nn.Module) -> Optional[str]:
    """None (causal), "sum" (two kernels over the same oscillators) or "concat" (a reverse layer)."""
    if not getattr(layer, "bidirectional", False):
        return None
    mode = getattr(layer, "bidirectional_mode", None)
    return mode if mode in ("sum", "concat") else "sum"


#: ``kind`` of an analysis by the structure of the layer's modes.
_KINDS = {"diagonal": "s4d", "dplr": "s4", "oscillator": "linoss"}


@torch.no_grad()
def oscillators(layer: nn.Module, rate: float = 1.0, name: str = "",
                direction: Optional[str] = None) -> OscillatorAnalysis:
    r"""Oscillators, residues and closed-form kernel of a trained layer, read from its ``modes(rate)``.

    Args:
        layer: any layer with a ``modes(rate)`` view (:class:`~statespaces.layers.modes.Modes`):
            S4D (any init, any discretization) and other ``DiagonalSSM`` layers, S4 (diagonalised
            DPLR form), LinOSS, D-LinOSS and S5.
        rate: step-size multiplier, as in the layer's forward.
        name: label stored in the tables.
        direction: for a bidirectional layer, ``"forward"`` (causal kernel, with D) or ``"backward"``
            (anti-causal kernel, lags -1..-L; see the module docstring); a causal layer takes None
            or ``"forward"``.

    Raises:
        TypeError: a module without ``modes`` (or a non-module).
        ValueError: a bidirectional layer without ``direction``, or a direction a causal layer has not.

    Warns:
        ModesAccuracyWarning: (from ``S4.modes``) the layer's eigenbasis is too ill-conditioned for its
            modes to reproduce its kernel (Lemma 6.6). The analysis is still returned, as a report: its
            ``kernel_error`` (``extra``, ``summary()``, the table rows) says how far it can be trusted.
    """
    from ..layers.base import check_rate

    if not isinstance(layer, nn.Module):
        raise TypeError(f"oscillators() needs an SSM layer (nn.Module), got {type(layer).__name__}")
    if not supported_layer(layer):
        raise TypeError(f"oscillators(): unsupported layer type {type(layer).__name__}: it has no modes() view; "
                        "supported: S4D (DiagonalSSM), S4, LinOSS, D-LinOSS, S5")
    rate = check_rate(rate)
    mode = _bidirectional_mode(layer)
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction: got {direction!r}; valid: {', '.join(DIRECTIONS)}")
    if mode is None:
        if direction == "backward":
            raise ValueError("oscillators(): this layer is causal; it has no backward direction")
        k, tag = 0, "causal"
    else:
        if direction is None:
            raise ValueError("oscillators(): a bidirectional layer has two kernels; pass direction='forward' or "
                             "'backward' (layer_analyses returns both)")
        k, tag = DIRECTIONS.index(direction), direction
    if mode == "concat" and k == 1:          # the reverse half is a layer of its own (lags 0..-(L-1), own D)
        an = _own_kind(_analysis(_modes_of(layer.reverse, rate), name, 0), layer)
        an.direction, an.lag_offset = "backward", 0
        an.extra["concat"] = True
        return an
    an = _own_kind(_analysis(_modes_of(layer, rate), name, k), layer)
    an.direction, an.lag_offset = tag, (1 if k == 1 else 0)
    if mode == "concat":
        an.extra["concat"] = True
    return an


def _own_kind(an: "OscillatorAnalysis", layer: nn.Module) -> "OscillatorAnalysis":
    """``an`` with the layer's own kind where its modes' structure is shared (D-LinOSS has LinOSS's)."""
    from ..layers.dlinoss import DLinOSS

    if isinstance(layer, DLinOSS):
        an.kind = "dlinoss"
    return an


def layer_analyses(layer: nn.Module, rate: float = 1.0, name: str = "") -> List[OscillatorAnalysis]:
    """Every kernel of a layer: ``[causal]``, or ``[forward, backward]`` for a bidirectional layer
    (named ``<name>.forward`` / ``<name>.backward``)."""
    if _bidirectional_mode(layer) is None:
        return [oscillators(layer, rate, name)]
    return [oscillators(layer, rate, f"{name}.{d}" if name else d, direction=d) for d in DIRECTIONS]


def _float64(module: Any) -> Any:
    """``module`` itself if its parameters are float64, else a float64 copy (the table is then the parameters'
    exact system, not its float32 rounding: 4e-8 to 1e-7 relative before); a module that refuses the cast
    (:class:`~statespaces.layers.s4.DiagonalizedS4` built in float32) is read as it is."""
    tensors = list(module.parameters()) + list(module.buffers())
    if not any(t.dtype in (torch.float32, torch.float16, torch.bfloat16) for t in tensors):
        return module
    try:
        return copy.deepcopy(module).double()
    except TypeError:
        return module


def _modes_of(module: Any, rate: float) -> Modes:
    """``module.modes(rate)``: the layer's explicit-operator view (the only thing read of a layer), computed in
    float64 (:func:`_float64`)."""
    module = _float64(module)
    view = getattr(module, "modes", None)
    if not callable(view):
        raise TypeError(f"{type(module).__name__} has no modes() view")
    modes = view(rate)
    if not isinstance(modes, Modes):
        raise TypeError(f"{type(module).__name__}.modes() returned {type(modes).__name__}, not Modes")
    return modes


def _analysis(modes: Modes, name: str, k: int) -> OscillatorAnalysis:
    """Direction ``k`` of ``modes`` as an :class:`OscillatorAnalysis` (the skip D only on the causal one)."""
    if not modes.mimo:
        an = _siso_analysis(modes, name, k)
    elif modes.structure == "oscillator":
        an = _mimo_analysis(modes, name, k)
    else:
        an = _mimo_diagonal_analysis(modes, name, k)
    if k == 1:
        an.D = torch.zeros_like(an.D)
    elif modes.feedthrough is not None:
        an.lag0 = modes.feedthrough.to(torch.float64).clone()
    return an


def _siso_analysis(modes: Modes, name: str, k: int) -> OscillatorAnalysis:
    """Per-channel modes: ``K_h[l] = Re sum_m C B lambda^l = sum 2 Re(c lambda^l)`` with ``c = C B / 2``.

    Modes of structure ``dplr`` (S4: every eigenvalue of the real N x N system) are merged into one
    oscillator per conjugate pair (:func:`_merge_conjugate_pairs`), as S4D lists them. Their accuracy
    (``Modes.kernel_error``, Lemma 6.6) goes to ``extra['kernel_error']``, ``cond(V)`` to ``extra['cond_V']``.
    Modes without ``dt`` are read per step (``dt = 1``, ``time_unit = "step"``).
    """
    c128 = torch.complex128
    log_eig = modes.log_eig.to(c128)
    residue = modes.C[k].to(c128) * modes.input_weights().to(c128) / 2.0
    dt = torch.ones_like(log_eig.real) if modes.dt is None else modes.dt.to(torch.float64).clone()
    nominal = log_eig / dt if modes.A is None else modes.A.to(c128)
    valid = None
    if modes.structure == "dplr":
        log_eig, residue, nominal, dt, valid = _merge_conjugate_pairs(log_eig, residue, nominal, dt)
    log_eig, residue, nominal = _canonical(log_eig, residue, nominal)
    extra: Dict[str, Any] = {}
    if modes.cond is not None:
        extra["cond_V"] = modes.cond
    if modes.kernel_error is not None:
        extra["kernel_error"] = modes.kernel_error.to(torch.float64)
    return OscillatorAnalysis(
        kind=_KINDS.get(modes.structure, modes.structure), discretization=modes.discretization, log_eig=log_eig,
        dt=dt, residue=residue, D=modes.D.to(torch.float64).clone(), eig_nominal=nominal, name=name, extra=extra,
        valid=valid, time_unit="step" if modes.dt is None else "time",
    )


def _conjugate_records(log_eig: Tensor) -> List[Tuple[int, int]]:
    """The oscillators of one channel of a real system's modes, log_eig (N,): ``(i, j)`` for a conjugate
    pair (i the member with Im lambda > 0, j its conjugate), ``(i, -1)`` for a mode kept alone (a real
    eigenvalue, or one whose conjugate is not among the modes to rounding: listing it alone keeps the
    kernel exact). The eigensolver of a real matrix returns conjugate pairs exactly, so the match is tight."""
    lam = torch.exp(log_eig)
    side = torch.sin(log_eig.imag)
    upper = [int(i) for i in torch.nonzero(side > 0).flatten()]
    lower = [int(i) for i in torch.nonzero(side < 0).flatten()]
    partner: Dict[int, int] = {}
    if upper and lower:
        dist = (lam[upper].unsqueeze(1) - lam[lower].conj().unsqueeze(0)).abs()        # (n_upper, n_lower)
        tol = 64 * torch.finfo(torch.float64).eps * lam[upper].abs().clamp(min=1.0)
        for a in torch.argsort(dist.min(1).values).tolist():                           # closest pairs first
            b = int(dist[a].argmin())
            if float(dist[a, b]) <= float(tol[a]):                                   # each lower member once
                partner[upper[a]] = lower[b]
                dist[:, b] = math.inf
    paired = set(partner.values())
    return [(i, partner.get(i, -1)) for i in range(log_eig.shape[0]) if i not in paired]


def _merge_conjugate_pairs(log_eig: Tensor, residue: Tensor, nominal: Tensor,
                           dt: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""One oscillator per conjugate pair of a real system's modes (all (H, N)), as S4D lists them.

    ``2 Re(c lambda^l) + 2 Re(c' conj(lambda)^l) = 2 Re((c + conj c') lambda^l)``: the pair becomes the
    member with ``Im lambda > 0`` and the residue ``c + conj c'``; real eigenvalues stay single. The
    kernel is unchanged. Channels with fewer oscillators are padded to the largest count M with
    residue 0 at their first oscillator's eigenvalue. Returns ``(log_eig, residue, nominal, dt, valid)``
    (H, M), ``valid`` marking the oscillators.
    """
    records = [_conjugate_records(log_eig[h]) for h in range(log_eig.shape[0])]
    H, M = len(records), max(len(r) for r in records)
    idx = torch.zeros(H, M, dtype=torch.long)
    other = torch.full((H, M), -1, dtype=torch.long)
    valid = torch.zeros(H, M, dtype=torch.bool)
    for h, recs in enumerate(records):
        n = len(recs)
        idx[h, :n] = torch.tensor([i for i, _ in recs])
        other[h, :n] = torch.tensor([j for _, j in recs])
        idx[h, n:] = recs[0][0]
        valid[h, :n] = True
    pair = other >= 0
    merged = residue.gather(1, idx) + torch.where(pair, residue.gather(1, other.clamp(min=0)).conj(),
                                                  torch.zeros((), dtype=residue.dtype))
    merged = torch.where(valid, merged, torch.zeros((), dtype=residue.dtype))
    return log_eig.gather(1, idx), merged, nominal.gather(1, idx), dt.gather(1, idx), valid


def _mimo_analysis(modes: Modes, name: str, k: int) -> OscillatorAnalysis:
    """Oscillator modes (layout of ``LinOSS.modes``: ``lambda_p`` then their conjugates) as P oscillators.

    The pair (p, P + p) gives ``K[h, j, l] = W_hjp 2 Re(g_p lambda_p^l)`` (+ ramp) with the mixing
    ``W = Re(C_hp B_pj)`` and the Green's-function residue ``g_p``, so ``residue = W g``; the
    stiffness and damping of ``y'' = -A y - G y'`` come from the nominal pair ``s, s'``:
    ``A = s s'``, ``G = -(s + s')``.
    """
    c128 = torch.complex128
    P = modes.n_modes // 2
    dt = torch.ones(modes.n_modes, dtype=torch.float64) if modes.dt is None else modes.dt.to(torch.float64)
    log_eig = modes.log_eig[:P].to(c128)
    C, B = modes.C[k, :, :P].to(c128), modes.B[:P].to(c128)
    W = torch.einsum("hp,pj->hjp", C.real, B.real) - torch.einsum("hp,pj->hjp", C.imag, B.imag)
    gf = torch.ones(P, dtype=c128) if modes.residue is None else modes.residue[:P].to(c128)
    half_ramp = torch.zeros(P, dtype=torch.float64) if modes.ramp is None else modes.ramp[:P].real.to(torch.float64)
    s = torch.cat([log_eig, log_eig.conj()]) / dt if modes.A is None else modes.A.to(c128)
    A, G = (s[:P] * s[P:]).real, -(s[:P] + s[P:]).real
    extra: Dict[str, Any] = {"A": A, "mixing": W, "degenerate": torch.sin(log_eig.imag).abs() < DEGENERATE_THETA}
    if bool((G != 0).any()):
        extra["G"] = G
    return OscillatorAnalysis(
        kind=_KINDS.get(modes.structure, modes.structure), discretization=modes.discretization.upper(),
        log_eig=log_eig, dt=dt[:P].clone(), residue=W.to(c128) * gf,
        D=modes.D.to(torch.float64).clone(), eig_nominal=s[:P], name=name, ramp=W * (2 * half_ramp),
        gf_residue=gf, extra=extra, time_unit="step" if modes.dt is None else "time",
    )


def _mimo_diagonal_analysis(modes: Modes, name: str, k: int) -> OscillatorAnalysis:
    r"""Shared first-order modes (S5: ``log_eig`` (M,), ``B`` (M, H_in), ``C`` (K, H_out, M)) as M oscillators.

    ``K[h, j, l] = Re sum_m C_hm B_mj lambda_m^l = sum_m 2 Re(c_hjm lambda_m^l)`` with ``c = C B / 2``, a
    complex mixing matrix per mode. Each mode is its own damped oscillator ``s = log(lambda)/dt`` (its conjugate
    is implied by the real output), with unit response (``gf_residue`` 1/2: amplitude 1, phase 0); the table's
    ``gain`` is the Frobenius norm of ``C_:m B_m:``.
    """
    c128 = torch.complex128
    log_eig = modes.log_eig.to(c128)
    W = torch.einsum("hm,mj->hjm", modes.C[k].to(c128), modes.input_weights().to(c128))      # (H_out, H_in, M)
    residue = W / 2.0
    dt = torch.ones(modes.n_modes, dtype=torch.float64) if modes.dt is None else modes.dt.to(torch.float64).clone()
    nominal = log_eig / dt if modes.A is None else modes.A.to(c128)
    log_eig, residue, nominal = _canonical(log_eig, residue, nominal)
    return OscillatorAnalysis(
        kind="s5", discretization=modes.discretization, log_eig=log_eig, dt=dt, residue=residue,
        D=modes.D.to(torch.float64).clone(), eig_nominal=nominal, name=name,
        gf_residue=torch.full((modes.n_modes,), 0.5, dtype=c128), extra={"mixing": W},
        time_unit="step" if modes.dt is None else "time",
    )


# ---- the inverse map ----------------------------------------------------------------------------------
def s4d_from_oscillators(
    oscillators: Sequence[Oscillator],
    d_model: Optional[int] = None,
    discretization: str = "zoh",
    alpha: Optional[float] = None,
    D: Optional[Tensor] = None,
    real_transform: str = "exp",
    dtype: Optional[torch.dtype] = None,
) -> "S4D":
    r"""Build an S4D layer whose kernel is ``K_h[l] = sum 2 Re(c lambda^l)`` over the given oscillators
    (thesis eq. 3.2, §3.4.5; the rules of eq. 2.4 / app. A.1.4 inverted; seed 000, notes Part 6.2).

    Each :class:`Oscillator` (channel h, natural frequency w0 > 0, damping ratio zeta in (0, 1] (1: a
    first-order relaxation), amplitude, phase, dt) fixes the discrete eigenvalue ``lambda = exp(s dt)`` with
    ``s = w0 (-zeta + i sqrt(1 - zeta^2))`` (the *effective* continuous eigenvalue, as reported by
    :func:`oscillators`), and the residue ``c = amplitude/2 e^{i phase}``. The S4D parameters are
    then ``A = x/dt`` with ``x`` the inverse of the discretization rule at lambda (ZOH: ``log lambda``;
    GBT(alpha): ``(lambda - 1)/(1 - alpha + alpha lambda)``), ``B = 1``, ``C = c/dB``
    (:meth:`S4D.from_modes <statespaces.layers.s4d.S4D.from_modes>`).

    Args:
        oscillators: records; all records of a channel must share ``dt``. Channels may have different
            numbers of oscillators (padded with zero-amplitude modes).
        d_model: H (default: 1 + largest channel index).
        discretization: discretization rule of the new S4D layer.
        alpha: GBT parameter of the new S4D layer (with ``discretization='gbt'``).
        real_transform: how the new S4D layer keeps Re(A) < 0 (its ``real_transform``).
        D: skip (H,), a finite real floating tensor; zeros if None.
        dtype: parameter dtype of the new layer (default: torch's default dtype).

    Returns:
        (statespaces.layers.s4d.S4D): an :class:`~statespaces.layers.s4d.S4D` with conjugate-pair modes,
            ``d_state = 2 * max oscillators per channel``.

    Raises:
        TypeError: records that are no :class:`Oscillator`, a non-integer ``d_model``, a ``D`` that is no
            real floating tensor.
        ValueError: undamped (zeta <= 0) or zero-frequency oscillators, ``frequency * dt`` out of float64's
            range, a channel >= ``d_model``, mixed dt within a channel, a ``D`` of the wrong shape or with
            NaN/inf, or an eigenvalue the chosen rule cannot produce with Re(A) < 0.
    """
    from ..layers.s4d import S4D

    if len(oscillators) == 0:
        raise ValueError("s4d_from_oscillators needs at least one oscillator")
    for o in oscillators:
        if not isinstance(o, Oscillator):
            raise TypeError(f"expected Oscillator records, got {type(o).__name__}")
        # (the record has checked its fields); S4D modes decay: an undamped oscillator has Re A = 0
        if not (o.frequency > 0 and o.damping > 0 and math.isfinite(o.frequency * o.dt)
                and o.damping * o.frequency * o.dt > 0):
            raise ValueError(
                f"invalid oscillator {o}: need frequency > 0 and 0 < damping <= 1 (S4D modes decay: an undamped "
                "oscillator has Re A = 0), with frequency * dt and damping * frequency * dt in float64's range"
            )
    H = 1 + max(o.channel for o in oscillators) if d_model is None else check_int("d_model", d_model)
    per: List[List[Oscillator]] = [[] for _ in range(H)]
    for o in oscillators:
        if o.channel >= H:
            raise ValueError(f"oscillator channel {o.channel} does not exist in a layer with d_model={H} (channels "
                             f"0..{H - 1}); pass d_model >= {o.channel + 1} or leave it None")
        per[o.channel].append(o)
    if D is not None:
        check_real_float("D", D)
        if tuple(D.shape) != (H,):
            raise ValueError(f"D must have shape (d_model,) = ({H},), got {tuple(D.shape)}")
        if not all_finite(D.detach()):
            raise ValueError(f"D contains {int((~torch.isfinite(D)).sum())} non-finite value(s) (NaN or inf)")
    Mmax = max(len(p) for p in per)
    log_lam = torch.full((H, Mmax), -1.0, dtype=torch.complex128)     # padding: lambda = e^{-dt}, c = 0
    res = torch.zeros(H, Mmax, dtype=torch.complex128)
    dts = torch.ones(H, dtype=torch.float64)
    for h, os_ in enumerate(per):
        if os_:
            if any(abs(o.dt - os_[0].dt) > 1e-12 * os_[0].dt for o in os_):
                raise ValueError(f"channel {h}: all oscillators of one channel must share dt")
            dts[h] = os_[0].dt
        for m, o in enumerate(os_):
            # torch's stubs leave complex scalars out of Tensor.__setitem__ (they work at runtime)
            log_lam[h, m] = o.continuous_eigenvalue() * o.dt  # type: ignore[assignment]
            res[h, m] = complex(o.amplitude / 2 * math.cos(o.phase),  # type: ignore[assignment]
                                o.amplitude / 2 * math.sin(o.phase))
    for h, os_ in enumerate(per):
        log_lam[h, len(os_):] = -dts[h]
    # the records as per-channel modes (K_h[l] = Re sum 2 c lambda^l), built by S4D.from_modes
    modes = Modes(
        log_eig=log_lam, B=torch.ones_like(res), C=(2 * res).unsqueeze(0),
        D=(torch.zeros(H, dtype=torch.float64) if D is None else D.detach().to(torch.float64).clone()),
        dt=dts.unsqueeze(-1).expand(H, Mmax).clone(), discretization="zoh", structure="diagonal",
    )
    return S4D.from_modes(modes, discretization=discretization, alpha=alpha, real_transform=real_transform,
                          dtype=dtype)
