"""The validation contract of every public entry point (docs/validation.md), implemented once.

Constructors, ``forward``, ``step``, ``initial_state``, ``kernel`` of the layers, the residual block
and the models call these helpers, so a bad call fails at the boundary with a message that names
the argument, what was found and what to do -- never deep inside torch, never silently.

The contract:

* **Wrong kind** -> ``TypeError``; **right kind, bad value** -> ``ValueError``.
* **Integers** (sizes, lengths, ``batch_size``, ``steps``): Python ints and NumPy integers
  (``np.int64(8)``) are accepted; bools, floats (``2.5`` and also ``2.0``), strings and tensors are
  refused with ``TypeError``.
* **Real numbers** (``rate``, ``bandlimit``, ``temperature``...): Python and NumPy ints/floats;
  bools (``rate=True``), strings and tensors are refused with ``TypeError``; NaN, inf and values
  out of range with ``ValueError``.
* **Tensors**: a real floating dtype (``TypeError`` for integer/complex/bool), on the module's
  device, of the documented rank and channel count; ``float64`` input needs a ``float64`` module
  (half-precision input is computed in the module's precision). **Batch 0 is refused** (as is
  length 0): ``ValueError("... batch size 0 ...")``, also by ``initial_state(0)`` -- an empty
  batch is almost always a bug upstream (an empty data split, a bad slice), and refusing it keeps
  every path (FFT, scan, Triton, pooling) free of empty-tensor special cases. L = 1 is valid
  everywhere.
* **States**: exactly the type, shape, dtype and device of ``initial_state(B)`` (a ``complex128``
  state for a float32 layer is refused, not silently cast).
* **Non-finite values**: NaN/inf in the input or the state -> ``ValueError`` naming it; a
  non-finite result from finite input and state -> ``FloatingPointError`` naming the non-finite
  parameters/buffers, or, if they are all finite, reporting an overflow of the dtype. ``step``
  never returns NaN silently, ``forward`` never blames an overflow on a NaN state or parameter.

Cost. The finiteness checks need a host sync, so they run once per public call: only the
outermost entry point (decorated with :func:`public`) checks, after the computation, with one
fused reduction over its outputs (NaN/inf in an input or a parameter always reaches the output of
these linear maps: ``0 * nan = nan``); only when that fails are the inputs, states and parameters
examined one by one to name the culprit. Entry points called by another one (a layer inside a
block inside a model, ``kernel`` inside ``forward``) skip them; the outer call covers them.
``CHECK_FINITE = False`` turns them off. While ``torch.compile``/``torch.export``/jit tracing runs,
:func:`tracing` is True and every check that needs a host value is skipped (shape, dtype and
device checks still run), and so inside a ``torch.func`` transform (``vmap`` has no host values); in
eager mode they are never weakened. The result check
(:func:`check_result`) needs no host value on CUDA and in traced graphs: there it is
``torch._assert_async`` (issue 17 item 2), kept in compiled and exported graphs (not in ONNX).
"""
from __future__ import annotations

import functools
import math
import numbers
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Tuple, TypeVar, Union, cast

import torch

from .backend import transforming

#: Set to ``False`` to skip the NaN/inf checks (cheap, but a host sync on GPU).
CHECK_FINITE = True

F = TypeVar("F", bound=Callable[..., Any])
_local = threading.local()


# ---- tracing / nesting ---------------------------------------------------------------------------
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
_is_exporting = getattr(getattr(torch, "compiler", None), "is_exporting", None)


def tracing() -> bool:
    """True while torch.compile (dynamo), torch.export or ``torch.jit.trace`` traces the code, or a
    ``torch.func`` transform runs (:func:`statespaces.backend.transforming`; under ``vmap`` a tensor has
    no host value): then checks that need host values (``bool(tensor)``, ``.item()``) are skipped.
    (Called a few times per eager step: the compiler's functions are looked up once, at import.)"""
    if transforming():
        return True
    if _is_compiling is not None and _is_compiling():
        return True
    if _is_exporting is not None and _is_exporting():
        return True
    return bool(torch.jit.is_tracing())


