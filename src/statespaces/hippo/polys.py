"""Orthogonal polynomials used by the HiPPO measures (float64 torch).

All evaluators take a 1-D (or any-shape) tensor ``y`` and return a tensor of
shape ``(N, *y.shape)`` whose row ``n`` is the degree-``n`` polynomial.

* :func:`legendre_01` -- orthonormal shifted Legendre ``L_n(y) = sqrt(2n+1) P_n(2y-1)``
  on ``[0, 1]`` with the uniform measure (thesis Def. 5.5 / eq. E.18, App. A.2.1).
* :func:`laguerre` -- generalized Laguerre ``L_n^(alpha)(y)`` (classical
  normalization, ``int_0^inf L_n L_m y^alpha e^-y dy = Gamma(n+alpha+1)/n! delta_nm``).
* :func:`jacobi_01` -- orthonormal Jacobi polynomials on ``[0, 1]`` for the
  probability weight ``w(y) ~ (1-y)^alpha y^beta`` (and their derivatives), built
  from the three-term recurrence; ``alpha = beta = 0`` gives :func:`legendre_01`,
  ``alpha = beta = -1/2`` the Chebyshev (first kind) polynomials.
* :func:`jacobi_01_quadrature` -- Gauss nodes/weights for that weight (Golub-Welsch).
"""

from __future__ import annotations

import math
from typing import Literal, Tuple, Union, overload

import torch

__all__ = [
    "legendre_01",
    "laguerre",
    "jacobi_01",
    "jacobi_01_weight",
    "jacobi_01_quadrature",
    "jacobi_recurrence_01",
]

_F64 = torch.float64


def _as_f64(y) -> torch.Tensor:
    return torch.as_tensor(y, dtype=_F64)


def legendre_01(N: int, y) -> torch.Tensor:
    """Orthonormal shifted Legendre polynomials ``L_n(y) = sqrt(2n+1) P_n(2y - 1)``.

    Returns shape ``(N, *y.shape)``. ``int_0^1 L_n L_m dy = delta_nm``;
    ``L_n(1) = sqrt(2n+1)``, ``L_n(0) = (-1)^n sqrt(2n+1)`` (thesis eq. E.17).
    """
    x = 2.0 * _as_f64(y) - 1.0
    out = torch.empty((N,) + tuple(x.shape), dtype=_F64)
    p_prev = torch.ones_like(x)
    out[0] = p_prev
    if N > 1:
        p = x.clone()
        out[1] = p
        for n in range(1, N - 1):
            p_next = ((2 * n + 1) * x * p - n * p_prev) / (n + 1)
            p_prev, p = p, p_next
            out[n + 1] = p
    scale = torch.sqrt(2.0 * torch.arange(N, dtype=_F64) + 1.0)
    return out * scale.reshape((N,) + (1,) * x.dim())


def laguerre(N: int, y, alpha: float = 0.0) -> torch.Tensor:
    """Generalized Laguerre polynomials ``L_n^(alpha)(y)``, shape ``(N, *y.shape)``.

    Classical normalization: ``L_n^(alpha)(0) = binom(n + alpha, n)``.

    A classical OP family (thesis App. A.2); the basis of LagT, which the thesis only names (Remark D.1).
    """
    x = _as_f64(y)
    out = torch.empty((N,) + tuple(x.shape), dtype=_F64)
    p_prev = torch.ones_like(x)
    out[0] = p_prev
    if N > 1:
        p = 1.0 + alpha - x
        out[1] = p
        for n in range(1, N - 1):
            p_next = ((2 * n + 1 + alpha - x) * p - (n + alpha) * p_prev) / (n + 1)
            p_prev, p = p, p_next
            out[n + 1] = p
    return out


