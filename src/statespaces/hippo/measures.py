"""HiPPO transition matrices ``(A, B)`` for each measure (thesis ch. 4-5, app. D-E).

Sign convention
---------------
Everything here uses the **SSM convention of thesis ch. 2/5 and S4**:
``x'(t) = A x(t) + B u(t)``, so ``A`` has a *negative* diagonal. Chapter 4 (and
App. D) writes ``c' = -A c + B f`` with a positive-diagonal ``A``; the matrices
returned here are minus those (Remark 4.1).

All LTI systems accept a timescale ``theta > 0`` and return ``(A/theta, B/theta)``
(scalar-scaling closure, §5.4): for the windowed measures (``legt``, ``lmu``,
``fout``) ``theta`` is the window length; for the others it stretches the
exponential warp. ``theta = 2`` for LegT/FouT gives the *timescale-normalized*
variant of §5.4 (E[omega] = 1).

For ``legs`` the same ``(A, B)`` is used either time-invariantly (TO-SSM with
kernel ``L_n(e^-t) e^-t``, Cor. 5.10) or scale-invariantly as ``(A/t, B/t)``
(Thm 4.3 / 5.7); the latter lives in :mod:`statespaces.hippo.online`.

Measures (``MEASURES``)
-----------------------
``legs``       eq. (5.1).
``legt``       eq. (5.2) (App. D.2.1 sign, see notes: eq. 4.1 has a double minus).
``lmu``        LegT with the LMU scaling ``lambda_n = sqrt(2n+1) (-1)^n`` (§4.2.3).
``lagt``       Laguerre. **The thesis gives no formula** (only the name, §4.4);
               this follows the original HiPPO paper (Gu et al. 2020) and is
               re-derived here: ``A = -tril(ones)``, ``B_n = binom(n+alpha, n)``,
               kernel ``e^{tA}B = L_n^(alpha)(t) e^-t`` exactly (checked in tests).
``fout``       Fourier, *built from frequencies* (App. E.4.2 / F.2.2): basis
               ``(1, c_1, s_1, c_2, s_2, ...)``, ``c_m = sqrt2 cos 2 pi m y``,
               ``s_m = sqrt2 sin 2 pi m y``; the printed index formula of eq. (5.3)
               (``2 pi k`` / ``-2 pi n``) conflates index and frequency and is NOT used.
               For even ``N`` the last slot is a decoupled dummy (:func:`fourier_active`).
``jacobi``     generalized-OP family of Cor. E.6/E.8 for the Jacobi weight
               ``(1-y)^alpha y^beta`` on [0,1]: ``A = -(alpha_nk + I)`` with
               ``y p_n'(y) = sum_k alpha_nk p_k(y)`` (eq. E.14, computed by Gauss
               quadrature), ``B_n = p_n(1)``. ``alpha = beta = 0`` reproduces ``legs``.
``chebyshev``  ``jacobi`` with ``alpha = beta = -1/2``.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_measure, check_positive, check_real, check_state_size
from .polys import jacobi_01, jacobi_01_quadrature

__all__ = ["MEASURES", "transition", "fourier_active", "fourier_frequencies"]

MEASURES: tuple[str, ...] = ("legs", "legt", "lmu", "lagt", "fout", "jacobi", "chebyshev")

# extra keyword parameters (besides theta) accepted by each measure, with defaults
_PARAMS = {
    "legs": {},
    "legt": {},
    "lmu": {},
    "lagt": {"alpha": 0.0},
    "fout": {},
    "jacobi": {"alpha": 0.0, "beta": 0.0},
    "chebyshev": {},
}

_F64 = torch.float64


def measure_params(measure: str, params: dict) -> dict:
    """Validate the extra keyword parameters of ``measure`` and fill in defaults: each a finite real number
    (Python/NumPy scalar or 0-d real tensor, returned as float; bools, complex, NaN and inf refused)."""
    allowed = _PARAMS[measure]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        opts = ", ".join(["theta", *allowed]) or "theta"
        raise TypeError(
            f"measure {measure!r} got unexpected parameter(s) {unknown}; accepted: {opts}"
        )
    out = dict(allowed)
    out.update(params)
    for key, val in out.items():
        out[key] = check_real(val, f"parameter {key} of measure {measure!r}")
    if measure == "lagt" and out["alpha"] <= -1.0:
        raise ValueError(f"lagt needs alpha > -1 (Laguerre weight y^alpha e^-y), got {out['alpha']}")
    if measure == "jacobi" and (out["alpha"] <= -1.0 or out["beta"] <= -1.0):
        raise ValueError(
            f"jacobi needs alpha > -1 and beta > -1, got alpha={out['alpha']}, beta={out['beta']}"
        )
    return out


def _legs(N: int):
    q = torch.sqrt(2.0 * torch.arange(N, dtype=_F64) + 1.0)
    n = torch.arange(N)
    A = torch.outer(q, q) * (n[:, None] > n[None, :])
    A = A + torch.diag(torch.arange(N, dtype=_F64) + 1.0)
    return -A, q.clone()


def _legt(N: int):
    q = torch.sqrt(2.0 * torch.arange(N, dtype=_F64) + 1.0)
    n = torch.arange(N)
    diff = n[:, None] - n[None, :]
    sign = torch.where(diff >= 0, torch.ones((), dtype=_F64), (-1.0) ** diff.abs().to(_F64))
    A = -torch.outer(q, q) * sign
    return A, q.clone()


def _lmu(N: int):
    A, B = _legt(N)
    lam = torch.sqrt(2.0 * torch.arange(N, dtype=_F64) + 1.0) * (-1.0) ** torch.arange(N, dtype=_F64)
    # coefficients c_lmu = Lambda c_legt  =>  A -> Lambda A Lambda^-1, B -> Lambda B
    return lam[:, None] * A / lam[None, :], lam * B


def _lagt(N: int, alpha: float):
    A = -torch.tril(torch.ones(N, N, dtype=_F64))
    n = torch.arange(N, dtype=_F64)
    # binom(n + alpha, n) = Gamma(n + alpha + 1) / (Gamma(n + 1) Gamma(alpha + 1))
    logb = torch.lgamma(n + alpha + 1.0) - torch.lgamma(n + 1.0) - math.lgamma(alpha + 1.0)
    return A, torch.exp(logb)


def fourier_frequencies(N: int) -> torch.Tensor:
    """Frequency ``m`` (in cycles per window) of each FouT basis index: ``(0, 1, 1, 2, 2, ...)``.

    For even ``N`` the last index is the decoupled dummy slot (see :func:`fourier_active`); its
    entry is ``0``.
    """
    m = torch.div(torch.arange(N) + 1, 2, rounding_mode="floor")
    return m * fourier_active(N)


def fourier_active(N: int) -> torch.Tensor:
    """Boolean mask of the FouT slots that carry a basis function.

    The Fourier basis ``(1, c_1, s_1, ..., c_M, s_M)`` has odd size ``2M + 1``: a cosine is only
    closed under differentiation together with its sine. For even ``N`` the last slot would be a
    cosine without its sine, which breaks the HiPPO construction (the projection is no longer
    closed, ``A`` gains a spurious zero mode and ``e^{tA}B`` leaves the Fourier basis). It is
    therefore a *dummy*: zero row and column of ``A``, zero ``B``, zero basis function, so that
    ``transition("fout", 2M + 2) = blockdiag(transition("fout", 2M + 1), 0)``. The official S4 code
    makes the same choice with the dummy at slot 1; we put it last so that the first ``N - 1``
    slots of an even ``N`` are exactly the odd-size system.
    """
    active = torch.ones(N, dtype=torch.bool)
    if N % 2 == 0:
        active[-1] = False
    return active


def fourier_low_rank(N: int) -> torch.Tensor:
    """``D`` of App. E.4.2: ``1`` (constant), ``sqrt2`` (cosine rows), ``0`` (sine rows and the
    even-``N`` dummy slot)."""
    d = torch.zeros(N, dtype=_F64)
    d[0] = 1.0
    d[1::2] = math.sqrt(2.0)
    return d * fourier_active(N)


def _fout(N: int):
    d = fourier_low_rank(N)
    A = -2.0 * torch.outer(d, d)
    for m in range(1, (N - 1) // 2 + 1):
        c, s = 2 * m - 1, 2 * m
        # c_m' = -2 pi m s_m, s_m' = 2 pi m c_m, evaluated on the reversed window
        A[c, s] += 2.0 * math.pi * m
        A[s, c] -= 2.0 * math.pi * m
    return A, 2.0 * d


def _jacobi(N: int, alpha: float, beta: float):
    y, w = jacobi_01_quadrature(N + 1, alpha, beta)
    P, dP = jacobi_01(N, y, alpha, beta, derivative=True)
    # alpha_nk = int y p_n'(y) p_k(y) w(y) dy  (degree <= 2N - 2, quadrature exact)
    coef = (y * dP * w) @ P.T
    coef = torch.tril(coef)  # entries above the diagonal are quadrature round-off
    A = -(coef + torch.eye(N, dtype=_F64))
    B = jacobi_01(N, torch.ones(1, dtype=_F64), alpha, beta)[:, 0]
    return A, B


def transition(measure: str, N: int, theta: float = 1.0, **params) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO state matrices for ``x' = A x + B u`` (SSM sign, negative diagonal).

    Args:
        measure: one of :data:`MEASURES` (case-insensitive).
        N: state size (>= 1).
        theta: timescale / window length (> 0); the result is ``(A/theta, B/theta)``.
        **params (float): ``alpha`` for ``lagt`` (Laguerre parameter, > -1, default 0);
            ``alpha, beta`` for ``jacobi`` (weight ``(1-y)^alpha y^beta``, default 0).

    Returns:
        ``(A, B)``: float64 tensors of shapes ``(N, N)`` and ``(N,)``.

    References: eqs. (5.1)-(5.3), App. D.2, E.3-E.4; see module docstring for the
    corrections applied (LegT sign, FouT frequencies, LagT source).
    """
    name = check_measure(measure, MEASURES)
    N = check_state_size(N)
    theta = check_positive(theta, "theta")
    p = measure_params(name, params)
    if name == "legs":
        A, B = _legs(N)
    elif name == "legt":
        A, B = _legt(N)
    elif name == "lmu":
        A, B = _lmu(N)
    elif name == "lagt":
        A, B = _lagt(N, p["alpha"])
    elif name == "fout":
        A, B = _fout(N)
    elif name == "jacobi":
        A, B = _jacobi(N, p["alpha"], p["beta"])
    else:  # chebyshev
        A, B = _jacobi(N, -0.5, -0.5)
    return A / theta, B / theta