def _is_fake(t: torch.Tensor) -> bool:
    """A tensor without data (fake/functional tensors of torch.export's non-strict tracing, meta)."""
    return t.device.type == "meta" or type(t).__name__ in ("FakeTensor", "FunctionalTensor")


def public(fn: F) -> F:
    """Mark a public entry point (a method of a module): while it runs, entry points it calls skip
    their finiteness checks (its own, after the call, cover them; see the module docstring). A module with
    half-precision parameters is refused on entry (:func:`check_parameter_dtype`). A
    torch ``RuntimeError`` raised while some parameter of the module is NaN/inf (e.g. a linear
    solve or SVD that cannot converge) becomes a ``FloatingPointError`` naming those parameters."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if tracing():
            return fn(*args, **kwargs)
        depth = getattr(_local, "depth", 0)
        # at every depth: a model cast to half precision reaches its layers from its own entry point
        if args and isinstance(getattr(type(args[0]), "param_dtype", None), property):
            check_parameter_dtype(args[0].param_dtype)
        _local.depth = depth + 1
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:
            module = args[0] if args and isinstance(args[0], torch.nn.Module) else None
            bad = nonfinite_parameters(module) if module is not None and CHECK_FINITE else []
            if bad:
                raise FloatingPointError(
                    f"{type(module).__name__}.{fn.__name__} failed because these parameters are not finite: {bad}; "
                    f"reload a checkpoint or re-initialize them ({type(e).__name__}: {str(e).splitlines()[0]})"
                ) from e
            raise
        finally:
            _local.depth = depth

    return wrapper  # type: ignore[return-value]


def finite_checks_due() -> bool:
    """True if the running entry point is the outermost one, in eager mode, with ``CHECK_FINITE``."""
    return CHECK_FINITE and getattr(_local, "depth", 0) <= 1 and not tracing()


# ---- scalars ---------------------------------------------------------------------------------------
def _kind(value: Any) -> str:
    return type(value).__name__


def file_in_the_way(path: Union[str, "os.PathLike[str]"], itself: bool = False) -> Optional[Path]:
    """The first existing *file* among ``path``'s folders (and ``path`` itself with ``itself``), which stops an
    output from being written there; None when every existing one is a folder."""
    path = Path(path)
    return next((p for p in ((path, *path.parents) if itself else path.parents) if p.exists() and not p.is_dir()),
                None)


def check_choice(name: str, value: str, valid: Iterable[str]) -> str:
    """Return ``value`` lower-cased if it is one of ``valid``; raise ``ValueError`` listing them otherwise."""
    valid = tuple(valid)
    if not isinstance(value, str) or value.lower() not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid choices are: {', '.join(valid)}")
    return value.lower()


def check_int(name: str, value: Any, minimum: Optional[int] = 1) -> int:
    """``value`` as a Python int: ints, NumPy integers and torch SymInts (tracing) are accepted;
    bools, floats, strings and tensors raise ``TypeError``; values below ``minimum`` ``ValueError``."""
    if isinstance(value, torch.SymInt):
        return value  # type: ignore[return-value]   # a traced size: already an integer
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = ""
        if isinstance(value, float) or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
            hint = "; floats are not accepted where a count is expected, pass an int"
        elif isinstance(value, torch.Tensor):
            hint = "; pass a Python int (int(t))"
        elif isinstance(value, bool):
            hint = "; bools are not accepted as numbers"
        at_least = "" if minimum is None else f" >= {minimum}"
        raise TypeError(f"{name} must be an integer{at_least}, got {value!r} ({_kind(value)}){hint}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_flag(name: str, value: Any, hint: str = "") -> bool:
    """``value`` if it is a bool; ``TypeError`` otherwise (a string such as ``"no"`` or ``"concat"`` is truthy, so
    reading it as a flag would silently mean True). ``hint`` is added to the message."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({_kind(value)}){hint}")
    return value


#: Largest seed a layer accepts (``torch.Generator.manual_seed`` takes 64-bit integers; layers made of several
#: seeded parts add small offsets to it).
MAX_SEED = 2 ** 63 - 1 - 1024


