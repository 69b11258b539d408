"""The dispatch rules and the CPU fast paths behind them (no Triton needed).

* importing and running the library on CPU never imports ``triton``;
* CPU tensors go to the PyTorch paths, whose hand-written backwards (FFT convolution,
  blocked Vandermonde) are gradchecked here in float64.
"""
import importlib
import os
import subprocess
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")   # before triton is imported: one test forces the Triton path

import pytest  # noqa: E402
import torch  # noqa: E402

import warnings  # noqa: E402

from statespaces import backend  # noqa: E402
from statespaces.kernels import dispatch, vandermonde, vandermonde_naive  # noqa: E402
from statespaces.ops import fftconv  # noqa: E402


def test_cpu_run_does_not_import_triton():
    code = (
        "import sys, torch\n"
        "from statespaces import S4D\n"
        "from statespaces.kernels import dispatch\n"
        "layer = S4D(4, 8)\n"
        "layer(torch.randn(2, 16, 4)).sum().backward()\n"
        "dispatch.scan_diagonal(torch.rand(3, 5), torch.randn(2, 3, 5))\n"
        "assert not dispatch.use_triton(torch.randn(2))\n"
        "assert 'triton' not in sys.modules, 'triton imported on a CPU-only run'\n"
    )
    r = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def fresh_policy(monkeypatch):
    """The backend's process-wide state (failed ops, warn-once keys, import result), isolated."""
    monkeypatch.setattr(backend, "_FAILED", {})
    monkeypatch.setattr(backend, "_WARNED", set())
    monkeypatch.setattr(backend, "_BACKEND", "auto")
    return backend


def test_use_triton_rules(monkeypatch, fresh_policy):
    x = torch.randn(3)
    assert not dispatch.use_triton(x)
    assert not dispatch.use_triton(x.double())
    monkeypatch.setattr(backend, "FORCE_TRITON", True)
    monkeypatch.setattr(backend, "_TRITON_OK", True)
    assert dispatch.use_triton(x, None)
    assert not dispatch.use_triton(x.double()), "float64 always takes the PyTorch path"
    with backend.use_backend("torch"):
        assert not dispatch.use_triton(x)
    with backend.use_backend("ref"):
        assert backend.choose("vandermonde", x) == "ref"
    monkeypatch.setenv("STATESPACES_NO_TRITON", "1")
    assert not dispatch.use_triton(x)


def test_dispatch_falls_back_when_triton_is_missing(monkeypatch, fresh_policy):
    monkeypatch.setattr(backend, "_TRITON_OK", False)
    monkeypatch.setattr(backend, "_TRITON_ERROR", ImportError("no triton here"))
    monkeypatch.setattr(backend, "FORCE_TRITON", True)
    g = torch.Generator().manual_seed(0)
    log_a = torch.complex(-torch.rand(2, 3, generator=g), torch.randn(2, 3, generator=g))
    coef = torch.randn(2, 3, dtype=torch.complex64, generator=g)
    with pytest.warns(backend.TritonFallbackWarning, match="triton failed to import"):
        out = vandermonde(coef, log_a, 10)
    torch.testing.assert_close(out, vandermonde_naive(coef, log_a, 10), atol=1e-5, rtol=1e-5)
    a, b = torch.rand(4, 2), torch.randn(3, 4, 2)
    from statespaces.ops.scan import scan_loop

    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # warned once already: silent now
        torch.testing.assert_close(dispatch.scan_diagonal(a, b), scan_loop(a, b), atol=1e-5, rtol=1e-5)


