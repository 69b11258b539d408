"""Linear solves whose right-hand sides carry batch dimensions the matrix lacks.

``torch.linalg.solve(A, B)`` with A (*a, n, n) and B (*lead, *a, n, k) factorizes A once and solves for every
leading batch of B. Two reasons to fold B's leading dimensions into its columns instead, B (*a, n, k * lead):

* the same arithmetic, without relying on broadcasting inside the solve;
* under ``torch.func.vmap`` (per-sample gradients, ``jacrev``), the backward of ``solve`` with respect to such a B
  came out multiplied by the vmapped batch size (torch 2.13, CPU): ``vmap(grad(...))`` of a stateful S4 call with
  ``l_max`` gave gradients up to 1e3 off. With the batch dimensions of A and B equal, it is right.

Expanding A to B's batch dimensions instead would also avoid the second, at the cost of one factorization per
leading batch (9x slower at H = 128, N = 64, 8 leading batches).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Type

import torch

from ._checks import refuse_if

Tensor = torch.Tensor


def solve_ex(A: Tensor, B: Tensor) -> Tuple[Tensor, Tensor]:
    """``torch.linalg.solve_ex(A, B)`` for A (*a, n, n) and B (*lead, *a, n, k) (or any shapes solve_ex takes):
    ``(X, info)`` with X shaped like B. B's leading dimensions are folded into its columns (module docstring)."""
    extra = B.dim() - A.dim()
    if extra <= 0 or tuple(B.shape[extra:-2]) != tuple(A.shape[:-2]):
        return torch.linalg.solve_ex(A, B)
    lead, (n, k) = B.shape[:extra], B.shape[-2:]
    dims = tuple(range(extra))
    cols = B.movedim(dims, tuple(range(-extra, 0))).reshape(*A.shape[:-2], n, k * math.prod(lead))
    X, info = torch.linalg.solve_ex(A, cols)
    X = X.reshape(*A.shape[:-2], n, k, *lead).movedim(tuple(range(-extra, 0)), dims)
    return X, info


def solve(A: Tensor, B: Tensor, message: Optional[str] = None,
          exc: Type[Exception] = torch.linalg.LinAlgError) -> Tensor:
    """``torch.linalg.solve(A, B)`` through :func:`solve_ex` (same folding), with no host sync on CUDA. A singular
    A is refused by :func:`~statespaces._checks.refuse_if` with ``message`` (may contain ``{n}``, the number of
    singular systems) as ``exc`` (default: ``torch.linalg.LinAlgError``, as solve raises) on CPU, a device-side
    assert on CUDA, nothing while traced or transformed."""
    X, info = solve_ex(A, B)
    refuse_if(info != 0, message or "linalg.solve: the matrix is singular ({n} singular system(s))", exc)
    return X
