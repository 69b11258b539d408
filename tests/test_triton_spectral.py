"""The FFT convolution's backward spectral products in one Triton pass (statespaces.ops.triton.spectral) under the
interpreter: the kernel against the PyTorch products, and the convolution's gradients through it against float64
autograd (the whole-tensor CUDA schedule, forced on CPU), causal and bidirectional; a failing kernel falls back."""
import importlib
import os
import warnings

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter  # noqa: E402

from statespaces import backend  # noqa: E402
from statespaces.ops.triton import spectral  # noqa: E402

patch_triton_interpreter()
fft_mod = importlib.import_module("statespaces.ops.fftconv")    # the package exports a function of that name


def _c(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


@pytest.mark.parametrize("need_u,need_k", [(True, True), (True, False), (False, True)])
def test_kernel_equals_the_pytorch_products(monkeypatch, need_u, need_k):
    """F = 300 spans two frequency blocks of 256 (the second masked); B = 3 accumulates over the batch."""
    G, Xc, K = _c(3, 5, 300, seed=0), _c(3, 5, 300, seed=1), _c(5, 300, seed=2)
    P_ref = (G * Xc).sum(0)
    G_ref = G * K.conj() if need_u else G.clone()
    Gk = G.clone()
    P = spectral.spectral_backward_triton(Gk, Xc if need_k else None, K, need_u)
    assert torch.allclose(Gk, G_ref, rtol=1e-6, atol=1e-6)
    if need_k:
        assert torch.allclose(P, P_ref, rtol=1e-5, atol=1e-5)
    else:
        assert P is None
    with pytest.raises(ValueError, match="complex64"):
        spectral.spectral_backward_triton(G.to(torch.complex128), None, K, True)
    with pytest.raises(ValueError, match=r"G \(B, H, F\)"):                 # not 3-D: named, not an unpacking error
        spectral.spectral_backward_triton(G[0], None, K, True)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fftconv_gradients_through_the_fused_pass(monkeypatch, bidirectional):
    """fftconv forward and backward on the whole-tensor schedule with the kernel forced: du and dk against float64
    autograd through the CPU schedule; the fused pass runs (counted)."""
    B, L, H = 3, 40, 4
    g = torch.Generator().manual_seed(3)
    u = torch.randn(B, L, H, dtype=torch.float64, generator=g)
    k = torch.randn(*((2, H, L) if bidirectional else (H, L)), dtype=torch.float64, generator=g)
    w = torch.randn(B, L, H, dtype=torch.float64, generator=g)
    u64, k64 = u.clone().requires_grad_(), k.clone().requires_grad_()
    ref = torch.autograd.grad((fft_mod.fftconv(u64, k64, bidirectional) * w).sum(), (u64, k64))
    calls = []
    real = spectral.spectral_backward_triton
    monkeypatch.setattr(spectral, "spectral_backward_triton", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(fft_mod, "_grouped", lambda t: False)
    u32, k32 = u.float().requires_grad_(), k.float().requires_grad_()
    with backend.force_triton():
        y = fft_mod.fftconv(u32, k32, bidirectional)
        got = torch.autograd.grad((y.double() * w).sum(), (u32, k32))
    assert calls == [1]
    for a, b in zip(got, ref):
        assert float((a.double() - b).abs().max() / b.abs().max()) < 1e-5


def test_failing_kernel_warns_once_and_the_pytorch_products_answer(monkeypatch):
    B, L, H = 2, 30, 3
    u, k = torch.randn(B, L, H, requires_grad=True), torch.randn(H, L, requires_grad=True)
    monkeypatch.setattr(fft_mod, "_grouped", lambda t: False)
    ref = torch.autograd.grad(fft_mod.fftconv(u, k).square().sum(), (u, k))

    def broken(*a):
        raise RuntimeError("simulated compile failure")

    monkeypatch.setattr(fft_mod, "_spectral_triton", broken)
    monkeypatch.setattr(backend, "_FAILED", {})
    monkeypatch.setattr(backend, "_WARNED", set())
    monkeypatch.setattr(backend, "choose", lambda op, *t, **kw: "triton" if op == "fftconv_spectral" else "torch")
    with pytest.warns(backend.TritonFallbackWarning, match="fftconv_spectral.*simulated"):
        got = torch.autograd.grad(fft_mod.fftconv(u, k).square().sum(), (u, k))
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, ref))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.autograd.grad(fft_mod.fftconv(u, k).square().sum(), (u, k))