def test_selector_routes_every_op(monkeypatch, fresh_policy):
    """"ref" runs each op's <op>_ref twin, "torch" and "auto" (CPU) the PyTorch path."""
    kc, kv, sc = (importlib.import_module(m) for m in (   # (the packages re-export same-named functions)
        "statespaces.kernels.cauchy", "statespaces.kernels.vandermonde", "statespaces.ops.scan"))
    calls = []
    for mod, name in ((kv, "vandermonde_ref"), (kc, "cauchy_ref"), (sc, "scan_diagonal_ref"),
                      (sc, "scan_block2_ref"), (dispatch, "diagonal_step_ref")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    coef, log_a = torch.randn(2, 3, dtype=torch.complex64), torch.complex(-torch.rand(2, 3), torch.randn(2, 3))
    v, z, w = torch.randn(2, 4, dtype=torch.complex64), torch.randn(2, 5, dtype=torch.complex64), torch.randn(2, 4, dtype=torch.complex64)
    a, b = torch.rand(6, 3), torch.randn(2, 6, 3)
    M, F = torch.rand(6, 2, 2, 3) * 0.5, torch.randn(6, 2, 3)
    dA, dB, Cc = (torch.randn(2, 3, dtype=torch.complex64) for _ in range(3))
    step_args = (dA, dB, Cc, torch.randn(2), torch.randn(4, 2), torch.zeros(4, 2, 3, dtype=torch.complex64))

    def run_all():
        return [kv.vandermonde(coef, log_a, 7), kc.cauchy(v, z, w), sc.scan_diagonal(a, b), sc.scan_block2(M, F),
                dispatch.diagonal_step(*step_args)[0]]

    fast = run_all()
    assert calls == ["diagonal_step_ref"], "auto on CPU: PyTorch paths (the step's PyTorch path is its twin)"
    calls.clear()
    with backend.use_backend("torch"):
        run_all()
    assert calls == ["diagonal_step_ref"]
    calls.clear()
    with backend.use_backend("ref"):
        ref = run_all()
    assert calls == ["vandermonde_ref", "cauchy_ref", "scan_diagonal_ref", "scan_block2_ref", "diagonal_step_ref"]
    assert backend.get_backend() == "auto"
    for x, y in zip(fast, ref):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.set_backend("cuda")


def test_failed_kernel_warns_once_and_falls_back(monkeypatch, fresh_policy):
    """A Triton path that raises (import, compile, launch) warns once, then that op stays on PyTorch."""
    kv = importlib.import_module("statespaces.kernels.vandermonde")
    monkeypatch.setattr(backend, "_TRITON_OK", True)
    monkeypatch.setattr(backend, "choose", lambda op, *t, **k: "triton")     # as for CUDA tensors
    attempts = []

    def broken(*args):
        attempts.append(1)
        raise RuntimeError("PTXASError: ptxas failed (simulated)")

    monkeypatch.setattr(kv, "_vandermonde_triton", broken)
    coef, log_a = torch.randn(2, 3, dtype=torch.complex64), torch.complex(-torch.rand(2, 3), torch.randn(2, 3))
    with pytest.warns(backend.TritonFallbackWarning, match="vandermonde.*PTXASError"):
        out = kv.vandermonde(coef, log_a, 9)
    torch.testing.assert_close(out, kv._vandermonde_torch(coef, log_a, 9))
    assert "vandermonde" in backend.failed_ops()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kv.vandermonde(coef, log_a, 9)                  # warned once only
    assert len(attempts) == 2                           # (choose is patched: a real one stops asking)
    monkeypatch.undo()
    # under force_triton (tests) kernel errors propagate instead of falling back
    monkeypatch.setattr(backend, "_FAILED", {})
    monkeypatch.setattr(backend, "_TRITON_OK", True)
    monkeypatch.setattr(kv, "_vandermonde_triton", broken)
    with backend.force_triton(), pytest.raises(RuntimeError, match="simulated"):
        kv.vandermonde(coef, log_a, 9)


def test_out_of_memory_is_not_a_fallback(monkeypatch, fresh_policy):
    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        backend.attempt("x", oom)
    assert "x" not in backend.failed_ops()


# ---- CPU fast paths: hand-written backwards ------------------------------------------------------
@pytest.mark.parametrize("L,Lk,bidirectional", [(1, 1, False), (7, 7, False), (9, 4, False), (12, 30, False), (6, 6, True)])
def test_fftconv_gradcheck(L, Lk, bidirectional):
    u = torch.randn(2, L, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(*((2,) if bidirectional else ()), 3, Lk, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fftconv(a, b, bidirectional), (u, k))


def test_fftconv_grad_paths_agree_with_no_grad_path():
    u = torch.randn(2, 33, 3, dtype=torch.float64)
    k = torch.randn(3, 33, dtype=torch.float64)
    y0 = fftconv(u, k)
    y1 = fftconv(u.requires_grad_(), k)                # only u needs a gradient
    y2 = fftconv(u.detach(), k.requires_grad_())       # only k
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(y2, y0)
    y2.sum().backward()
    assert k.grad is not None and k.grad.shape == k.shape


def test_vandermonde_custom_backward_batched_gradcheck():
    g = torch.Generator().manual_seed(3)
    log_a = torch.complex(-0.3 * torch.rand(2, 3, dtype=torch.float64, generator=g), 2 * torch.randn(2, 3, dtype=torch.float64, generator=g))
    coef = torch.randn(4, 2, 3, dtype=torch.complex128, generator=g)
    log_a.requires_grad_(True)
    coef.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c, w: vandermonde(c, w, 13), (coef, log_a))
    c1 = coef[:1].detach().clone().requires_grad_(True)  # broadcast coefficient (1, H, N)
    assert torch.autograd.gradcheck(lambda c, w: vandermonde(c, w, 5), (c1, log_a))
