"""Closure operations on TO-SSMs (thesis §5.4 table, Lemma E.15).

If ``(A, B)`` has kernel basis ``K(t) = e^{tA} B = p(t) omega(t)`` then

* :func:`scale`    ``(cA, cB)``      -> kernel ``c K(ct)``  (basis ``p(ct)``, measure ``c omega(ct)``);
* :func:`shift`    ``(A + cI, B)``   -> kernel ``e^{ct} K(t)`` (basis
  ``p(t) e^{-ct}``, measure ``omega(t) e^{2ct}``);
* :func:`conjugate` ``(V A V^*, V B)`` -> kernel ``V K(t)`` (basis ``V p(t)``, measure ``omega``), V unitary.

All take and return ``(A (N, N), B (N,))`` tensors; the inputs must be finite floating (real or complex)
tensors, and the scalars finite real numbers.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ._checks import check_finite_tensor, check_positive, check_real, check_system

__all__ = ["scale", "shift", "conjugate"]


def scale(A: torch.Tensor, B: torch.Tensor, c: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Timescale change ``(cA, cB)``, ``c > 0``; A (N, N), B (N,) (thesis §5.4 table, Lemma E.15)."""
    A, B = check_system(A, B)
    c = check_positive(c, "c")
    return c * A, c * B


def shift(A: torch.Tensor, B: torch.Tensor, c: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Identity shift ``(A + cI, B)`` (any real ``c``); A (N, N), B (N,) (thesis §5.4 table, Lemma E.15)."""
    A, B = check_system(A, B)
    c = check_real(c, "c")
    return A + c * torch.eye(A.shape[0], dtype=A.dtype, device=A.device), B.clone()


def conjugate(A: torch.Tensor, B: torch.Tensor, V: torch.Tensor, atol: float = 1e-10) -> Tuple[torch.Tensor,
              torch.Tensor]:
    """Unitary change of basis ``(V A V^*, V B)``; raises ValueError if ``V`` is not unitary. A, V (N, N), B (N,)
    (thesis §5.4 table, Lemma E.15)."""
    A, B = check_system(A, B)
    V = check_finite_tensor(V, "V", complex_ok=True)
    N = A.shape[0]
    if V.shape != (N, N):
        raise ValueError(f"V must have shape ({N}, {N}), got {tuple(V.shape)}")
    eye = torch.eye(N, dtype=V.dtype, device=V.device)
    if float((V.conj().T @ V - eye).abs().max()) > atol:
        raise ValueError("V must be unitary (V^* V = I)")
    Vc = V.conj().T
    A2 = V @ A.to(V.dtype) @ Vc
    B2 = V @ B.to(V.dtype)
    return A2, B2
