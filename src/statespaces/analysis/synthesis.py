r"""The inverse map of the explicit operator: :class:`~statespaces.analysis.records.Oscillator` records -> an S4D
layer with their kernel ``K_h[l] = sum 2 Re(c lambda^l)`` (thesis eq. 3.2, §3.4.5; the discretization rules of eq.
2.4 / app. A.1.4 inverted; seed 000, notes Part 6.2). Round trip with :func:`statespaces.analysis.extraction.
oscillators`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, List, Optional, Sequence

import torch

from .._checks import all_finite, check_int, check_real_float
from ..layers.modes import Modes
from .records import Oscillator

if TYPE_CHECKING:
    from ..layers.s4d import S4D

Tensor = torch.Tensor

__all__ = ["s4d_from_oscillators"]


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
