"""Why HiPPO-LegS cannot be diagonalized stably (thesis §6.2.1, Lemma 6.6, App. F.2.1).

Up to sign and the diagonal similarity ``D = diag(sqrt(2n+1) (-1)^n)``, the LegS
matrix ``-A`` (eq. 5.1/6.1) equals ``A~`` with

    ``A~_nk = (-1)^{n-k} (2k+1)`` (n > k),  ``k+1`` (n = k),  ``0`` (n < k),

whose eigenvectors are the columns of ``V_ij = binom(i+j, i-j)`` (0 for i < j),
``A~ V = V diag(1, ..., N)``. ``V_{3i,i} = binom(4i, 2i) ~ 2^{4i}``, so the
eigenvector matrix has entries (and condition number) of order ``2^{4N/3}``.
"""

from __future__ import annotations

from math import comb

import torch

from ._checks import check_state_size

__all__ = ["legs_tilde", "legs_eigenvectors", "legs_eigenvectors_exact", "legs_tilde_exact"]

_F64 = torch.float64


def legs_tilde_exact(N: int) -> list[list[int]]:
    """``A~`` of Lemma 6.6 as nested Python ints (exact arithmetic), ``N x N``."""
    N = check_state_size(N)
    return [
        [((-1) ** (n - k)) * (2 * k + 1) if n > k else (k + 1 if n == k else 0) for k in range(N)]
        for n in range(N)
    ]


def legs_eigenvectors_exact(N: int) -> list[list[int]]:
    """``V_ij = binom(i+j, i-j)`` (0 for ``i < j``) as nested Python ints, ``N x N``."""
    N = check_state_size(N)
    return [[comb(i + j, i - j) if i >= j else 0 for j in range(N)] for i in range(N)]


def legs_tilde(N: int) -> torch.Tensor:
    """``A~`` of Lemma 6.6 as a float64 tensor ``(N, N)``.

    Relation to :func:`transition`: ``A~ = -D^{-1} A_legs D`` with
    ``D = diag(sqrt(2n+1) (-1)^n)``.
    """
    return torch.tensor(legs_tilde_exact(N), dtype=_F64)


def legs_eigenvectors(N: int) -> torch.Tensor:
    """Eigenvector matrix ``V`` of Lemma 6.6 as float64 ``(N, N)`` (entries overflow
    int64 beyond N ~ 30, float64 keeps them approximately)."""
    N = check_state_size(N)
    return torch.tensor(
        [[float(comb(i + j, i - j)) if i >= j else 0.0 for j in range(N)] for i in range(N)],
        dtype=_F64,
    )
