r"""Compatibility names for the kernel-selection policy, and the recurrent-step op.

The policy itself lives in :mod:`statespaces.backend` (the bottom of the package: it imports
nothing from :mod:`statespaces`); each op picks its own path there in a few lines:
:func:`statespaces.kernels.vandermonde.vandermonde`, :func:`statespaces.kernels.cauchy.cauchy`,
:func:`statespaces.ops.scan.scan_diagonal` and :func:`diagonal_step` below, each with its
reference twin ``<op>_ref`` beside it. This module re-exports the old entry points
(:func:`use_triton`, :func:`force_triton`, :func:`triton_available`, :func:`vandermonde`,
:func:`scan_diagonal`, :func:`cauchy`) for existing callers; none of those modules imports it, so
there is no import cycle.

:func:`diagonal_step` is the body of :meth:`statespaces.layers.base.DiagonalSSM.step`: the fused
Triton kernel (:func:`statespaces.ops.triton.step.diagonal_step_triton`, inference only, fp32 or
fp64) for CUDA tensors when no gradient is needed, else the PyTorch expression
:func:`diagonal_step_ref`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import backend
from ..backend import force_triton, triton_available, use_triton  # noqa: F401  (re-exported)
from ..ops.scan import scan_diagonal  # noqa: F401  (re-exported)
from .cauchy import cauchy  # noqa: F401  (re-exported)
from .vandermonde import vandermonde  # noqa: F401  (re-exported)

Tensor = torch.Tensor

__all__ = ["diagonal_step", "diagonal_step_ref", "use_triton", "force_triton", "triton_available",
           "vandermonde", "scan_diagonal", "cauchy"]


_STEP_REAL = (torch.float32, torch.float64)
_STEP_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def diagonal_step_ref(dA: Tensor, dB: Tensor, Cc: Tensor, D: Tensor, u: Tensor, state: Tensor,
                      out: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    """Reference twin of :func:`diagonal_step`, also its PyTorch path (broadcasting, autograd):
    the expression of ``DiagonalSSM.step``. With ``out`` (``(y, state')`` buffers, ``state'`` may be ``state``;
    the generation stepper's) the results are written there: in place when no gradient is needed (no
    temporaries: 1.1x per step on one CPU thread at B=1, H=128, M=32), else computed and copied in."""
    if out is None or (torch.is_grad_enabled() and any(t.requires_grad for t in (dA, dB, Cc, D, u, state))):
        new = torch.addcmul(dB * u.unsqueeze(-1), dA, state)
        y = torch.addcmul(torch.linalg.vecdot(Cc, new).real, D, u)     # scale Re(C . state) + D u
        if out is None:
            return y, new
        out[1].copy_(new)
        out[0].copy_(y)
        return out
    y_out, new = out
    if new is not state:
        new.copy_(state)
    new.mul_(dA).addcmul_(dB, u.unsqueeze(-1))
    torch.addcmul(torch.linalg.vecdot(Cc, new).real, D, u, out=y_out)
    return y_out, new


def _step_fits_kernel(dA: Tensor, dB: Tensor, Cc: Tensor, D: Tensor, u: Tensor, state: Tensor) -> bool:
    """Exact shapes and one precision throughout (the PyTorch path handles everything else)."""
    if u.dim() != 2 or state.dim() != 3 or u.dtype not in _STEP_REAL or D.dtype != u.dtype:
        return False
    (B, H), M = u.shape, state.shape[-1]
    cdt = _STEP_COMPLEX[u.dtype]
    return (
        all(t.dtype == cdt and tuple(t.shape) == (H, M) for t in (dA, dB, Cc))
        and state.dtype == cdt and tuple(state.shape) == (B, H, M) and tuple(D.shape) == (H,)
    )


def diagonal_step(dA: Tensor, dB: Tensor, Cc: Tensor, D: Tensor, u: Tensor, state: Tensor) -> Tuple[Tensor, Tensor]:
    r"""One step of a diagonal SSM (recurrent view, thesis eq. 2.5, §2.3):
    ``state' = dA state + dB u``, ``y = Re(vecdot(Cc, state')) + D u``.

    Shapes: dA, dB, Cc (H, M) complex (``Cc = conj(scale C)``), D (H,) and u (B, H) real, state
    (B, H, M) complex; returns ``(y, state')``. The fused Triton kernel
    (:func:`statespaces.ops.triton.step.diagonal_step_triton`, fp32 or fp64) runs for CUDA tensors
    (or under :func:`force_triton`) when no gradient is needed; otherwise the PyTorch expression.
    """
    if not (u.is_cuda or backend.FORCE_TRITON):             # CPU: the PyTorch expression, no path lookup per step
        return diagonal_step_ref(dA, dB, Cc, D, u, state)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (dA, dB, Cc, D, u, state))
    path = backend.choose("diagonal_step", dA, dB, Cc, D, u, state, dtypes=_STEP_REAL + tuple(_STEP_COMPLEX.values()))
    if path == "triton" and not needs_grad and _step_fits_kernel(dA, dB, Cc, D, u, state):
        out = backend.attempt("diagonal_step", _diagonal_step_triton, dA, dB, Cc, D, u, state)
        if out is not None:
            return out
    return diagonal_step_ref(dA, dB, Cc, D, u, state)


def _diagonal_step_triton(dA: Tensor, dB: Tensor, Cc: Tensor, D: Tensor, u: Tensor, state: Tensor):
    from ..ops.triton.step import diagonal_step_triton

    return diagonal_step_triton(dA, dB, Cc, D, u, state)


#: Former name of :func:`diagonal_step_ref`.
_diagonal_step_torch = diagonal_step_ref
