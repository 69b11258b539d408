r"""Fast Vandermonde sums for diagonal SSMs (thesis §3.2.1, eq. 3.2; §3.5.3).

The S4D kernel is ``K_l = Re sum_n c_n a_n^l`` for ``l < L``, a Vandermonde matrix-vector product.
The naive route materializes the (H, N, L) matrix ``a_n^l`` with one complex exponential per
entry. Here we split ``l = J*q + r`` with block size ``J ~ sqrt(L)``:

    K[q*J + r] = Re sum_n (c_n a_n^{qJ}) a_n^r ,

a batched complex matrix product of a (L/J, N) matrix with a (N, J) matrix per channel. So:

* transcendental functions: O(H N sqrt(L)) instead of O(H N L);
* multiply-adds: O(H N L), done by BLAS (``matmul``), not elementwise;
* memory: O(H (L + N sqrt(L))), never the (H, N, L) tensor; autograd stores only the two factors.

:func:`vandermonde_transpose` is the adjoint sum ``sum_l u_l a^l`` used to advance a state over
a whole chunk. Both are checked against :func:`statespaces.kernels.reference.vandermonde_naive`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _block(L: int) -> int:
    return max(1, int(math.ceil(math.sqrt(L))))


def _powers(log_a: Tensor, count: int, stride: int) -> Tensor:
    """``exp(stride * j * log_a)`` for j < count: shape (..., N, count)."""
    j = torch.arange(count, device=log_a.device, dtype=log_a.real.dtype) * stride
    return torch.exp(log_a.unsqueeze(-1) * j)


def _real_matmul(X: Tensor, Y: Tensor) -> Tensor:
    """``Re(X @ Y)`` for complex X (..., m, n) and Y (..., n, k) as one real matmul."""
    return torch.cat([X.real, -X.imag], -1) @ torch.cat([Y.real, Y.imag], -2)


def vandermonde(coef: Tensor, log_a: Tensor, L: int) -> Tensor:
    r"""``K_l = Re sum_n coef_n exp(l * log_a_n)`` for ``l in [0, L)``.

    Args:
        coef: complex coefficients, shape (..., H, N) (leading batch dims allowed).
        log_a: complex logarithms of the discrete eigenvalues, shape (H, N).
        L: number of powers.

    Returns:
        Real tensor (..., H, L).
    """
    J = _block(L)
    Q = -(-L // J)
    low = _powers(log_a, J, 1)                               # (H, N, J):   a^r
    high = _powers(log_a, Q, J).transpose(-1, -2)            # (H, Q, N):   a^{qJ}
    X = coef.unsqueeze(-2) * high                            # (..., H, Q, N)
    K = _real_matmul(X, low)                                 # (..., H, Q, J)
    return K.flatten(-2)[..., :L]


def vandermonde_transpose(u: Tensor, log_a: Tensor) -> Tensor:
    r"""Adjoint sum ``S_n = sum_l u_l exp(l * log_a_n)``.

    Args:
        u: real weights, shape (..., H, L).
        log_a: complex, shape (H, N).

    Returns:
        complex tensor (..., H, N).
    """
    L = u.shape[-1]
    J = _block(L)
    Q = -(-L // J)
    u = F.pad(u, (0, Q * J - L)).unflatten(-1, (Q, J))      # (..., H, Q, J)
    low = _powers(log_a, J, 1).transpose(-1, -2)             # (H, J, N)
    high = _powers(log_a, Q, J)                              # (H, N, Q)
    inner = torch.complex(u @ low.real, u @ low.imag)        # (..., H, Q, N)
    return (inner * high.transpose(-1, -2)).sum(-2)
