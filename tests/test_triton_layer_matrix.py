"""Every layer kind's Triton route, whole layers under the interpreter, against the float64 PyTorch route.

The kernel tests check each Triton kernel at its own shapes; here whole float32 layers run with CPU tensors sent
down the CUDA branches (:func:`statespaces.backend.force_triton`, the device-dependent choices monkeypatched the
CUDA way as ``benchmarks/host_census.py`` does) and are compared with the same layer in float64, which always takes
the PyTorch route: the output, the final state, the input gradient and every parameter gradient (a gradient of the
returned state included), for stateless, stateful (a state in, the final state out) and bidirectional calls at a
length that is no multiple of any tile or chunk. Each case also asserts that some Triton kernel really ran.

A random-shape campaign of the same comparison (about 400 layers of every kind, L from 1 to 257; 2026-12-07,
a ``/tmp`` script) found no Triton error; it found that S4D's and S4's stateful outputs were not row-major
(``tests/test_inplace_outputs.py``).
"""
import collections
import copy
import importlib
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter, row_fold_scan  # noqa: E402

from statespaces import backend  # noqa: E402
from statespaces.layers import S4, S4D, S5, DLinOSS, LinOSS  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

KINDS = {
    "s4d-legs-zoh": lambda **kw: S4D(3, 8, seed=1, **kw),
    "s4d-lin-bilinear": lambda **kw: S4D(3, 6, init="lin", discretization="bilinear", seed=1, **kw),
    "s4-legs": lambda **kw: S4(3, 8, seed=1, **kw),
    "s4-fout": lambda **kw: S4(3, 6, init="fout", seed=1, **kw),
    "s4-legs-wide": lambda **kw: S4(3, 80, seed=1, **kw),      # N > chunked_dense.MAX_N: the Cauchy kernels
    "linoss-im-scan": lambda **kw: LinOSS(3, 5, discretization="IM", mode="scan", seed=1, **kw),
    "linoss-imex-chunked": lambda **kw: LinOSS(3, 5, discretization="IMEX", mode="chunked", seed=1, **kw),
    "linoss-im-conv": lambda **kw: LinOSS(3, 5, discretization="IM", mode="conv", seed=1, **kw),
    "dlinoss-scan": lambda **kw: DLinOSS(3, 4, mode="scan", seed=1, **kw),
    "dlinoss-chunked": lambda **kw: DLinOSS(3, 4, mode="chunked", seed=1, **kw),
    "s5": lambda **kw: S5(3, 8, seed=1, **kw),
}
CALLS = ["stateless", "stateful", "bidirectional"]
#: (kind, call) pairs: all but three of the chunked ones (the interpreter's slowest cases, 10-25 s each): the
#: stateless call runs the same kernels as the stateful one with fewer of their branches, and D-LinOSS's chunked
#: calls run LinOSS's kernels (their transition, which differs, is in the stateful case)
CASES = [(k, c) for k in KINDS for c in CALLS
         if not ("chunked" in k and c == "stateless") and (k != "dlinoss-chunked" or c == "stateful")
         and (k != "s4-legs-wide" or c == "stateless")]


@pytest.fixture
def cuda_route(monkeypatch):
    """The interpreter, its scans by rows, and CPU tensors sent down every branch a CUDA tensor takes; counts the
    Triton launches by kernel name."""
    patch_triton_interpreter()
    import triton.runtime.interpreter as interp

    monkeypatch.setattr(interp.ScanOps, "generic_scan", row_fold_scan)
    launches = collections.Counter()
    call = interp.GridExecutor.__call__

    def counted(self, *args, **kwargs):
        launches[getattr(self.fn, "__name__", "?")] += 1
        return call(self, *args, **kwargs)

    monkeypatch.setattr(interp.GridExecutor, "__call__", counted)
    fftconv = importlib.import_module("statespaces.ops.fftconv")
    chunked_conv = importlib.import_module("statespaces.kernels.chunked_conv")
    chunked = importlib.import_module("statespaces.kernels.chunked")
    dplr = importlib.import_module("statespaces.kernels.dplr")
    monkeypatch.setattr(fftconv, "_grouped", lambda u: False)
    monkeypatch.setattr(chunked_conv, "prefer_power_kernel", lambda u: False)
    # and where S4 reads it: layers/s4.py imports the rule by name, so patching chunked_conv alone left S4 on the
    # dense powers and its Cauchy kernels untested here
    monkeypatch.setattr(importlib.import_module("statespaces.layers.s4"), "prefer_power_kernel", lambda u: False)
    monkeypatch.setattr(chunked, "prefer_one_node", lambda dA: True)
    monkeypatch.setattr(dplr, "_risky_list", dplr._risky_list_fixed)
    return launches


