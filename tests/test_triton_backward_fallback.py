"""A Triton BACKWARD kernel that fails to compile or launch falls back like a forward one (the policy of
:mod:`statespaces.backend`): one TritonFallbackWarning, the op recorded in ``backend.failed_ops()`` (later calls
take PyTorch), and the gradients of that call computed by the op's PyTorch twin -- not an error escaping
``loss.backward()``. Under ``force_triton()`` (the kernel tests) the error propagates, as the forward's does.

Triton compiles a kernel at its first launch, so on a GPU other than the checked sm_80/sm_90 (less shared memory,
fewer registers) a backward kernel can fail long after its forward ran. Simulated here under the Triton
interpreter (tiny shapes): the production policy (CPU tensors routed to the kernels as CUDA ones are, the
fallback on) and the launches of one kernel module raising ``OutOfResources`` once the forward has run.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import contextlib  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import close_scaled, patch_triton_interpreter  # noqa: E402
from triton.runtime.errors import OutOfResources  # noqa: E402

from statespaces import backend  # noqa: E402
from statespaces.ops.triton import _launch  # noqa: E402

patch_triton_interpreter()

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def production(monkeypatch):
    """Fresh failure state and the "auto" policy as on a GPU: CPU tensors of the kernels' dtypes take the Triton
    path (as CUDA tensors would), while the kernels run with the fallback on (``force_triton`` only routes)."""
    monkeypatch.setattr(backend, "_FAILED", {})
    monkeypatch.setattr(backend, "_WARNED", set())
    monkeypatch.setattr(backend, "_BACKEND", "auto")
    monkeypatch.delenv("STATESPACES_NO_TRITON", raising=False)
    real_choose = backend.choose

    def choose(*args, **kwargs):
        with backend.force_triton():
            return real_choose(*args, **kwargs)

    monkeypatch.setattr(backend, "choose", choose)
    return backend


@contextlib.contextmanager
def launches(monkeypatch, module: str, fail: bool):
    """Record the launches of the kernels of ``statespaces.ops.triton.<module>``; with ``fail`` each raises
    OutOfResources (what Triton raises when a kernel needs more shared memory than the GPU has) instead."""
    real = _launch.Config.launch
    seen = []

    def launch(self, grid, *args):
        if self.name.split(".")[0] != module:
            return real(self, grid, *args)
        seen.append(self.name)
        if fail:
            raise OutOfResources(232448, 101376, "shared memory")
        return real(self, grid, *args)

    monkeypatch.setattr(_launch.Config, "launch", launch)
    try:
        yield seen
    finally:
        monkeypatch.setattr(_launch.Config, "launch", real)


def _loss(out):
    """A real loss of every output whose gradient varies along each of them (complex: both parts)."""
    total = torch.zeros(())
    for o in (out if isinstance(out, (tuple, list)) else (out,)):
        if o is None:
            continue
        r = torch.view_as_real(o) if o.is_complex() else o
        w = torch.cos(0.7 * torch.arange(r.numel(), dtype=torch.float64)).reshape(r.shape)
        total = total + (r.double() * w).sum()
    return total


def _grads(out, wrt):
    return torch.autograd.grad(_loss(out), wrt, allow_unused=True)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _crandn(*shape, g):
    return torch.randn(*shape, dtype=torch.complex64, generator=g)


def _leaves(*ts):
    return [t.detach().clone().requires_grad_() for t in ts]


# ---- one case per Triton autograd Function: (op, kernel module, build) ------------------------------------------
# build() -> (fn, wrt): fn() runs the op as the library does (its dispatch: Triton under the production policy,
# PyTorch under use_backend("torch")); wrt are the tensors differentiated.
def _scan_real():
    from statespaces.ops.scan import scan_diagonal

    g = _gen(1)
    a, b, x0 = _leaves(0.9 * torch.rand(2, 12, 3, generator=g), torch.randn(2, 12, 3, generator=g),
                       torch.randn(2, 3, generator=g))
    return (lambda: scan_diagonal(a, b, x0)), [a, b, x0]


def _scan_broadcast():
    """Complex a, a real b broadcast over the batch (the fallback rebuilds b from the states: one real slice)."""
    from statespaces.ops.scan import scan_diagonal

    g = _gen(2)
    a = torch.polar(0.5 + 0.45 * torch.rand(2, 12, 3, generator=g), torch.randn(2, 12, 3, generator=g))
    a, b, x0 = _leaves(a, torch.randn(12, 3, generator=g), _crandn(2, 3, g=g))
    return (lambda: scan_diagonal(a, b, x0)), [a, b, x0]


def _vandermonde():
    from statespaces.kernels.vandermonde import vandermonde

    g = _gen(3)
    log_a = torch.complex(-0.2 * torch.rand(2, 4, generator=g), 2 * torch.randn(2, 4, generator=g))
    coef, log_a = _leaves(_crandn(3, 2, 4, g=g), log_a)
    return (lambda: vandermonde(coef, log_a, 10)), [coef, log_a]


def _zoh_vandermonde():
    from statespaces.kernels.vandermonde import zoh_vandermonde

    g = _gen(4)
    A = torch.complex(-0.5 * torch.rand(2, 4, generator=g), 3 * torch.randn(2, 4, generator=g))
    dt, A, B, C = _leaves(0.01 + 0.1 * torch.rand(2, generator=g), A, _crandn(2, 4, g=g), _crandn(2, 2, 4, g=g))
    return (lambda: zoh_vandermonde(dt, A, B, C, 2.0, 10)), [dt, A, B, C]


def _cauchy():
    from statespaces.kernels.cauchy import cauchy

    g = _gen(5)
    w = torch.complex(-torch.rand(2, 5, generator=g), torch.randn(2, 5, generator=g))
    v, z, w = _leaves(_crandn(2, 5, g=g), 1j * torch.randn(2, 7, generator=g).to(torch.complex64), w)
    return (lambda: cauchy(v, z, w)), [v, z, w]


def _chunked_conv():
    from statespaces.kernels.chunked_conv import ChunkTables, chunked_conv, diagonal_tables

    g = _gen(6)
    H, M, L, T = 2, 2, 40, 32
    log_dA = torch.complex(-0.1 * torch.rand(H, M, generator=g), torch.randn(H, M, generator=g))
    tabs = diagonal_tables(log_dA, _crandn(H, M, g=g), _crandn(H, M, g=g), 2.0, T, L - T, torch.randn(H, generator=g))
    leaves = _leaves(torch.randn(1, L, H, generator=g), torch.randn(1, H, 2 * M, generator=g), *tabs)
    return (lambda: chunked_conv(leaves[0], ChunkTables(*leaves[2:]), leaves[1], True)), leaves


def _dense_system(g, H=2, N=4):
    A = torch.randn(H, N, N, generator=g)
    dA = 0.9 * A / torch.linalg.matrix_norm(A, 2)[:, None, None]
    return dA, torch.randn(H, N, generator=g), torch.randn(H, N, generator=g), torch.randn(H, generator=g)


def _chunked_conv_dense():
    from statespaces.kernels.chunked import chunked_conv_dense

    g = _gen(7)
    leaves = _leaves(torch.randn(1, 40, 2, generator=g), *_dense_system(g), torch.randn(1, 2, 4, generator=g))
    return (lambda: chunked_conv_dense(*leaves, return_state=True)), leaves


def _dense_tables():
    """The tables' own dispatch, as :func:`statespaces.kernels.chunked._chunked_conv_dense_triton` runs it."""
    from statespaces.kernels import chunked as kchunked
    from statespaces.kernels.chunked_conv import _toeplitz

    leaves = _leaves(*_dense_system(_gen(8)))

    def fn():
        if backend.choose("dense_tables", *leaves, dtypes=(torch.float32,)) == "triton":
            out = backend.attempt("dense_tables", kchunked._dense_tables_triton, *leaves)
            if out is not None:
                return out
        taps, w_in, w_out, G, _ = kchunked.dense_tables(*leaves, 32, 32)
        return _toeplitz(taps), w_in, w_out, G

    return fn, leaves


