r"""Fast-path policy: the one place that decides which implementation of an op runs.

This module sits at the bottom of the package: it imports nothing from :mod:`statespaces` (and not
``triton`` until a CUDA tensor asks for it), so every op can import it without an import cycle.

**The selector** (user-facing), one of :data:`BACKENDS`:

* ``"auto"`` (default): the Triton kernel of :mod:`statespaces.ops.triton` for CUDA tensors of the
  kernel's dtypes when ``triton`` imports, else the PyTorch fast path;
* ``"torch"``: always the PyTorch fast path (any device, any dtype; no Triton);
* ``"ref"``: always the reference twin ``<op>_ref`` that sits beside each op (readable, slow,
  materializing; for debugging and tests).

Set it with :func:`set_backend`, for a block with :func:`use_backend`, or with the environment
variable ``STATESPACES_BACKEND`` (read when this module is imported). ``STATESPACES_NO_TRITON=1``
keeps its old meaning (``"auto"`` never picks Triton).

**How an op uses it** (e.g. :func:`statespaces.kernels.vandermonde.vandermonde`)::

    path = backend.choose("vandermonde", coef, log_a, dtypes=backend.COMPLEX)
    if path == "triton":
        out = backend.attempt("vandermonde", _vandermonde_triton, coef, log_a, L)
        if out is not None:
            return out
    return vandermonde_ref(coef, log_a, L) if path == "ref" else _vandermonde_torch(coef, log_a, L)

**Failures are never silent.** If ``triton`` fails to import when a CUDA tensor asks for it, or a
kernel fails to import, compile or launch, :func:`attempt` warns once per op (a
:class:`TritonFallbackWarning` naming the op and the error), stops choosing Triton for that op in
this process and returns ``None`` so the op runs its PyTorch path. CUDA out-of-memory errors are
re-raised (they are not a Triton problem). Inside :func:`force_triton` (tests: CPU tensors sent to
the kernels under ``TRITON_INTERPRET=1``) every error propagates, so a broken kernel fails its test
instead of being papered over by the fallback.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from typing import Callable, Dict, Iterator, Optional, Set

import torch

Tensor = torch.Tensor

__all__ = [
    "BACKENDS", "get_backend", "set_backend", "use_backend", "choose", "attempt", "triton_available",
    "force_triton", "triton_failed", "TritonFallbackWarning", "REAL", "COMPLEX",
]

BACKENDS = ("auto", "torch", "ref")

#: dtypes the Triton kernels take (each op may narrow these).
REAL = (torch.float32,)
COMPLEX = (torch.complex64,)


class TritonFallbackWarning(RuntimeWarning):
    """A Triton path was unavailable or failed; the PyTorch path ran instead."""


def _env_backend() -> str:
    name = os.environ.get("STATESPACES_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        warnings.warn(f"STATESPACES_BACKEND={name!r} is not one of {BACKENDS}; using 'auto'", RuntimeWarning,
                      stacklevel=2)
        return "auto"
    return name


_BACKEND: str = _env_backend()
#: Route CPU tensors to the Triton kernels too (tests, with ``TRITON_INTERPRET=1``); errors propagate.
FORCE_TRITON = False
_TRITON_OK: Optional[bool] = None
_TRITON_ERROR: Optional[BaseException] = None
_FAILED: Dict[str, str] = {}          # op -> first error message (that op no longer picks Triton)
_WARNED: Set[str] = set()


def get_backend() -> str:
    """The current selector value (``"auto"``, ``"torch"`` or ``"ref"``)."""
    return _BACKEND


def set_backend(name: str) -> str:
    """Set the selector for the whole process; returns the previous value."""
    global _BACKEND
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    before, _BACKEND = _BACKEND, name
    return before


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Within this block, use ``name`` (see :func:`set_backend`)."""
    before = set_backend(name)
    try:
        yield
    finally:
        set_backend(before)


@contextlib.contextmanager
def force_triton(enabled: bool = True) -> Iterator[None]:
    """Within this block CPU tensors go to the Triton kernels (for ``TRITON_INTERPRET=1`` tests) and
    kernel errors propagate instead of falling back."""
    global FORCE_TRITON
    before = FORCE_TRITON
    FORCE_TRITON = enabled
    try:
        yield
    finally:
        FORCE_TRITON = before


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, TritonFallbackWarning, stacklevel=3)


def triton_available(warn: bool = False) -> bool:
    """Whether ``triton`` imports (tried once). With ``warn``, a failed import warns once."""
    global _TRITON_OK, _TRITON_ERROR
    if _TRITON_OK is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module("triton")
            _TRITON_OK = True
        except Exception as e:  # ImportError, or a broken install: the PyTorch path is always there
            _TRITON_OK, _TRITON_ERROR = False, e
    if not _TRITON_OK and warn:
        _warn_once("import triton", f"statespaces: triton failed to import ({type(_TRITON_ERROR).__name__}: "
                   f"{_TRITON_ERROR}); CUDA tensors use the PyTorch paths (slower). Set "
                   "statespaces.backend.set_backend('torch') or STATESPACES_BACKEND=torch to silence this.")
    return bool(_TRITON_OK)


def _no_triton_env() -> bool:
    return os.environ.get("STATESPACES_NO_TRITON", "") not in ("", "0")


def choose(op: str, *tensors: Optional[Tensor], dtypes=REAL + COMPLEX) -> str:
    """``"triton"``, ``"torch"`` or ``"ref"``: the path ``op`` takes for these tensors."""
    if _BACKEND == "ref":
        return "ref"
    if _BACKEND == "torch" or _no_triton_env() or op in _FAILED:
        return "torch"
    ts = [t for t in tensors if t is not None]
    if not ts or not all(t.dtype in dtypes for t in ts):
        return "torch"
    if not (FORCE_TRITON or all(t.is_cuda for t in ts)):
        return "torch"
    return "triton" if triton_available(warn=True) else "torch"


def use_triton(*tensors: Optional[Tensor], dtypes=REAL + COMPLEX) -> bool:
    """Whether these tensors would take a Triton kernel under the current policy (any op)."""
    return choose("", *tensors, dtypes=dtypes) == "triton"


def triton_failed(op: str, exc: BaseException) -> None:
    """Record that ``op``'s Triton path failed: warn once, and stop choosing it in this process."""
    _FAILED.setdefault(op, f"{type(exc).__name__}: {exc}")
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    _warn_once(f"failed {op}", f"statespaces: the Triton kernel for {op!r} failed ({type(exc).__name__}: "
               f"{first}); falling back to the PyTorch path for {op!r} from now on.")


def attempt(op: str, fn: Callable, *args, **kwargs):
    """Run the Triton path ``fn(*args, **kwargs)`` of ``op``; on failure warn once, disable it and
    return ``None`` (the caller then runs its PyTorch path). Under :func:`force_triton` errors propagate."""
    if FORCE_TRITON:
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:  # ImportError of the kernel module, triton CompilationError, OutOfResources, ...
        triton_failed(op, e)
        return None


def failed_ops() -> Dict[str, str]:
    """Ops whose Triton path failed in this process, with the first error (a copy)."""
    return dict(_FAILED)
