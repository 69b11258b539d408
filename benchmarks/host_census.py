#!/usr/bin/env python3
"""Census of the host-side work of each layer's CUDA path, without a GPU.

    PYTHONPATH=src python benchmarks/host_census.py [--layers s4d s4 linoss dlinoss s4bi] [--B 2] [--L 1024] [--H 8] [--N 8]
        [--origins]

On an H200 the layers were bound by the host (benchmarks/README.md, "GPU figures"): the time to issue a
fwd+bwd exceeded the kernels' time, so every aten op the CUDA path dispatches counts. This script runs the
code path CUDA tensors take -- the Triton kernels, forced onto CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1``, :func:`statespaces.backend.force_triton`) -- and counts the top-level aten ops of one
forward+backward with ``torch.profiler``, leaving out the ops the interpreter itself issues (``set_``,
``new_empty``, ``numpy_T``, ``empty``). The count is the number to cut; the interpreter's time is not
measured (it says nothing about a GPU). The branches that choose by device are sent the CUDA way
(:func:`cuda_branches`: whole-tensor FFT convolution, fixed-size Cauchy refinement list, S4's Cauchy
kernel), and LinOSS runs in ``mode="scan"`` (its stateless CUDA path; on CPU it would take the fused
chunked node). Sizes are small: the op count does not depend on B, H, N, and on L only through chunk and
segment counts. ``--origins`` lists the ops that are not views by where they came from: the innermost source
line of the package in the forward (torch calls, before decomposition), the autograd node in the backward (aten
ops): the places to cut.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import Optional

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

#: Ops the Triton interpreter issues around each launch outside :data:`LAUNCH` (not part of a CUDA run).
INTERPRETER_OPS = {"aten::set_", "aten::new_empty", "aten::numpy_T", "aten::empty"}
#: Profiler label of one Triton launch: counted as one op (one kernel); the ops the interpreter issues inside it
#: (copying each tensor argument to the host and back) are not counted.
LAUNCH = "triton::launch"
#: Ops that only make a view (no kernel on a GPU, a few microseconds of dispatch): counted, and also reported
#: apart, so that "kernels" (the rest) can be read beside the total.
VIEW_OPS = {"transpose", "t", "slice", "narrow", "select", "view", "reshape", "_reshape_alias", "unsqueeze",
            "squeeze", "expand", "permute", "view_as_real", "view_as_complex", "real", "imag", "diagonal", "detach",
            "alias", "flatten", "unflatten", "as_strided", "split", "chunk", "unbind", "_unsafe_view", "mT", "mH",
            "resolve_conj", "resolve_neg", "_conj"}


def label_launches() -> None:
    """Wrap each interpreted Triton launch in a profiler range named :data:`LAUNCH` (for this process)."""
    import triton.runtime.interpreter as interp

    if getattr(interp.GridExecutor, "_census_labelled", False):
        return
    call = interp.GridExecutor.__call__

    def labelled(self, *args, **kwargs):
        with torch.profiler.record_function(LAUNCH):
            _IN_LAUNCH[0] = True
            try:
                return call(self, *args, **kwargs)
            finally:
                _IN_LAUNCH[0] = False

    interp.GridExecutor.__call__ = labelled
    interp.GridExecutor._census_labelled = True


def cuda_branches() -> None:
    """Send CPU tensors down the CUDA branches of the code that chooses by device (for this process): the
    FFT convolution on whole tensors (not row groups), the fixed-size list of refined Cauchy nodes (not
    ``nonzero``), S4's kernel by the Cauchy route (not dense powers), and the one-node near powers."""
    import importlib

    fftconv = importlib.import_module("statespaces.ops.fftconv")     # the package exports a function of that name
    chunked_conv = importlib.import_module("statespaces.kernels.chunked_conv")
    dplr = importlib.import_module("statespaces.kernels.dplr")
    s4 = importlib.import_module("statespaces.layers.s4")
    chunked = importlib.import_module("statespaces.kernels.chunked")
    chunked.prefer_one_node = lambda dA: True
    fftconv._grouped = lambda u: False
    dplr._risky_list = dplr._risky_list_fixed
    chunked_conv.prefer_power_kernel = lambda u: False
    if hasattr(s4, "prefer_power_kernel"):
        s4.prefer_power_kernel = lambda u: False


#: Calls seen by :class:`_ForwardOrigins` that dispatch no kernel (metadata) and are not counted.
_METADATA = {"__get__", "__set__", "dim", "size", "stride", "numel", "is_complex", "is_floating_point", "data_ptr",
             "element_size", "is_contiguous", "storage_offset", "__len__", "__index__", "__bool__", "__int__",
             "__float__", "__format__", "__repr__", "__hash__", "requires_grad_", "get_device", "__torch_function__",
             "_record_function_enter_new", "_record_function_exit._RecordFunction"}


