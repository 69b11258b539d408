r"""Reference twins: the readable ground truth every fast path is tested against.

These follow the definitions literally (thesis §2.3.2-2.3.3, eq. 2.5-2.8) and are meant for
tests and small problems: they are O(L N^2) and loop in Python. They work in any dtype,
float64/complex128 included.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

Tensor = torch.Tensor


def power_kernel(dA: Tensor, dB: Tensor, C: Tensor, L: int) -> Tensor:
    r"""SSM convolution kernel by explicit powers, eq. (2.8): ``K = (C dB, C dA dB, ..., C dA^{L-1} dB)``.

    Args:
        dA: discrete state matrix, shape (..., N, N).
        dB: discrete input vector, shape (..., N).
        C: output vector, shape (..., N).
        L: kernel length.

    Returns:
        K of shape (..., L) (complex if any input is complex; take ``.real`` for a real system).
    """
    v = dB
    out = []
    for _ in range(L):
        out.append((C * v).sum(-1))
        v = (dA @ v.unsqueeze(-1)).squeeze(-1)
    return torch.stack(out, -1)


def recurrence(
    dA: Tensor, dB: Tensor, C: Tensor, u: Tensor, D: Optional[Tensor] = None, x0: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    r"""Explicit recurrence ``x_k = dA x_{k-1} + dB u_k``, ``y_k = C x_k + D u_k`` (eq. 2.5).

    One SISO system per channel.

    Args:
        dA: (H, N, N). dB: (H, N). C: (H, N). D: (H,) or None.
        u: input, shape (B, L, H).
        x0: state before the first step (the ``x_{-1}`` of the thesis), (B, H, N); zeros if None.

    Returns:
        ``(y, x)``: outputs (B, L, H) (complex if the system is) and the final state (B, H, N).
    """
    Bsz, L, H = u.shape
    N = dA.shape[-1]
    dtype = torch.promote_types(dA.dtype, u.dtype)
    x = torch.zeros(Bsz, H, N, dtype=dtype, device=u.device) if x0 is None else x0.to(dtype)
    ys = []
    for k in range(L):
        x = torch.einsum("hnm,bhm->bhn", dA.to(dtype), x) + dB.to(dtype) * u[:, k, :, None]
        y = (C.to(dtype) * x).sum(-1)
        if D is not None:
            y = y + D * u[:, k]
        ys.append(y)
    return torch.stack(ys, 1), x


def direct_causal_conv(u: Tensor, k: Tensor) -> Tensor:
    r"""Causal convolution by its definition, O(L^2): ``y_t = sum_{s<=t} k_{t-s} u_s``.

    Args:
        u: (B, L, H). k: (H, L).

    Returns:
        y: (B, L, H).
    """
    Bsz, L, H = u.shape
    y = torch.zeros(Bsz, L, H, dtype=torch.promote_types(u.dtype, k.dtype), device=u.device)
    for t in range(L):
        for s in range(t + 1):
            y[:, t] += k[:, t - s] * u[:, s]
    return y


def vandermonde_naive(coef: Tensor, log_a: Tensor, L: int) -> Tensor:
    r"""Naive Vandermonde kernel that materializes the (..., N, L) matrix of powers (§3.2.1, eq. 3.2).

    ``K_l = Re sum_n coef_n exp(l log_a_n)``; shapes coef (..., N), log_a broadcastable, output (..., L).
    This is the "einsum Vandermonde" of the reference implementation and the baseline of the benchmarks.
    """
    ell = torch.arange(L, device=log_a.device, dtype=log_a.real.dtype)
    V = torch.exp(log_a.unsqueeze(-1) * ell)
    return torch.einsum("...n,...nl->...l", coef, V).real