def _dplr_discrete():
    from statespaces.kernels.dplr import bilinear_dplr_system

    g = _gen(9)
    lam = torch.complex(-0.5 - torch.rand(2, 3, generator=g), torch.randn(2, 3, generator=g))
    leaves = _leaves(lam, 0.3 * _crandn(1, 2, 3, g=g), _crandn(2, 3, g=g), 0.1 + 0.2 * torch.rand(2, generator=g))
    return (lambda: bilinear_dplr_system(*leaves)), leaves


def _linoss_scan():
    """The LinOSS layer in scan mode with a state in and out (its fused Triton scan, float64 blocks M, f)."""
    from statespaces.layers.linoss import LinOSS

    torch.manual_seed(0)
    layer = LinOSS(d_model=3, n_oscillators=4, discretization="IMEX", mode="scan", seed=0)
    g = _gen(10)
    x, state = _leaves(torch.randn(1, 9, 3, generator=g), 0.3 * _crandn(1, 2, 4, g=g))
    return (lambda: layer(x, state=state, return_state=True)), [x, state, *layer.parameters()]


CASES = {
    "scan_diagonal": ("scan", _scan_real),
    "scan_diagonal/broadcast": ("scan", _scan_broadcast),
    "vandermonde": ("vandermonde", _vandermonde),
    "zoh_vandermonde": ("vandermonde", _zoh_vandermonde),
    "cauchy": ("cauchy", _cauchy),
    "chunked_conv": ("chunked_conv", _chunked_conv),
    "chunked_conv_dense": ("chunked_dense", _chunked_conv_dense),
    "dense_tables": ("dense_tables", _dense_tables),
    "dplr_discrete": ("dplr_discrete", _dplr_discrete),
    "linoss_scan": ("linoss", _linoss_scan),
}
#: Tolerance against the PyTorch twin's gradients on the same fp32 inputs (max error / max |ref|, see close_scaled).
#: Most twins are re-run on the very inputs; the scan's forcing is rebuilt from its states, chunked_conv_dense's
#: twin runs on the tables of the Triton forward (fp64 inside), the LinOSS twin is a parallel, not chunked, scan.
TOL = {"scan_diagonal": 2e-6, "scan_diagonal/broadcast": 2e-6, "chunked_conv_dense": 2e-6, "chunked_conv": 2e-6,
       "linoss_scan": 2e-6}