def check_seed(value: Any, name: str = "seed") -> Optional[int]:
    """None, or an integer in ``[0, MAX_SEED]`` (NumPy integers accepted) as a Python int."""
    if value is None:
        return None
    seed = check_int(name, value, 0)
    if seed > MAX_SEED:
        raise ValueError(f"{name} must be at most {MAX_SEED}, got {seed}")
    return seed


def seeded_generator(seed: Any, name: str = "seed") -> Optional[torch.Generator]:
    """A CPU generator seeded with ``seed`` for a layer's random init, or None (the global RNG) for ``seed=None``;
    the seed is checked by :func:`check_seed`."""
    seed = check_seed(seed, name)
    return None if seed is None else torch.Generator().manual_seed(seed)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Alias of :func:`check_int` (an integer >= ``minimum``)."""
    return check_int(name, value, minimum)


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """``initial_state(batch_size)``: an integer >= 1 (batch 0 is refused, see the module docstring)."""
    return check_int(name, batch_size, 1)


def check_length(L: Any, name: str = "kernel length L") -> int:
    """A kernel / sequence length: an integer >= 1 (NumPy integers accepted)."""
    if isinstance(L, bool) or not isinstance(L, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"{name} must be a positive integer, got {L!r} ({_kind(L)})")
    if not isinstance(L, torch.SymInt) and int(L) < 1:
        raise ValueError(f"{name} must be a positive integer, got {L!r}")
    # a SymInt stands in for an int while tracing (torch.export / compile)
    return cast(int, L) if isinstance(L, torch.SymInt) else int(L)


def check_real(
    name: str,
    value: Any,
    *,
    positive: bool = True,
    finite: bool = True,
    what: str = "number",
) -> float:
    """``value`` as a float: Python/NumPy ints and floats are accepted; bools, strings, tensors and
    None raise ``TypeError``; NaN (and inf if ``finite``, values <= 0 if ``positive``) ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = "; bools are not accepted as numbers" if isinstance(value, bool) else ""
        if isinstance(value, torch.Tensor):
            hint = "; pass a Python float (float(t))"
        raise TypeError(f"{name} must be a {what}, got {value!r} ({_kind(value)}){hint}")
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)) or (positive and not v > 0):
        raise ValueError(f"{name} must be a {what}, got {value!r}")
    return v


def check_rate(rate: Any) -> float:
    """``rate`` (step-size multiplier): a positive finite real number; bools and tensors are refused."""
    return check_real("rate", rate, what="positive finite number (step-size multiplier)")


# ---- tensors -------------------------------------------------------------------------------------
def check_real_float(name: str, x: Any) -> None:
    """Require a real floating-point tensor (no integers, no complex, no bool)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_kind(x)}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(
            f"{name} must be a real floating-point tensor, got dtype {x.dtype}; "
            "convert it with .float() (or .double())"
        )
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {x.layout}; convert it with .to_dense()")


def check_device(name: str, x: torch.Tensor, device: torch.device) -> None:
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the module is on {device}; move one with .to(device)")


def check_parameter_dtype(param_dtype: torch.dtype) -> None:
    """Refuse half-precision parameters (``module.half()``, ``.bfloat16()``): torch has no complex32 kernels for
    the layers' modes, so every entry point failed deep inside torch, and a LinOSS state came back complex32."""
    if param_dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"the module's parameters are {param_dtype}: SSM layers compute in float32 or float64 (complex modes, "
            "FFTs, scans); keep the parameters in float32 (module.float()) and use torch.autocast for mixed "
            "precision (half-precision inputs are accepted and computed in float32)"
        )


def check_dtype_compatible(name: str, x: torch.Tensor, param_dtype: torch.dtype) -> None:
    """Half-precision inputs are computed in the module's precision; float64 needs a float64 module. (The module's
    own parameters must be float32 or float64: :func:`public` refuses others once, at the entry point.)"""
    if x.dtype == torch.float64 and param_dtype != torch.float64:
        raise TypeError(
            f"{name} is float64 but the parameters are {param_dtype}; call .double() on the module "
            "or pass float32 input"
        )


