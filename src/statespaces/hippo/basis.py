"""Closed-form basis functions and measures of the HiPPO TO-SSMs (thesis §5.1.2, Table 5.1).

For a time-invariant orthogonal SSM (Def. 5.1, eq. 5.4) the state is
``x_n(t) = int_0^inf K_n(tau) u(t - tau) dtau`` with the *kernel* (SSM basis,
Def. 2.18) ``K_n(tau) = [e^{tau A} B]_n``, and the signal is recovered as
``u(t - tau) ~ sum_n x_n(t) q_n(tau)`` (Prop. 5.3) with the *reconstruction*
basis ``q_n``. They are bi-orthogonal, ``int K_n q_m dtau = delta_nm``, and for
an untilted O-SSM ``K_n = q_n * omega`` with ``omega`` the measure
(``int q_n q_m omega = delta_nm``).

``tau`` is the lag (time before "now"), ``y = tau / theta``. All functions are
zero for ``tau < 0``.

=========  ====================================  ==========================  ======================
measure    kernel ``K_n(tau) * theta``           reconstruction ``q_n``       measure ``omega*theta``
=========  ====================================  ==========================  ======================
legs       ``L_n(e^-y) e^-y``  (exact, Cor 5.10)  ``L_n(e^-y)``                ``e^-y``
legt       ``L_n(1-y) 1[0,1](y)``  (N -> inf)     ``L_n(1-y) 1[0,1]``          ``1[0,1]``
lmu        ``lambda_n L_n(1-y) 1[0,1]``           ``L_n(1-y) / lambda_n``      ``1[0,1]``
lagt       ``L_n^a(y) e^-y``  (exact)             ``y^a L_n^a(y) / h_n``       ``y^-a e^-y`` (a=0: e^-y)
fout       ``p_n(1-y) 1[0,1]``  (N -> inf)        ``p_n(1-y) 1[0,1]``          ``1[0,1]``
jacobi     ``p_n(e^-y) e^-y``  (exact, Cor E.8)   ``w(e^-y) p_n(e^-y)``        ``e^-y / w(e^-y)``
=========  ====================================  ==========================  ======================

``L_n`` = orthonormal shifted Legendre, ``lambda_n = sqrt(2n+1)(-1)^n``,
``h_n = Gamma(n+a+1)/n!``, FouT ``p = (1, sqrt2 cos 2 pi y, sqrt2 sin 2 pi y, ...)``,
jacobi ``p_n`` orthonormal for the probability weight ``w`` on [0,1]
(chebyshev: ``a = b = -1/2``); for even ``N`` the last FouT function is the zero dummy slot
(:func:`statespaces.hippo.measures.fourier_active`). "exact" means ``e^{tA}B`` equals the formula for every
finite ``N``; the windowed measures are only reached as ``N -> inf``.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_finite_tensor, check_measure, check_positive, check_state_size
from .measures import MEASURES, fourier_frequencies, measure_params
from .polys import jacobi_01, jacobi_01_weight, laguerre, legendre_01

__all__ = ["basis", "weight", "BASIS_KINDS"]

BASIS_KINDS = ("kernel", "reconstruction")
_F64 = torch.float64


def _fourier(N: int, y: torch.Tensor) -> torch.Tensor:
    m = fourier_frequencies(N).to(_F64).reshape((N,) + (1,) * y.dim())
    idx = torch.arange(N).reshape((N,) + (1,) * y.dim())
    ang = 2.0 * math.pi * m * y
    out = torch.where(idx % 2 == 1, math.sqrt(2.0) * torch.cos(ang), math.sqrt(2.0) * torch.sin(ang))
    out[0] = 1.0
    if N % 2 == 0:  # the decoupled dummy slot of even N (measures.fourier_active)
        out[-1] = 0.0
    return out


def _jab(name: str, p: dict) -> tuple[float, float]:
    return (-0.5, -0.5) if name == "chebyshev" else (p["alpha"], p["beta"])


def basis(measure: str, N: int, t, theta: float = 1.0, kind: str = "kernel", **params) -> torch.Tensor:
    """Evaluate the ``N`` basis functions of ``measure`` at lags ``t`` (thesis Def. 2.18, Prop. 5.3, Table 5.1).

    Args:
        measure: one of :data:`MEASURES`.
        N: number of basis functions.
        t (torch.Tensor | float | array-like): lags ``tau`` (any shape, converted to float64).
        theta: timescale / window, as in :func:`transition`.
        kind: ``"kernel"`` for ``K_n = e^{tau A} B`` (the SSM basis), or
            ``"reconstruction"`` for ``q_n`` with ``u(t - tau) ~ sum_n x_n q_n(tau)``.
        **params (float): measure parameters (``alpha`` for lagt, ``alpha, beta`` for jacobi).

    Returns:
        float64 tensor of shape ``(N, *t.shape)``.
    """
    name = check_measure(measure, MEASURES)
    N = check_state_size(N)
    theta = check_positive(theta, "theta")
    kind = check_measure(kind, BASIS_KINDS, what="kind")
    p = measure_params(name, params)
    try:
        t64 = torch.as_tensor(t, dtype=_F64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"t must be a tensor, a number or an array-like of numbers (the lags), got "
                        f"{type(t).__name__} {str(t)[:40]!r}") from None
    tau = check_finite_tensor(t64, "t")
    y = tau / theta
    causal = (y >= 0).to(_F64)
    window = ((y >= 0) & (y <= 1)).to(_F64)
    yc = y.clamp(min=0.0)
    if name == "legs":
        s = torch.exp(-yc)
        L = legendre_01(N, s)
        out = L * (s / theta) if kind == "kernel" else L
        return out * causal
    if name in ("legt", "lmu", "fout"):
        s = (1.0 - yc).clamp(0.0, 1.0)
        P = _fourier(N, s) if name == "fout" else legendre_01(N, s)
        if name == "lmu":
            lam = torch.sqrt(2.0 * torch.arange(N, dtype=_F64) + 1.0) * (-1.0) ** torch.arange(N, dtype=_F64)
            lam = lam.reshape((N,) + (1,) * y.dim())
            P = P * lam if kind == "kernel" else P / lam
        return P * (window / theta) if kind == "kernel" else P * window
    if name == "lagt":
        a = p["alpha"]
        Lg = laguerre(N, yc, a)
        if kind == "kernel":
            return Lg * (torch.exp(-yc) / theta) * causal
        n = torch.arange(N, dtype=_F64)
        h = torch.exp(torch.lgamma(n + a + 1.0) - torch.lgamma(n + 1.0)).reshape((N,) + (1,) * y.dim())
        return Lg * yc**a / h * causal
    # jacobi / chebyshev (Cor. E.8, eta = 0)
    a, b = _jab(name, p)
    s = torch.exp(-yc)
    P = jacobi_01(N, s, a, b)
    if kind == "kernel":
        return P * (s / theta) * causal
    return P * jacobi_01_weight(s, a, b) * causal


def weight(measure: str, t, theta: float = 1.0, **params) -> torch.Tensor:
    """The measure (density) ``omega(tau)`` of ``measure`` at lags ``t`` (shape of ``t``).

    For the tilted cases (lagt with ``alpha != 0``, jacobi/chebyshev) this is the
    tilted measure ``nu`` of App. D.1 under which the reconstruction basis is
    orthogonal. See the table in the module docstring.
    """
    name = check_measure(measure, MEASURES)
    theta = check_positive(theta, "theta")
    p = measure_params(name, params)
    y = check_finite_tensor(torch.as_tensor(t, dtype=_F64), "t") / theta
    causal = (y >= 0).to(_F64)
    yc = y.clamp(min=0.0)
    if name == "legs":
        return torch.exp(-yc) / theta * causal
    if name in ("legt", "lmu", "fout"):
        return ((y >= 0) & (y <= 1)).to(_F64) / theta
    if name == "lagt":
        a = p["alpha"]
        return yc.clamp(min=1e-300) ** (-a) * torch.exp(-yc) / theta * causal
    a, b = _jab(name, p)
    s = torch.exp(-yc)
    return s / jacobi_01_weight(s, a, b) / theta * causal
