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
variable ``STATESPACES_BACKEND`` (read when this module is imported; case and spaces ignored, as by
:func:`set_backend`). ``STATESPACES_NO_TRITON=1`` (or true / yes / on) keeps its old meaning (``"auto"`` never
picks Triton); 0 / false / no / off or unset leave Triton on.

**Inside a ``torch.func`` transform** (``grad``, ``vjp``, ``jvp``, ``jacrev``, ``jacfwd``, ``hessian``,
``vmap``, e.g. per-sample gradients by ``vmap(grad(...))`` over ``functional_call``) every op takes its
reference twin, whatever the selector says (:func:`get_backend` returns ``"ref"`` there): the fast paths
are custom autograd Functions with hand-written backwards, which functorch's transforms cannot see
through, while the twins are plain differentiable torch ops. So the transforms work on every layer,
at the twins' speed.

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

**Backward kernels too.** Triton compiles a kernel at its first launch, so a backward kernel can fail
(``OutOfResources`` on a GPU with less shared memory than sm_80/sm_90, a PTX or driver error) inside
``loss.backward()``, long after :func:`attempt` returned. Each Triton autograd Function therefore records
in its forward the op whose :func:`attempt` it ran under (``ctx.fallback_op = backend.fallback_op()``),
and its backward is wrapped by :func:`backward_with_fallback`: if the kernels raise, the op is recorded
as failed exactly as a forward failure is (one warning, later calls take PyTorch) and the gradients of
this call are computed by the Function's PyTorch twin instead (its forward re-run on the saved inputs,
then :func:`torch.autograd.grad`). The twins are registered (:func:`register_twin`) by the modules of
the ops' PyTorch paths, which the kernel modules sit below and may not import. The same errors fall
back as in :func:`attempt` (any ``Exception`` but CUDA out-of-memory: a bug of ours in the kernel
wrappers falls back too, with a warning that names it, as in the forward). Errors propagate where the
forward's would have: under :func:`force_triton`, and for a ``*_triton`` function called directly (not
through :func:`attempt`), as the kernel tests do.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Set, Tuple, TypeVar, cast

import torch

Tensor = torch.Tensor

