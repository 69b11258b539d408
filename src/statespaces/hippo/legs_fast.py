"""O(N) HiPPO-LegS update (thesis Lemma 4.6, App. D.3.2) and its dense reference.

Structure (SSM sign): ``A = -D (L + D0) D`` with ``L`` the all-ones lower-triangular
matrix (incl. diagonal), ``D = diag(sqrt(2n+1))`` and ``D0 = diag(-n/(2n+1))``
(so that the diagonal is ``-(n+1)`` and the strictly lower part
``-sqrt((2n+1)(2k+1))``, eq. 5.1). Hence

* ``(I + a A) v = v - a D (cumsum(D v) + D0 D v)``: O(N);
* ``(I - b A) x = y`` (``b >= 0``) is the bidiagonal-in-disguise system
  ``(L + E) (D x) = D^{-1} y / b``, ``E = D0 + D^{-2}/b``. With prefix sums
  ``s_n = sum_{j<=n} (D x)_j`` it becomes the first-order linear recurrence
  ``s_n = r_n s_{n-1} + beta_n``,  ``r_n = (1 - n b)/(1 + (n+1) b)``,
  ``beta_n = sqrt(2n+1) y_n / (1 + (n+1) b)``, and
  ``x_n = (y_n - b sqrt(2n+1) s_{n-1}) / (1 + (n+1) b)``.

The thesis suggests ``x = cumsum(beta / cumprod(r)) * cumprod(r)`` for the
recurrence; that divides by ``cumprod(r)``, which underflows and is exactly 0 when
``1/b`` is an integer < N (the bilinear rule at step k hits ``r_{2k} = 0``). We use
a work-efficient odd/even parallel scan instead (:func:`linear_recurrence`): O(N)
work, O(log N) vectorized passes, no division.

The GBT step for the scale-invariant LegS ODE ``x' = (A x + B u)/t`` from time ``t``
to ``t' = t + delta`` (App. A.1.5) is

    ``(I - alpha delta/t' A) x' = (I + (1-alpha) delta/t A) x + g B u``

with input gain ``g = delta (alpha/t' + (1-alpha)/t)`` (``input_gain="gbt"``, the
consistent GBT weighting, which keeps a constant input's coefficients exactly
fixed) or ``g = delta/t`` as printed in App. A.1.5 (``input_gain="thesis"``).
"""

from __future__ import annotations

from typing import Any, Tuple

import torch

__all__ = [
    "linear_recurrence",
    "legs_matvec",
    "legs_solve",
    "legs_gbt_coefficients",
    "legs_step_fast",
    "legs_step_dense",
    "INPUT_GAINS",
]

INPUT_GAINS = ("gbt", "thesis")


def linear_recurrence(r: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Solve ``s_n = r_n s_{n-1} + beta_n`` (``s_{-1} = 0``) along the last dimension.

    ``r`` broadcasts against ``beta``; returns a tensor shaped like ``beta``.
    Odd/even reduction (parallel scan): combine pairs ``(2i, 2i+1)``, recurse on
    the half-length problem, then fill in the even entries. O(N) total work.
    """
    r, beta = torch.broadcast_tensors(r, beta)
    N = beta.shape[-1]
    if N <= 1:                 # N = 0: nothing to solve (the halving below never reached 1: infinite recursion)
        return beta.clone()
    if N % 2:
        # pad to even length with an identity element (r=1, beta=0)
        r = torch.cat([r, torch.ones_like(r[..., :1])], dim=-1)
        beta = torch.cat([beta, torch.zeros_like(beta[..., :1])], dim=-1)
    r_e, r_o = r[..., 0::2], r[..., 1::2]
    b_e, b_o = beta[..., 0::2], beta[..., 1::2]
    # s_{2i+1} = r_{2i+1} r_{2i} s_{2i-1} + (r_{2i+1} b_{2i} + b_{2i+1})
    s_odd = linear_recurrence(r_o * r_e, r_o * b_e + b_o)
    s_prev = torch.cat([torch.zeros_like(s_odd[..., :1]), s_odd[..., :-1]], dim=-1)
    s_even = r_e * s_prev + b_e
    s = torch.stack([s_even, s_odd], dim=-1).flatten(-2)
    return s[..., :N]


def _sqrt2n1(N: int, like: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(2.0 * torch.arange(N, dtype=like.dtype, device=like.device) + 1.0)


def legs_matvec(v: torch.Tensor, a) -> torch.Tensor:
    """``(I + a A) v`` for the LegS matrix ``A`` (SSM sign), O(N). ``v``: ``(..., N)``;
    ``a``: scalar or tensor broadcasting against ``v[..., :1]``."""
    N = v.shape[-1]
    q = _sqrt2n1(N, v)
    n = torch.arange(N, dtype=v.dtype, device=v.device)
    Dv = q * v
    Av = -q * (torch.cumsum(Dv, dim=-1) - n / (2 * n + 1) * Dv)
    return v + a * Av


def legs_solve(y: torch.Tensor, b) -> torch.Tensor:
    """Solve ``(I - b A) x = y`` for the LegS matrix ``A`` (SSM sign), ``b >= 0``, O(N).

    ``y``: ``(..., N)``; ``b``: scalar or tensor broadcasting against ``y[..., :1]``.
    """
    N = y.shape[-1]
    q = _sqrt2n1(N, y)
    n = torch.arange(N, dtype=y.dtype, device=y.device)
    b = torch.as_tensor(b, dtype=y.dtype, device=y.device)
    den = 1.0 + (n + 1.0) * b
    r = (1.0 - n * b) / den
    s = linear_recurrence(r, q * y / den)
    s_prev = torch.cat([torch.zeros_like(s[..., :1]), s[..., :-1]], dim=-1)
    return (y - b * q * s_prev) / den


def legs_gbt_coefficients(t, t_next, alpha: float, input_gain: str = "gbt") -> Tuple[Any, Any, Any]:
    """``(a, b, g)`` of one LSI-GBT step from time ``t`` to ``t_next`` (see module doc)."""
    delta = t_next - t
    a = (1.0 - alpha) * delta / t
    b = alpha * delta / t_next
    if input_gain == "gbt":
        g = a + b
    elif input_gain == "thesis":
        g = delta / t
    else:
        raise ValueError(f"unknown input_gain {input_gain!r}; valid options: {', '.join(INPUT_GAINS)}")
    return a, b, g


def legs_step_fast(x: torch.Tensor, u: torch.Tensor, a, b, g) -> torch.Tensor:
    """One O(N) GBT step ``x' = (I - bA)^{-1} ((I + aA) x + g B u)``.

    ``x``: ``(..., N)``; ``u``: ``(...)``; ``a, b, g`` scalars or tensors shaped ``(..., 1)``.
    """
    q = _sqrt2n1(x.shape[-1], x)
    y = legs_matvec(x, a) + g * q * u.unsqueeze(-1)
    return legs_solve(y, b)


def legs_step_dense(x: torch.Tensor, u: torch.Tensor, a: float, b: float, g: float,
                    A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Dense reference of :func:`legs_step_fast`: explicit ``(I + aA)`` matvec and a
    triangular solve with ``(I - bA)`` (O(N^2)); ``A, B`` from ``transition("legs", N)``."""
    N = A.shape[0]
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    y = x @ (eye + a * A).T + g * u.unsqueeze(-1) * B
    M = eye - b * A
    sol = torch.linalg.solve_triangular(M, y.reshape(-1, N).T, upper=False)
    return sol.T.reshape(y.shape)