@pytest.mark.parametrize("case", list(CASES))
def test_failing_backward_kernel_warns_disables_and_returns_the_twins_gradients(production, monkeypatch, case):
    op, module, build = case.split("/")[0], *CASES[case]
    fn, wrt = build()
    with backend.use_backend("torch"):
        want = _grads(fn(), wrt)
    with launches(monkeypatch, module, fail=False) as forward:
        out = fn()
    assert forward, f"the forward of {op} did not take its Triton kernels"
    with warnings.catch_warnings(record=True) as caught, launches(monkeypatch, module, fail=True) as backward:
        warnings.simplefilter("always")
        got = _grads(out, wrt)
    assert backward, f"no {module} backward kernel was launched"
    fallbacks = [w for w in caught if issubclass(w.category, backend.TritonFallbackWarning)]
    assert len(fallbacks) == 1 and op in str(fallbacks[0].message) and "OutOfResources" in str(fallbacks[0].message)
    assert list(backend.failed_ops()) == [op]
    for name, a, b in zip(range(len(wrt)), got, want):
        assert (a is None) == (b is None), name
        if b is not None:
            assert a.shape == b.shape and a.dtype == b.dtype, name
            close_scaled(a, b, TOL.get(case, 1e-6))


@pytest.mark.parametrize("case", list(CASES))
def test_under_force_triton_a_failing_backward_kernel_raises(production, monkeypatch, case):
    """The kernel tests' mode: errors propagate (from the forward's force_triton block, as the forward's would)."""
    module, build = CASES[case]
    fn, wrt = build()
    with backend.force_triton():
        out = fn()
    with launches(monkeypatch, module, fail=True), pytest.raises(OutOfResources):
        _grads(out, wrt)
    assert backend.failed_ops() == {}