def _run(layer, x, state, g, gs):
    """Output, final state, and the gradients of ``<y, g> + <state, gs>`` for x and every parameter."""
    x = x.detach().clone().requires_grad_(True)
    out = layer(x, state=state, return_state=True) if state is not None else layer(x)
    y, s = out if isinstance(out, tuple) else (out, None)
    loss = (y * g.to(y.dtype)).sum()
    if s is not None:
        sr = torch.view_as_real(s) if s.is_complex() else s
        loss = loss + (sr * gs.to(sr.dtype)).sum()
    params = [p for p in layer.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [x] + params, allow_unused=True)
    return y, s, grads


def _rel(got, ref) -> float:
    ref = ref.detach()
    if got is None:
        return 0.0 if float(ref.abs().max()) == 0.0 else float("inf")
    scale = float(ref.abs().max())
    return float((got.detach().to(ref.dtype) - ref).abs().max()) / max(scale, 1e-12)


@pytest.mark.parametrize("kind,call", CASES)
def test_layer_on_the_triton_route_matches_float64(kind, call, cuda_route):
    torch.manual_seed(0)
    layer64 = KINDS[kind](bidirectional=call == "bidirectional").double()
    layer32 = copy.deepcopy(layer64).float()
    # no multiple of any tile (16, 32, 64) or chunk length; the chunked LinOSS kernels are the interpreter's
    # slowest (a program per batch entry and column: about 10 s per case at B = 2, L = 77), so they take one
    # sequence of two and a half chunks of 16
    B, L = (1, 41) if "chunked" in kind else (2, 77)
    x = torch.randn(B, L, 3, dtype=torch.float64)
    g = torch.randn(B, L, 3, dtype=torch.float64)
    state = gs = None
    if call == "stateful":
        s0 = layer64.initial_state(B)
        state = 0.3 * torch.randn_like(s0)
        sr = torch.view_as_real(s0) if s0.is_complex() else s0
        gs = torch.randn(sr.shape, dtype=torch.float64)
    y64, s64, g64 = _run(layer64, x, state, g, gs)
    state32 = None if state is None else state.to(torch.complex64 if state.is_complex() else torch.float32)
    with backend.force_triton():
        y32, s32, g32 = _run(layer32, x.float(), state32, g, gs)
    assert sum(cuda_route.values()) > 0, "no Triton kernel ran: the case tests the PyTorch route"
    if kind == "s4-legs-wide":       # past the dense chunked kernels' MAX_N: the Cauchy route, not dense powers
        assert any("cauchy" in name for name in cuda_route), f"no Cauchy kernel ran: {dict(cuda_route)}"
    errors = {"y": _rel(y32, y64)}
    if s64 is not None:
        errors["state"] = _rel(torch.view_as_real(s32) if s32.is_complex() else s32,
                               torch.view_as_real(s64) if s64.is_complex() else s64)
    names = ["x"] + [n for n, p in layer64.named_parameters() if p.requires_grad]
    for name, a, b in zip(names, g32, g64):
        if b is not None and float(b.abs().max()) > 1e-9:   # a gradient that is rounding noise has no scale
            errors["d" + name] = _rel(a, b)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 2e-4, f"{kind} {call}: {worst} off by {errors[worst]:.2e} (all: {errors}, " \
                                 f"kernels {dict(cuda_route)})"