class _ForwardOrigins(torch.overrides.TorchFunctionMode):
    """Counts the top-level torch calls of a forward that are not views or metadata by the innermost source
    line of the package that made them (calls made inside a Triton launch are the interpreter's: skipped)."""

    def __init__(self, counter: collections.Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name not in _METADATA and name not in VIEW_OPS and not _IN_LAUNCH[0]:
            frame = sys._getframe(1)
            while frame is not None and "statespaces" not in frame.f_code.co_filename:
                frame = frame.f_back
            where = "(outside the package)"
            if frame is not None:
                path = frame.f_code.co_filename
                where = f"{path.split('src/', 1)[-1]}:{frame.f_lineno} ({frame.f_code.co_name})"
            self.counter[f"forward {where}: {name}"] += 1
        return func(*args, **(kwargs or {}))


#: Set while an interpreted Triton launch runs (by :func:`label_launches`).
_IN_LAUNCH = [False]


def _backward_origin(event) -> Optional[str]:
    """The autograd node a top-level op ran under (``backward <Node>``), or None for a forward op."""
    parent = event.cpu_parent
    while parent is not None:
        if "Backward" in parent.name or parent.name.startswith("autograd::engine"):
            return f"backward {parent.name.split(': ')[-1]}"
        parent = parent.cpu_parent
    return None


def census(layer: str, B: int, L: int, H: int, N: int,
           origins: Optional[collections.Counter] = None) -> collections.Counter:
    """Top-level aten ops (name -> count) of one fwd+bwd of ``layer`` on its CUDA code path; with
    ``origins``, also counts the ops that are not views by where they came from: backward ops by their autograd
    node (from the profiler), forward calls by source line (a second forward under :class:`_ForwardOrigins`)."""
    from torch.profiler import ProfilerActivity, profile

    from statespaces import S4, S4D, LinOSS, backend
    from statespaces.layers import DLinOSS

    cuda_branches()

    make = {"s4d": S4D, "s4": S4, "linoss": LinOSS, "dlinoss": DLinOSS,
            "s4bi": lambda *a, **k: S4(*a, bidirectional=True, **k)}[layer]
    module = make(H, N, seed=0)
    x = torch.randn(B, L, H, requires_grad=True)
    kw = {"mode": "scan"} if layer in ("linoss", "dlinoss") else {}

    def fwd_bwd():
        module(x, **kw).sum().backward()

    with backend.force_triton():
        fwd_bwd()                                            # warm caches (step cache, launch tables)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fwd_bwd()
    ops = collections.Counter()
    for e in prof.events():
        if e.name == LAUNCH:
            ops["triton::launch"] += 1
            continue
        if not e.name.startswith("aten::") or e.name in INTERPRETER_OPS:
            continue
        parent, top = e.cpu_parent, True
        while parent is not None:
            if parent.name.startswith("aten::") or parent.name == LAUNCH:
                top = False
                break
            parent = parent.cpu_parent
        if top:
            ops[e.name] += 1
            where = _backward_origin(e) if origins is not None else None
            if where is not None and e.name.split("::")[-1] not in VIEW_OPS:
                origins[f"{where}: {e.name.split('::')[-1]}"] += 1
    if origins is not None:
        with backend.force_triton(), _ForwardOrigins(origins):
            module(x, **kw)
    return ops


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", default=["s4d", "s4", "linoss"],
                   choices=["s4d", "s4", "linoss", "dlinoss", "s4bi"], help="s4bi: a bidirectional S4 layer")
    p.add_argument("--B", type=int, default=2)
    p.add_argument("--L", type=int, default=1024)
    p.add_argument("--H", type=int, default=8)
    p.add_argument("--N", type=int, default=8)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--origins", action="store_true",
                   help="also list the ops that are not views by source line (forward) or autograd node (backward)")
    a = p.parse_args(argv)
    try:
        import triton  # noqa: F401
    except ImportError:
        print("host_census: triton is not installed (pip install triton): nothing to count.")
        return 0
    from statespaces.ops.triton._launch import patch_interpreter

    patch_interpreter()
    label_launches()
    torch.set_num_threads(1)
    print(f"top-level aten ops (each Triton launch one op) per fwd+bwd on the CUDA code path "
          f"(interpreter ops left out), B={a.B} L={a.L} H={a.H} N={a.N}, torch {torch.__version__}")
    for layer in a.layers:
        origins: Optional[collections.Counter] = collections.Counter() if a.origins else None
        ops = census(layer, a.B, a.L, a.H, a.N, origins)
        common = ", ".join(f"{name.split('::')[-1]} {n}" for name, n in ops.most_common(a.top))
        views = sum(n for name, n in ops.items() if name.split("::")[-1] in VIEW_OPS)
        print(f"{layer:7s} {sum(ops.values()):5d} ops, {sum(ops.values()) - views:4d} not views   {common}")
        for where, n in (origins or collections.Counter()).most_common():
            print(f"    {n:4d}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