def test_fallback_once_then_pytorch(production, monkeypatch):
    """Two pending backwards: the first failing one warns and falls back, the second takes the twin without
    launching the failed kernels again, and the next forward is PyTorch's. A direct call of the Triton function
    (no dispatch, as the kernel tests make) and a backward run inside force_triton propagate the error."""
    from statespaces.ops.scan import scan_diagonal
    from statespaces.ops.triton.scan import scan_diagonal_triton

    fn, (a, b, x0) = _scan_real()
    want = _grads(scan_diagonal(a.double(), b.double(), x0.double()), [a, b, x0])
    outs = [fn(), fn()]
    with warnings.catch_warnings(record=True) as caught, launches(monkeypatch, "scan", fail=True) as seen:
        warnings.simplefilter("always")
        got = [_grads(o, [a, b, x0]) for o in outs]
    assert len(seen) == 1 and len([w for w in caught if w.category is backend.TritonFallbackWarning]) == 1
    for gs in got:
        for x, y in zip(gs, want):
            close_scaled(x, y, 1e-5)
    with launches(monkeypatch, "scan", fail=True) as seen:
        _grads(fn(), [a, b, x0])
    assert seen == []
    backend._FAILED.clear()
    with launches(monkeypatch, "scan", fail=True), pytest.raises(OutOfResources):
        _grads(scan_diagonal_triton(a, b, x0), [a, b, x0])
    out = fn()
    with backend.force_triton(), launches(monkeypatch, "scan", fail=True), pytest.raises(OutOfResources):
        _grads(out, [a, b, x0])
    assert backend.failed_ops() == {}


def test_a_bug_in_the_backward_falls_back_like_a_forward_one(production, monkeypatch):
    """Not only launch errors: whatever the Triton backward raises (here a TypeError, as a wrong argument in the
    wrapper would) falls back with a warning naming it, as attempt() treats the forward; CUDA out-of-memory is
    re-raised, as there."""
    from statespaces.ops.triton import scan as tscan

    fn, wrt = _scan_real()

    def broken(*args):
        raise TypeError("bad launch argument (simulated)")

    monkeypatch.setattr(tscan, "_scan_backward", broken)
    out = fn()
    with pytest.warns(backend.TritonFallbackWarning, match="scan_diagonal.*TypeError"):
        _grads(out, wrt)
    assert "scan_diagonal" in backend.failed_ops()

    def oom(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    backend._FAILED.clear()
    monkeypatch.setattr(tscan, "_scan_backward", oom)
    out = fn()
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _grads(out, wrt)
    assert backend.failed_ops() == {}


def test_every_triton_autograd_function_has_a_registered_twin():
    """Each autograd Function of the kernel modules has its backward wrapped and a PyTorch twin registered by the
    library's modules (a new Function without one would let its backward's failures escape again)."""
    import importlib
    import inspect
    import pkgutil

    import statespaces  # noqa: F401  (imports the modules of the PyTorch paths, which register the twins)
    import statespaces.ops.triton as pkg

    found = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, torch.autograd.Function) and cls.__module__ == mod.__name__:
                found[name] = cls
    assert set(found) >= {"ScanDiagonalFn", "VandermondeFn", "ZOHVandermondeFn", "CauchyFn", "ChunkedConvFn",
                          "ChunkedDenseFn", "DenseTablesFn", "BilinearDPLRFn", "LinossScanFn"}
    missing = sorted(set(found) - set(backend._TWINS))
    assert not missing, f"no PyTorch twin registered for {missing}"


def test_inputs_the_fused_vandermonde_cannot_take_do_not_switch_triton_off(production):
    """An empty batch (the kernel's grid split divided by zero rows) or a log_a whose rows coef does not broadcast
    over reached the Triton wrapper, failed there, and attempt() then switched the op off for the whole process.
    They now take the PyTorch path directly: the same result, no warning, Triton still chosen afterwards."""
    import warnings

    from statespaces.kernels.vandermonde import vandermonde

    g = torch.Generator().manual_seed(0)
    log_a = torch.complex(-0.2 * torch.rand(3, 4, generator=g), torch.randn(3, 4, generator=g))
    coef = torch.randn(3, 4, dtype=torch.complex64, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vandermonde(coef.expand(0, 3, 4), log_a, 20).shape == (0, 3, 20)
        torch.testing.assert_close(vandermonde(coef, log_a[:1], 20),
                                   vandermonde(coef, log_a[:1].expand(3, 4), 20), atol=1e-5, rtol=1e-5)
    assert not production.failed_ops() and production.choose("vandermonde", coef, log_a,
                                                               dtypes=production.COMPLEX) == "triton"