__all__ = [
    "BACKENDS", "get_backend", "set_backend", "use_backend", "choose", "attempt", "triton_available",
    "force_triton", "triton_failed", "TritonFallbackWarning", "REAL", "COMPLEX", "fallback_op",
    "register_twin", "backward_with_fallback", "twin_gradients", "first_order", "transforming", "failed_ops",
    "patch_interpreter",
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
_RUNNING: Optional[str] = None        # the op whose Triton path attempt() is running, fallback on
_TWINS: Dict[str, Callable[..., Any]] = {}   # Triton autograd Function name -> its PyTorch twin


_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", None)
_forward_ad = torch.autograd.forward_ad          # its _current_level is >= 0 inside a dual_level() block


def transforming() -> bool:
    """True while a ``torch.func`` transform (``grad``, ``vjp``, ``jvp``, ``jacrev``, ``jacfwd``, ``vmap``)
    runs (the predicate :meth:`torch.autograd.Function.apply` itself uses to route custom Functions), or inside a
    ``torch.autograd.forward_ad.dual_level()``: forward-mode AD has no tangent rule in the hand-written Functions
    (it failed with torch's "You must implement the jvp function"), so those calls take the plain-autograd paths."""
    if _functorch_active is not None and bool(_functorch_active()):
        return True
    return getattr(_forward_ad, "_current_level", -1) >= 0


def get_backend() -> str:
    """The backend in effect: the selector value (``"auto"``, ``"torch"`` or ``"ref"``), or ``"ref"`` inside a
    ``torch.func`` transform (module docstring)."""
    return "ref" if transforming() else _BACKEND


def set_backend(name: str) -> str:
    """Set the selector for the whole process; returns the previous value."""
    global _BACKEND
    if isinstance(name, str) and name.strip().lower() in BACKENDS:   # as STATESPACES_BACKEND is read
        name = name.strip().lower()
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
    kernel errors propagate instead of falling back. On a machine without CUDA it needs the interpreter
    (``TRITON_INTERPRET=1`` set before ``triton`` is imported), and patches it for NumPy >= 2.4
    (:func:`patch_interpreter`)."""
    global FORCE_TRITON
    if enabled and os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on", "y"):
        if triton_available():
            patch_interpreter()
    elif enabled and not torch.cuda.is_available():
        raise RuntimeError("force_triton(): without a GPU the Triton kernels run only under the interpreter; set "
                           "TRITON_INTERPRET=1 in the environment before triton is imported (Triton's own error "
                           "without it: '0 active drivers')")
    before = FORCE_TRITON
    FORCE_TRITON = enabled
    try:
        yield
    finally:
        FORCE_TRITON = before


def patch_interpreter() -> None:
    """Make the Triton interpreter (``TRITON_INTERPRET=1``) work with NumPy >= 2.4, which refuses ``int()`` of
    a 1-element 1-d array: the Triton 3.6 interpreter does that for scalar kernel arguments used in a Python
    ``range``. Compiled kernels are unaffected. Patched once per process; called by :func:`force_triton` under the
    interpreter, and by the interpreter tests and ``benchmarks/host_census.py``."""
    import triton.runtime.interpreter as interp

    if not hasattr(interp, "_patch_lang_tensor") or getattr(interp, "_statespaces_index_fix", False):
        return
    orig = interp._patch_lang_tensor

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interp._patch_lang_tensor = patched
    interp._statespaces_index_fix = True


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


_OFF, _ON = ("", "0", "false", "no", "off"), ("1", "true", "yes", "on")


def _no_triton_env() -> bool:
    """``STATESPACES_NO_TRITON``: 1 / true / yes / on keep Triton off; unset, 0 / false / no / off leave it on (any
    case; ``=false`` used to switch Triton off, as did every value but "" and "0"); another value warns once and
    keeps Triton off, as the old reading did."""
    raw = os.environ.get("STATESPACES_NO_TRITON", "")
    value = raw.strip().lower()
    if value in _OFF:
        return False
    if value not in _ON:
        _warn_once("STATESPACES_NO_TRITON", f"STATESPACES_NO_TRITON={raw!r} is not one of 1/true/yes/on or "
                   "0/false/no/off; Triton stays off")
    return True


def choose(op: str, *tensors: Optional[Tensor], dtypes=REAL + COMPLEX) -> str:
    """``"triton"``, ``"torch"`` or ``"ref"``: the path ``op`` takes for these tensors."""
    selected = get_backend()
    if selected == "ref":
        return "ref"
    if selected == "torch" or _no_triton_env() or op in _FAILED:
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


def attempt(op: str, fn: Callable, *args, **kwargs) -> Any:
    """Run the Triton path ``fn(*args, **kwargs)`` of ``op``; on failure warn once, disable it and
    return ``None`` (the caller then runs its PyTorch path). Under :func:`force_triton` errors propagate.
    While ``fn`` runs, :func:`fallback_op` names ``op``, so that the backward of a Triton Function
    that ``fn`` applies can fall back too (:func:`backward_with_fallback`)."""
    global _RUNNING
    if FORCE_TRITON:
        return fn(*args, **kwargs)
    outer, _RUNNING = _RUNNING, op
    try:
        return fn(*args, **kwargs)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:  # ImportError of the kernel module, triton CompilationError, OutOfResources, ...
        triton_failed(op, e)
        return None
    finally:
        _RUNNING = outer


def fallback_op() -> Optional[str]:
    """The op whose Triton path :func:`attempt` is running with its fallback on, else ``None`` (outside
    :func:`attempt`, e.g. a ``*_triton`` function called directly, or under :func:`force_triton`).

    A Triton autograd Function stores it in its forward (``ctx.fallback_op = backend.fallback_op()``)
    for :func:`backward_with_fallback`: the backward falls back where the forward would have, and
    records the failure under the op that chose the kernel. (One value per process, like the rest of
    this module's state: a plain global, which ``torch.compile`` traces without a graph break.)"""
    return _RUNNING


def register_twin(function: str, twin: Callable[..., Any]) -> None:
    """Record ``twin`` as the PyTorch twin of the Triton autograd Function named ``function`` (its class
    name): the same arguments and outputs as that Function's forward, computed by the op's PyTorch path
    with plain autograd. :func:`backward_with_fallback` differentiates it when the Function's backward
    kernels fail. Called at import by the module of the op's PyTorch path (``statespaces.kernels``,
    ``statespaces.ops``), which the kernel modules sit below and may not import
    (tests/test_imports.py); that module has dispatched to the Function, so it is imported by then."""
    _TWINS[function] = twin


_Backward = TypeVar("_Backward", bound=Callable[..., Any])


def backward_with_fallback(function: str, inputs: Callable[[Any], Sequence[Any]]) -> Callable[[_Backward], _Backward]:
    """Decorator for the ``backward`` of the Triton autograd Function named ``function``: if its kernels
    fail to compile or launch, fall back to its PyTorch twin (:func:`register_twin`) for the gradients (a
    backward kernel compiles at its first launch, inside ``loss.backward()``, where :func:`attempt` no
    longer guards it).

    ``inputs(ctx)`` returns this call's forward arguments, saved or rebuilt from what was saved, one per
    argument and in order (non-tensors and ``None`` as they were). On a failure -- only if the forward
    stored ``ctx.fallback_op`` (:func:`fallback_op`) and :func:`force_triton` is off; the same errors as
    :func:`attempt` -- the op is recorded as failed (:func:`triton_failed`: one warning, later calls take
    PyTorch) and the gradients come from :func:`twin_gradients`; if the op has failed already (an earlier
    backward, or a forward since this one), the twin runs without trying the kernels again. Elsewhere,
    or with no twin registered, errors propagate.

    Put it innermost (next to ``def backward``), under ``@once_differentiable`` / ``@amp_backward``."""
    def decorate(backward: _Backward) -> _Backward:
        @functools.wraps(backward)
        def wrapped(ctx, *grads):
            op = getattr(ctx, "fallback_op", None)
            if op is None or FORCE_TRITON or function not in _TWINS:
                return backward(ctx, *grads)
            if op not in _FAILED:       # (failed since this forward: the kernels are not tried again)
                try:
                    return backward(ctx, *grads)
                except torch.cuda.OutOfMemoryError:
                    raise
                except Exception as e:  # as in attempt(): compile / launch errors, and anything else, warned
                    triton_failed(op, e)
            return twin_gradients(_TWINS[function], inputs(ctx), grads, ctx.needs_input_grad)

        return cast(_Backward, wrapped)

    return decorate


def first_order(backward: _Backward) -> _Backward:
    """Decorator for the hand-written ``backward`` of a custom autograd Function (in place of
    ``torch.autograd.function.once_differentiable``): the backward runs without building a graph, and a request
    for a second derivative through it (a backward with ``create_graph=True``) raises a ``RuntimeError`` that says
    where higher-order derivatives are: the ``"ref"`` backend (:func:`use_backend`), whose layers run on plain
    autograd ops (``tests/test_higher_order.py``: gradgradcheck of every layer there).

    ``once_differentiable`` alone is not enough: it raises only where the incoming gradients require grad, and treats
    the tensors saved in the forward as constants, so a second derivative through a parameter's saved factors came
    out silently wrong (missing terms) or ``None`` (``allow_unused=True``). Put it outermost of the backward's
    decorators (right under ``@staticmethod``)."""
    inner = torch.autograd.function.once_differentiable(backward)

    @functools.wraps(backward)
    def wrapped(ctx, *grads):
        if torch.is_grad_enabled():
            name = type(ctx).__name__.removesuffix("Backward")
            raise RuntimeError(
                f"statespaces: {name} has a hand-written first-order backward, so derivatives of order two "
                "(backward with create_graph=True, e.g. a gradient penalty or a Hessian-vector product) are not "
                "available through it; run the model inside statespaces.backend.use_backend('ref'), whose layers "
                "use plain autograd ops (slower), for higher-order derivatives")
        return inner(ctx, *grads)

    return cast(_Backward, wrapped)


def _autocast_off(inputs: Sequence[Any]):
    """A context disabling autocast on the device of the first tensor of ``inputs`` (a null context where
    there is none): the twin recomputes in the precision the Triton forward ran in (fp32, not autocast's)."""
    dev = next((t.device.type for t in inputs if isinstance(t, Tensor)), "cpu")
    try:
        available = bool(torch.amp.is_autocast_available(dev))
    except Exception:  # pragma: no cover - exotic device or old torch
        available = False
    return torch.autocast(device_type=dev, enabled=False) if available else contextlib.nullcontext()


def twin_gradients(fn: Callable[..., Any], inputs: Sequence[Any], grads: Sequence[Optional[Tensor]],
                   needs: Sequence[bool]) -> Tuple[Optional[Tensor], ...]:
    """Gradients w.r.t. ``inputs`` of ``fn(*inputs)`` (one output or a tuple, ``None`` entries allowed)
    contracted with ``grads`` (one per output, ``None`` for none): ``fn`` re-run on detached copies under
    :func:`torch.enable_grad` (autocast off), then :func:`torch.autograd.grad`. One entry per input:
    ``None`` where ``needs`` (a Function's ``ctx.needs_input_grad``) is false, or the input is unused."""
    if len(inputs) != len(needs):
        raise ValueError(f"twin_gradients: {len(inputs)} inputs for {len(needs)} needs_input_grad flags")
    leaves = [t.detach().requires_grad_(bool(need)) if isinstance(t, Tensor) else t for t, need in zip(inputs, needs)]
    wanted = [t for t, need in zip(leaves, needs) if need and isinstance(t, Tensor)]
    with torch.enable_grad(), _autocast_off(inputs):
        outs = fn(*leaves)
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    pairs = [(o, g if g.dtype == o.dtype else g.to(o.dtype)) for o, g in zip(outs, grads)
             if g is not None and isinstance(o, Tensor) and o.requires_grad]
    got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True)
               if pairs and wanted else ())
    return tuple(next(got, None) if need and isinstance(t, Tensor) else None for t, need in zip(leaves, needs))


def failed_ops() -> Dict[str, str]:
    """Ops whose Triton path failed in this process, with the first error (a copy)."""
    return dict(_FAILED)