def check_batch(name: str, x: torch.Tensor) -> None:
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} has batch size 0 (shape {tuple(x.shape)}); every entry point needs at least one "
            "sequence: skip empty batches before the call"
        )


def check_sequence(
    x: Any,
    d_model: int,
    param_dtype: torch.dtype,
    name: str = "input",
    device: Optional[torch.device] = None,
    finite: bool = True,
    channels: str = "d_model",
) -> None:
    """Validate a batch-first sequence ``x`` of shape (B, L, H), B >= 1, L >= 1, H = ``d_model``, on
    ``device`` (if given). ``finite``: also refuse NaN/inf now (one reduction; entry points that
    check their result with :func:`check_result` pass False and get the same error from there).
    ``channels``: the name of H in messages (``d_input`` for a model's input)."""
    check_real_float(name, x)
    if device is not None:
        check_device(name, x, device)
    if x.dim() != 3:
        hint = ("; add a batch dimension with x[None] if needed" if x.dim() == 2 else
                "; an N-D input (batch, *grid, channels) needs an N-D layer (S4ND)" if x.dim() > 3 else "")
        raise ValueError(f"{name} must have shape (batch, length, {channels}={d_model}), got {tuple(x.shape)} "
                         f"({x.dim()} dims){hint}")
    if x.shape[-1] != d_model:
        raise ValueError(f"{name} has {x.shape[-1]} channels in its last dim, the module expects {channels}={d_model}")
    check_batch(name, x)
    if x.shape[1] == 0:
        raise ValueError(f"{name} has length 0; sequences must have at least one step")
    check_dtype_compatible(name, x, param_dtype)
    if finite:
        check_finite(name, x)


def check_step_input(
    x: Any, d_model: int, param_dtype: torch.dtype, device: Optional[torch.device] = None, name: str = "x"
) -> None:
    """Validate one step's input (B, H), B >= 1 (finiteness is checked on the step's result)."""
    check_real_float(name, x)
    if device is not None:
        check_device(name, x, device)
    if x.dim() != 2 or x.shape[-1] != d_model:
        raise ValueError(f"step input {name} must have shape (batch, d_model={d_model}), got {tuple(x.shape)}")
    check_batch(name, x)
    check_dtype_compatible(name, x, param_dtype)


def check_state(
    state: Any, shape: Sequence[int], dtype: torch.dtype, device: torch.device, batch: int, name: str = "state"
) -> None:
    """``state`` must match ``initial_state(batch)``: a tensor of that shape, dtype and device."""
    want = f"initial_state({batch})"
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"{name} must be a tensor like {want} (shape {tuple(shape)}, {dtype}), got {_kind(state)}")
    if tuple(state.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (from {want}), got {tuple(state.shape)}")
    if state.dtype != dtype:
        kind = "a complex tensor" if dtype.is_complex else "a tensor"
        raise TypeError(
            f"{name} must be {kind} of dtype {dtype} like {want}, got {state.dtype}; use the state the "
            f"module returned, or {name}.to({dtype})"
        )
    if state.device != device:
        raise ValueError(f"{name} is on {state.device} but the module is on {device}; move it with .to(device)")


# ---- value checks without a host sync on CUDA -------------------------------------------------------
def refuse_if(bad: torch.Tensor, message: str, exc: type = ValueError) -> None:
    """Refuse when any entry of the bool tensor ``bad`` is True; ``message`` may contain ``{n}``
    (the number of True entries on CPU, "some" on CUDA).

    CPU: ``exc(message)`` now (the host already holds the values: no sync to pay). CUDA: no host
    sync on the hot path; ``torch._assert_async`` fails on the device instead (a device-side
    assert: the CUDA context is unusable afterwards, so build-time checks, e.g. a stepper's, come
    first). Skipped while tracing (compile / export), like every check that needs host values.
    """
    if tracing() or _is_fake(bad) or bad.numel() == 0:
        return
    if bad.device.type == "cuda":
        torch._assert_async(~bad.any(), f"statespaces: {message.format(n='some')}")
        return
    if bool(bad.any()):
        raise exc(message.format(n=int(bad.sum())))


# ---- finiteness ----------------------------------------------------------------------------------
def _finite_flag(x: torch.Tensor) -> torch.Tensor:
    """0-d bool tensor, True if the one-pass sum of ``x`` is finite (proves every entry is finite)."""
    if x.is_complex():
        x = torch.view_as_real(x)
    return torch.isfinite(x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32))