def jacobi_recurrence_01(N: int, alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Recurrence coefficients ``(a, b)`` (each shape ``(N,)``) of the monic orthogonal
    polynomials on ``[0, 1]`` for the probability weight ``~ (1-y)^alpha y^beta``:
    ``q_{n+1}(y) = (y - a_n) q_n(y) - b_n q_{n-1}(y)`` with ``b_0 = 1`` (total mass).

    Obtained from the classical Jacobi coefficients on ``[-1, 1]`` (weight
    ``(1-x)^alpha (1+x)^beta``) by the map ``y = (x + 1)/2``. The ``n = 1`` term of
    ``b`` uses the simplified form that stays finite when ``alpha + beta = -1``
    (Chebyshev).

    Textbook coefficients (not in the thesis), for the general-OP O-SSMs of thesis §5.5.2, Cor. E.6.
    """
    a_, b_ = float(alpha), float(beta)
    s = a_ + b_
    a = torch.empty(N, dtype=_F64)
    b = torch.empty(N, dtype=_F64)
    for n in range(N):
        if n == 0:
            an = (b_ - a_) / (s + 2.0)
        else:
            den = (2 * n + s) * (2 * n + s + 2.0)
            an = (b_ * b_ - a_ * a_) / den if den != 0 else 0.0
        a[n] = (an + 1.0) / 2.0
        if n == 0:
            bn = 1.0  # mass of the probability weight
        elif n == 1:
            bn = 4.0 * (1 + a_) * (1 + b_) / ((2 + s) ** 2 * (3 + s)) / 4.0
        else:
            bn = (
                4.0 * n * (n + a_) * (n + b_) * (n + s)
                / ((2 * n + s) ** 2 * (2 * n + s + 1) * (2 * n + s - 1))
            ) / 4.0
        b[n] = bn
    return a, b


def jacobi_01_weight(y, alpha: float, beta: float) -> torch.Tensor:
    """Probability density ``w(y) = (1-y)^alpha y^beta / B(alpha+1, beta+1)`` on ``[0, 1]``, shape of ``y``:
    the OP weight ``omega`` of the general-OP O-SSMs (thesis §5.5.2, Cor. E.6-E.8).

    At the ends the density takes its limit: at ``y = 1`` it is 0 for ``alpha > 0``, ``1 / B`` for ``alpha = 0``
    and ``inf`` for ``alpha < 0`` (likewise at ``y = 0`` by ``beta``); 0 outside ``[0, 1]``. ``y = 1`` is lag 0 of
    the measures that use it (``y = e^{-t}``), so ``alpha = beta = 0`` gives the uniform density of LegS there too."""
    y = _as_f64(y)
    log_beta_fn = math.lgamma(alpha + 1) + math.lgamma(beta + 1) - math.lgamma(alpha + beta + 2)
    inside = (y > 0) & (y < 1)
    yc = y.clamp(1e-300, 1 - 1e-16)
    w = torch.exp(alpha * torch.log1p(-yc) + beta * torch.log(yc) - log_beta_fn)
    w = torch.where(inside, w, torch.zeros_like(w))

    def end_value(exponent: float) -> float:        # the limit of (1-y)^alpha / B at y = 1 (of y^beta / B at 0)
        return 0.0 if exponent > 0 else (math.exp(-log_beta_fn) if exponent == 0 else math.inf)

    w = torch.where(y == 1, torch.full_like(w, end_value(alpha)), w)
    return torch.where(y == 0, torch.full_like(w, end_value(beta)), w)


@overload
def jacobi_01(N: int, y, alpha: float, beta: float, derivative: Literal[False] = ...) -> torch.Tensor: ...
@overload
def jacobi_01(N: int, y, alpha: float, beta: float, derivative: Literal[True]) -> Tuple[torch.Tensor, torch.Tensor]: ...


def jacobi_01(N: int, y, alpha: float, beta: float, derivative: bool = False) -> Union[torch.Tensor,
              Tuple[torch.Tensor, torch.Tensor]]:
    """Orthonormal Jacobi polynomials ``p_n`` on ``[0, 1]`` for the probability weight
    :func:`jacobi_01_weight` (``int_0^1 p_n p_m w dy = delta_nm``, ``p_0 = 1``).

    Returns ``P`` of shape ``(N, *y.shape)``, or ``(P, dP)`` with the derivatives
    ``p_n'(y)`` when ``derivative=True``.

    The OP basis ``p_n`` (and the ``p_n'`` of eq. E.14) of the general-OP O-SSMs (thesis §5.5.2, Cor. E.6-E.8).
    """
    y = _as_f64(y)
    a, b = jacobi_recurrence_01(N + 1, alpha, beta)
    sb = torch.sqrt(b)
    P = torch.empty((N,) + tuple(y.shape), dtype=_F64)
    dP = torch.empty_like(P)
    p_prev = torch.zeros_like(y)
    dp_prev = torch.zeros_like(y)
    p = torch.ones_like(y)
    dp = torch.zeros_like(y)
    for n in range(N):
        P[n] = p
        dP[n] = dp
        if n + 1 < N:
            # orthonormal recurrence: sqrt(b_{n+1}) p_{n+1} = (y - a_n) p_n - sqrt(b_n) p_{n-1}
            c_prev = sb[n] if n > 0 else 0.0
            p_next = ((y - a[n]) * p - c_prev * p_prev) / sb[n + 1]
            dp_next = ((y - a[n]) * dp + p - c_prev * dp_prev) / sb[n + 1]
            p_prev, p = p, p_next
            dp_prev, dp = dp, dp_next
    return (P, dP) if derivative else P


def jacobi_01_quadrature(M: int, alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``M``-point Gauss quadrature ``(nodes, weights)`` for the probability weight
    ``~ (1-y)^alpha y^beta`` on ``[0, 1]`` (Golub-Welsch: eigen-decomposition of the
    symmetric Jacobi matrix). Exact for polynomials of degree ``<= 2M - 1``. Nodes and weights (M,).

    Used to project ``y p_n'(y)`` on the ``p_k`` (thesis eq. E.14, Cor. E.8).
    """
    a, b = jacobi_recurrence_01(M, alpha, beta)
    J = torch.diag(a) + torch.diag(torch.sqrt(b[1:]), 1) + torch.diag(torch.sqrt(b[1:]), -1)
    nodes, vecs = torch.linalg.eigh(J)
    weights = vecs[0] ** 2  # total mass b_0 = 1
    return nodes, weights
