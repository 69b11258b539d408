r"""The launch table of the Triton kernels: one :class:`Config` per (kernel, signature, constexprs,
num_warps) that a launch site can choose, read by the launcher and by the resource check alike.

Each kernel module builds the :class:`Config` it launches with a small function of the problem
shape (e.g. ``_fwd_config(N)``) and launches through :meth:`Config.launch`; its ``configs()``
enumerates the same function over its whole domain, so the list of what can be launched is
generated from the launch sites and cannot drift from them. ``statespaces.ops.triton.configs()``
gathers every module's list; ``statespaces.ops.triton._resources`` compiles each entry for
sm_80 / sm_90 on a CPU machine and reports registers and spills (tests/test_triton_resources.py).

Under the Triton interpreter (``TRITON_INTERPRET=1``, the numerics tests) every launch also
checks that its positional arguments match the declared signature (count, tensor dtypes, ints),
that the constexprs name exactly the kernel's constexpr parameters, and that the config is one
of its module's ``configs()`` -- so a kernel whose arguments change fails the fast tests until
its table entry is updated. On a GPU the check is skipped (no per-launch overhead).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from ...backend import patch_interpreter  # noqa: F401  (re-exported: the interpreter tests import it here)

Tensor = torch.Tensor

__all__ = ["Config", "signature", "pow2_domain", "step_buffers", "contiguous", "real_view", "patch_interpreter"]

_PTR_DTYPES = {"*fp32": torch.float32, "*fp64": torch.float64}
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def signature(ptr_type: str, pointers: Sequence[str], ints: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
    """``((name, triton type), ...)``: the pointer arguments, then the integer ones, in launch order."""
    return tuple((p, ptr_type) for p in pointers) + tuple((i, "i32") for i in ints)


def pow2_domain(limit: int) -> List[int]:
    """1, 2, 3, 4, 8, ..., 4 * limit: enough sizes to reach every value of a clamped next-power-of-2 rule."""
    out, v = [1, 2, 3], 4
    while v <= 4 * max(1, limit):
        out.append(v)
        v *= 2
    return out


def _kernel_params(kernel) -> Tuple[List[str], List[str]]:
    """(runtime argument names, constexpr names) of a JITFunction or an interpreted one."""
    fn = getattr(kernel, "fn", kernel)
    import inspect

    runtime: List[str] = []
    const: List[str] = []
    for name, p in inspect.signature(fn).parameters.items():
        ann = p.annotation
        text = ann if isinstance(ann, str) else getattr(ann, "__name__", repr(ann))
        (const if "constexpr" in str(text) else runtime).append(name)
    return runtime, const


@dataclass(frozen=True)
class Config:
    """One launchable variant of a kernel.

    ``spill_budget`` is the number of bytes of register spills (ptxas "spill stores") this variant
    is allowed on the checked targets: 0 everywhere today (the resource test asserts it).
    """

    name: str                                   # "module.kernel"
    kernel: Any = field(compare=False, repr=False)
    signature: Tuple[Tuple[str, str], ...]
    constexprs: Tuple[Tuple[str, Any], ...]
    num_warps: int = 4
    spill_budget: int = 0
    module: str = field(default="", compare=False, repr=False)

    @property
    def consts(self) -> Dict[str, Any]:
        return dict(self.constexprs)

    def label(self) -> str:
        cs = ",".join(f"{k}={_fmt(v)}" for k, v in self.constexprs)
        ptr = sorted({t for _, t in self.signature if t.startswith("*")})
        return f"{self.name}[{cs};warps={self.num_warps};{'/'.join(ptr)}]"

    def launch(self, grid, *args) -> None:
        """``kernel[grid](*args, **constexprs, num_warps=...)``, checked under the interpreter."""
        if _INTERPRET:
            self.check(args)
        self.kernel[grid](*args, **self.consts, num_warps=self.num_warps)

    def check(self, args: Optional[Sequence] = None) -> None:
        """The config matches its kernel (parameter names) and, given ``args``, the launch arguments."""
        runtime, const = _kernel_params(self.kernel)
        names = [n for n, _ in self.signature]
        if names != runtime:
            raise TypeError(f"{self.name}: launch table signature {names} != kernel arguments {runtime}")
        if sorted(k for k, _ in self.constexprs) != sorted(const):
            raise TypeError(f"{self.name}: launch table constexprs {[k for k, _ in self.constexprs]} != {const}")
        if args is None:
            return
        if len(args) != len(self.signature):
            raise TypeError(f"{self.name}: {len(args)} launch arguments, the table declares {len(self.signature)}")
        for a, (n, t) in zip(args, self.signature):
            if t.startswith("*"):
                if not (isinstance(a, torch.Tensor) and a.dtype == _PTR_DTYPES[t]):
                    raise TypeError(f"{self.name}: argument {n} must be a {t} tensor, got "
                                    f"{getattr(a, 'dtype', type(a).__name__)}")
            elif isinstance(a, bool) or not isinstance(a, int):
                raise TypeError(f"{self.name}: argument {n} must be an int ({t}), got {type(a).__name__}")
        if self.module:
            import importlib

            if self not in importlib.import_module(self.module).configs():
                raise RuntimeError(f"{self.label()} is launched but not listed by {self.module}.configs()")


def _fmt(v) -> str:
    return str(v).replace("triton.language.", "tl.")


def make(module: str, kernel, sig, num_warps: int = 4, spill_budget: int = 0, **constexprs) -> Config:
    name = f"{module.rsplit('.', 1)[-1]}.{getattr(getattr(kernel, 'fn', kernel), '__name__', 'kernel')}"
    return Config(name=name, kernel=kernel, signature=tuple(sig), constexprs=tuple(constexprs.items()),
                  num_warps=num_warps, spill_budget=spill_budget, module=module)


def unique(configs: Iterable[Config]) -> List[Config]:
    seen, out = set(), []
    for c in configs:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


Chooser = Callable[..., Config]


def step_buffers(op: str, out: Optional[Tuple[Tensor, Tensor]], y_like: Tensor,
                 state_like: Tensor) -> Tuple[Tensor, Tensor]:
    """``(y, state')`` buffers of a fused recurrent step: fresh contiguous tensors shaped like ``y_like`` and
    ``state_like``, or the caller's ``out`` pair checked to match them (contiguous, shape, dtype, device; the
    state buffer may be the input state itself: the step kernels read a tile before writing it)."""
    if out is None:
        return (torch.empty(y_like.shape, dtype=y_like.dtype, device=y_like.device),
                torch.empty(state_like.shape, dtype=state_like.dtype, device=state_like.device))
    for name, t, ref in (("out[0]", out[0], y_like), ("out[1]", out[1], state_like)):
        if t.shape != ref.shape or t.dtype != ref.dtype or t.device != ref.device or not t.is_contiguous():
            raise ValueError(f"{op}: {name} must be a contiguous {ref.dtype} tensor of shape {tuple(ref.shape)} "
                             f"on {ref.device}, got {t.dtype} {tuple(t.shape)} on {t.device}")
    return out[0], out[1]


def contiguous(t: Tensor) -> Tensor:
    """``t`` itself if contiguous, else a contiguous copy: no dispatched op when none is needed (a GPU bound
    by dispatch pays for each, even a no-op ``t.contiguous()``)."""
    return t if t.is_contiguous() else t.contiguous()


def real_view(t: Tensor) -> Tensor:
    """A complex tensor as the contiguous (..., 2) real view the kernels index (copies only if it must: a
    conjugated or strided tensor; otherwise no dispatched op besides the view)."""
    return torch.view_as_real(contiguous(t.resolve_conj() if t.is_conj() else t))