def all_finite(x: torch.Tensor) -> bool:
    """True when every entry of ``x`` is finite, in one reduction pass for the common case.

    A NaN or an infinity makes the sum NaN or infinite, so a finite sum proves that every entry is
    finite; a non-finite sum is either a non-finite entry or an overflow of the sum itself, which
    the exact elementwise test then tells apart.
    """
    if x.numel() == 0 or _is_fake(x) or not (x.is_floating_point() or x.is_complex()):
        return True
    if bool(_finite_flag(x)):
        return True
    return bool(torch.isfinite(x).all())


def all_finite_many(tensors: Sequence[torch.Tensor]) -> bool:
    """:func:`all_finite` for several tensors with a single host sync in the common case."""
    ts = [t for t in tensors if t.numel() and not _is_fake(t) and (t.is_floating_point() or t.is_complex())]
    if not ts:
        return True
    if len(ts) == 1:
        return all_finite(ts[0])
    if all(t.device == ts[0].device for t in ts):        # one sum of the sums: one host sync, few small ops
        parts = [r.sum(dtype=torch.float64 if r.dtype == torch.float64 else torch.float32)
                 for r in (torch.view_as_real(t) if t.is_complex() else t for t in ts)]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        if math.isfinite(float(total.detach())):         # one host read (as bool() would be)
            return True
    return all(bool(torch.isfinite(t).all()) for t in ts)


def check_finite(name: str, x: torch.Tensor) -> None:
    """Refuse NaN/inf in ``x`` now (outermost entry point, eager mode, ``CHECK_FINITE``)."""
    if finite_checks_due() and not all_finite(x):
        raise ValueError(_non_finite_message(name, x))


def named_tensors(name: str, obj: Any) -> Iterator[Tuple[str, torch.Tensor]]:
    """The tensors in a (nested) state: a tensor, or dicts/lists/tuples of them (None skipped)."""
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from named_tensors(f"{name}[{k!r}]", v)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from named_tensors(f"{name}[{i}]", v)


def _non_finite_message(name: str, x: torch.Tensor) -> str:
    bad = int((~torch.isfinite(x)).sum())
    if name.split("[")[0].endswith("state"):
        hint = ("a state must come from initial_state(batch) or from a finite earlier call: "
                "start again from initial_state")
    else:
        hint = "clean or mask it before the call (e.g. torch.nan_to_num)"
    return f"{name} contains NaN or inf values ({bad} of {x.numel()} entries); {hint}"


def nonfinite_parameters(module: torch.nn.Module) -> list:
    """Names of the parameters and floating buffers of ``module`` that hold NaN or inf."""
    bad = []
    for n, p in list(module.named_parameters()) + list(module.named_buffers()):
        if (p.is_floating_point() or p.is_complex()) and not all_finite(p.detach()):
            bad.append(n)
    return bad


