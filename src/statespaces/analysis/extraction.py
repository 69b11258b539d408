r"""Reading a layer into oscillator analyses: ``layer.modes(rate)`` -> :class:`~statespaces.analysis.records.
OscillatorAnalysis` (thesis §3.4.5; seed 000, seed 001, notes Parts 6.1-6.2).

:func:`oscillators` reads one kernel of a layer (one direction of a bidirectional one), :func:`layer_analyses` all
of them; :func:`supported_layer` and :func:`unsupported_reason` say which layers can be read. Per-channel (SISO)
modes give residues (H, M), S4's ``dplr`` modes merged into one oscillator per conjugate pair (Lemma 6.6 measures
their accuracy); shared oscillator modes (LinOSS, D-LinOSS) and shared first-order modes (S5) give MIMO residues
(H_out, H_in, P). The layer is read through its ``modes`` view only, in float64. The meaning of every number is
told in :mod:`statespaces.analysis.oscillators`.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..layers.linoss import DEGENERATE_THETA
from ..layers.modes import Modes
from .records import OscillatorAnalysis

Tensor = torch.Tensor

__all__ = ["oscillators", "layer_analyses", "supported_layer", "unsupported_reason", "DIRECTIONS"]

#: Directions of a bidirectional layer (``forward`` = causal).
DIRECTIONS = ("forward", "backward")


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
            (anti-causal kernel, lags -1..-L; see :mod:`statespaces.analysis.oscillators`); a causal layer takes
            None or ``"forward"``.

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
    (:class:`~statespaces.layers.diagonalized_s4.DiagonalizedS4` built in float32) is read as it is."""
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
