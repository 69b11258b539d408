"""The dispatch rules and the CPU fast paths behind them (no Triton needed).

* importing and running the library on CPU never imports ``triton``;
* CPU tensors go to the PyTorch paths, whose hand-written backwards (FFT convolution,
  blocked Vandermonde) are gradchecked here in float64.
"""
import subprocess
import sys

import pytest
import torch

from statespaces.kernels import dispatch, vandermonde, vandermonde_naive
from statespaces.ops import fftconv


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


def test_use_triton_rules(monkeypatch):
    x = torch.randn(3)
    assert not dispatch.use_triton(x)
    assert not dispatch.use_triton(x.double())
    monkeypatch.setattr(dispatch, "FORCE_TRITON", True)
    monkeypatch.setattr(dispatch, "_TRITON_OK", True)
    assert dispatch.use_triton(x, None)
    assert not dispatch.use_triton(x.double()), "float64 always takes the PyTorch path"
    monkeypatch.setenv("STATESPACES_NO_TRITON", "1")
    assert not dispatch.use_triton(x)


def test_dispatch_falls_back_when_triton_is_missing(monkeypatch):
    monkeypatch.setattr(dispatch, "_TRITON_OK", False)
    monkeypatch.setattr(dispatch, "FORCE_TRITON", True)
    g = torch.Generator().manual_seed(0)
    log_a = torch.complex(-torch.rand(2, 3, generator=g), torch.randn(2, 3, generator=g))
    coef = torch.randn(2, 3, dtype=torch.complex64, generator=g)
    torch.testing.assert_close(vandermonde(coef, log_a, 10), vandermonde_naive(coef, log_a, 10), atol=1e-5, rtol=1e-5)
    a, b = torch.rand(4, 2), torch.randn(3, 4, 2)
    from statespaces.ops.scan import scan_loop

    torch.testing.assert_close(dispatch.scan_diagonal(a, b), scan_loop(a, b), atol=1e-5, rtol=1e-5)


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