def check_result(module: torch.nn.Module, outputs: Any, what: str = "output", **inputs: Any) -> None:
    """Refuse a non-finite result of an entry point, naming the culprit.

    ``outputs``: the tensors returned (a tensor or a nested state); ``inputs``: name -> tensor or
    nested state, in the order to blame. Runs only in the outermost entry point in eager mode
    (:func:`finite_checks_due`), one fused reduction over ``outputs``; if that finds NaN/inf:
    ``ValueError`` for the first non-finite input, else ``FloatingPointError`` naming the
    non-finite parameters of ``module``, else ``FloatingPointError`` for an overflow.

    On CUDA, and while ``torch.compile``/``torch.export`` trace, the check never syncs: it becomes
    ``torch._assert_async`` on a device-side flag (:func:`_assert_finite_async`), which a traced graph keeps
    (not an ONNX export: ONNX has no assert operator).
    """
    if not CHECK_FINITE or getattr(_local, "depth", 0) > 1:
        return
    outs = [t for _, t in named_tensors(what, outputs)]
    if tracing() or any(t.device.type == "cuda" for t in outs):
        # ONNX has no assert op (exported models stay check-free), vmap no batching rule for it
        if not (torch.onnx.is_in_onnx_export() or transforming()):
            _assert_finite_async(module, outs, what)
        return
    if all_finite_many(outs):
        return
    for name, value in inputs.items():
        for n, t in named_tensors(name, value):
            if not all_finite(t):
                raise ValueError(_non_finite_message(n, t))
    owner = type(module).__name__
    bad = nonfinite_parameters(module)
    if bad:
        raise FloatingPointError(
            f"the {owner} {what} is not finite because these parameters are not: {bad}; reload a checkpoint "
            "or re-initialize them (a diverged training run leaves NaN parameters)"
        )
    mags = []
    for name, value in inputs.items():
        ts = [t for _, t in named_tensors(name, value) if t.numel() and (t.is_floating_point() or t.is_complex())]
        if ts:
            mags.append(f"{name} magnitude up to {max(float(t.abs().max()) for t in ts):.3g}")
    dtype = outs[0].dtype if outs else torch.get_default_dtype()
    if dtype == torch.float16:          # float32's range is wider; bfloat16 has float32's range already
        wider = "rescale the input or pass it in float32"
    elif dtype in (torch.bfloat16, torch.float32, torch.complex64):
        wider = "rescale the input or run the module in float64"
    else:      # already the widest: the input, or a rate / step that takes the system out of its range
        wider = ("rescale the input, or check the rate and the step sizes (an extreme rate can leave the range of "
                 "the discretization)")
    raise FloatingPointError(
        f"the {owner} {what} overflowed {dtype} ({', '.join(mags) or 'finite inputs'}); {wider}"
    )


def _finite_exact(x: torch.Tensor) -> torch.Tensor:
    """0-d bool tensor, True iff every entry of ``x`` is finite: one ``aminmax`` pass (NaN propagates
    through min/max, an infinity is the min or the max; unlike a sum, nothing can overflow)."""
    if x.is_complex():
        x = torch.view_as_real(x)
    lo, hi = torch.aminmax(x)
    return torch.isfinite(lo) & torch.isfinite(hi)


def _assert_finite_async(module: torch.nn.Module, outs: Sequence[torch.Tensor], what: str) -> None:
    """The finiteness check of :func:`check_result` without a host sync: ``torch._assert_async`` on a
    device-side flag (CUDA eager, and in the graphs that ``torch.compile``/``torch.export`` trace, where it
    stays as ``aten._assert_async``). On CUDA a failure is a device-side assert (the CUDA context is unusable
    afterwards), so the message says how to find the culprit: rerun on CPU, where :func:`check_result` names
    it. Per call one ``aminmax`` pass over each output, nothing copied to the host."""
    ts = [t.detach() for t in outs if t.numel() and (t.is_floating_point() or t.is_complex())]
    if not ts:
        return
    flag = _finite_exact(ts[0])
    for t in ts[1:]:
        flag = flag & _finite_exact(t).to(flag.device)
    torch._assert_async(flag, f"statespaces: the {type(module).__name__} {what} is not finite (NaN/inf in an input, "
                              "the state or a parameter, or an overflow); rerun the call on CPU to have the culprit "
                              "named, or set statespaces._checks.CHECK_FINITE = False")


#: What to do when a bidirectional layer is asked for a state, a step or a streaming form.
CAUSAL_HINT = " (build it with bidirectional=False for a causal, streamable layer)"
#: The error of ``step`` and of a stepper built for a bidirectional layer (one wording for both).
NOT_STEPPABLE = "a bidirectional layer is not causal and cannot be stepped" + CAUSAL_HINT
