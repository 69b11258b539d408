r"""The single place that picks a kernel implementation: Triton on CUDA, PyTorch everywhere else.

Rules (:func:`use_triton`):

* CUDA tensors of the kernel's supported dtypes (fp32 / complex64) run the Triton kernels of
  :mod:`statespaces.ops.triton` when ``triton`` imports; otherwise, and for every other device or
  dtype, the PyTorch implementation runs. Triton is never required.
* CPU tensors always take the PyTorch path, except inside :func:`force_triton` (tests), which
  routes them to the Triton kernels for the Triton interpreter (``TRITON_INTERPRET=1`` must be set
  before ``triton`` is first imported).
* ``STATESPACES_NO_TRITON=1`` in the environment disables the Triton path everywhere.

Nothing here imports ``triton`` (or the kernel modules) until a CUDA tensor actually asks for it,
so importing :mod:`statespaces` stays cheap and warning-free.

Entry points with the signatures of the PyTorch functions they stand for:
:func:`vandermonde` (:func:`statespaces.kernels.vandermonde.vandermonde`), :func:`scan_diagonal`
(:func:`statespaces.ops.scan.scan_diagonal`) and :func:`cauchy`
(``statespaces.kernels.cauchy.cauchy``, when that module exists); and :func:`diagonal_step`, the
body of :meth:`statespaces.layers.base.DiagonalSSM.step` (its Triton kernel is inference-only and
also takes fp64).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from typing import Iterator, Optional

import torch

Tensor = torch.Tensor

#: Route CPU tensors to the Triton kernels too (only meaningful with ``TRITON_INTERPRET=1``).
FORCE_TRITON = False

_TRITON_OK: Optional[bool] = None
_REAL = (torch.float32,)
_COMPLEX = (torch.complex64,)


def triton_available() -> bool:
    """Whether ``triton`` and :mod:`statespaces.ops.triton` import (checked once, silently)."""
    global _TRITON_OK
    if _TRITON_OK is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module("triton")
                importlib.import_module("statespaces.ops.triton")
            _TRITON_OK = True
        except Exception:  # ImportError, or a broken triton install: the PyTorch path is always there
            _TRITON_OK = False
    return _TRITON_OK


def use_triton(*tensors: Optional[Tensor], dtypes=_REAL + _COMPLEX) -> bool:
    """True when these tensors should go to a Triton kernel (see the module docstring)."""
    if os.environ.get("STATESPACES_NO_TRITON", "") not in ("", "0"):
        return False
    ts = [t for t in tensors if t is not None]
    if not all(t.dtype in dtypes for t in ts):
        return False
    if FORCE_TRITON:
        return triton_available()
    return all(t.is_cuda for t in ts) and triton_available()


@contextlib.contextmanager
def force_triton(enabled: bool = True) -> Iterator[None]:
    """Within this block, CPU tensors use the Triton kernels (for ``TRITON_INTERPRET=1`` tests)."""
    global FORCE_TRITON
    before = FORCE_TRITON
    FORCE_TRITON = enabled
    try:
        yield
    finally:
        FORCE_TRITON = before


# ---- dispatching entry points -----------------------------------------------------------------
def vandermonde(coef: Tensor, log_a: Tensor, L: int) -> Tensor:
    r"""``K_l = Re sum_n coef_n exp(l log_a_n)``: Triton kernel or the blocked PyTorch path."""
    if coef.is_complex() and log_a.is_complex() and use_triton(coef, log_a, dtypes=_COMPLEX):
        from ..ops.triton.vandermonde import vandermonde_triton

        return vandermonde_triton(coef, log_a, L)
    from .vandermonde import _vandermonde_torch

    return _vandermonde_torch(coef, log_a, L)


def scan_diagonal(a: Tensor, b: Tensor, x0: Optional[Tensor] = None) -> Tensor:
    r"""All states of ``x_l = a_l x_{l-1} + b_l``: Triton chunked scan or the PyTorch parallel scan."""
    if use_triton(a, b, x0):
        from ..ops.triton.scan import scan_diagonal_triton

        return scan_diagonal_triton(a, b, x0)
    from ..ops import scan as _scan

    # ops.scan may route its public scan_diagonal here; its PyTorch body is then _scan_diagonal_torch
    return getattr(_scan, "_scan_diagonal_torch", _scan.scan_diagonal)(a, b, x0)


def _cauchy_torch():
    """The PyTorch Cauchy function (``_cauchy_torch`` if the module routes ``cauchy`` here)."""
    mod = importlib.import_module("statespaces.kernels.cauchy")
    return getattr(mod, "_cauchy_torch", None) or mod.cauchy


def cauchy(v: Tensor, z: Tensor, w: Tensor, conj: bool = False, chunk_elems: Optional[int] = None) -> Tensor:
    r"""DPLR Cauchy sum ``out_k = sum_n v_n / (z_k - w_n)`` (signature of
    :func:`statespaces.kernels.cauchy.cauchy`): Triton kernel or the chunked PyTorch path."""
    if use_triton(v, z, w):
        from ..ops.triton.cauchy import cauchy_triton

        return cauchy_triton(v, z, w, conj, chunk_elems)
    return _cauchy_torch()(v, z, w, conj, chunk_elems)


_STEP_REAL = (torch.float32, torch.float64)
_STEP_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _diagonal_step_torch(dA: Tensor, dB: Tensor, Cc: Tensor, D: Tensor, u: Tensor, state: Tensor):
    """The PyTorch step (broadcasting, autograd): the expression of ``DiagonalSSM.step``."""
    state = torch.addcmul(dB * u.unsqueeze(-1), dA, state)
    y = torch.addcmul(torch.linalg.vecdot(Cc, state).real, D, u)   # scale Re(C . state) + D u
    return y, state


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


def diagonal_step(dA: Tensor, dB: Tensor, Cc: Tensor, D: Tensor, u: Tensor, state: Tensor):
    r"""One step of a diagonal SSM (recurrent view, thesis eq. 2.5, §2.3):
    ``state' = dA state + dB u``, ``y = Re(vecdot(Cc, state')) + D u``.

    Shapes: dA, dB, Cc (H, M) complex (``Cc = conj(scale C)``), D (H,) and u (B, H) real, state
    (B, H, M) complex; returns ``(y, state')``. The fused Triton kernel
    (:func:`statespaces.ops.triton.step.diagonal_step_triton`, fp32 or fp64) runs for CUDA tensors
    (or under :func:`force_triton`) when no gradient is needed; otherwise the PyTorch expression.
    """
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (dA, dB, Cc, D, u, state))
    if (
        not needs_grad
        and use_triton(dA, dB, Cc, D, u, state, dtypes=_STEP_REAL + tuple(_STEP_COMPLEX.values()))
        and _step_fits_kernel(dA, dB, Cc, D, u, state)
    ):
        from ..ops.triton.step import diagonal_step_triton

        return diagonal_step_triton(dA, dB, Cc, D, u, state)
    return _diagonal_step_torch(dA, dB, Cc, D, u, state)
