"""Triton dense chunked convolution (statespaces.ops.triton.chunked_dense: S4's real N x N transition),
forward and backward, on CPU under the Triton interpreter (tiny shapes; small row blocks so that a short
sequence spans several programs of every kernel, a partial last chunk and masked state widths). The
reference is float64 autograd through the PyTorch dense chunked path, itself tested against the explicit
recurrence and the FFT route in float64 (tests/test_chunked_conv.py). The dispatch tests need no Triton
kernel to run: CPU keeps PyTorch, and a failing kernel warns once and falls back."""
import os

os.environ["TRITON_INTERPRET"] = "1"

import warnings

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter

from statespaces import backend
from statespaces.kernels import chunked as kchunked
from statespaces.kernels.chunked import _chunked_conv_dense_torch, chunked_conv_dense, dense_tables
from statespaces.kernels.chunked_conv import prefer_chunked
from statespaces.ops.triton import chunked_dense as tdense

patch_triton_interpreter()


@pytest.fixture
def small_blocks(monkeypatch):
    """2 batch rows per sequential program, 4 chunk rows per parallel one, at most 2 gradient programs."""
    monkeypatch.setattr(tdense, "BLOCK_B", 2)
    monkeypatch.setattr(tdense, "BLOCK_R", 4)
    monkeypatch.setattr(tdense, "GRAD_PROGRAMS", 2)
    monkeypatch.setattr(tdense, "ROW_PROGRAMS", 2)


def _system(H, N, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(H, N, N, dtype=torch.float64, generator=g)
    dA = 0.97 * A / torch.linalg.matrix_norm(A, 2)[:, None, None]      # stable, not normal
    dB, c = torch.randn(H, N, dtype=torch.float64, generator=g), torch.randn(H, N, dtype=torch.float64, generator=g)
    return dA, dB, c, torch.randn(H, dtype=torch.float64, generator=g)


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


def _loss(out, stateful, L):
    """A loss whose gradient varies along the sequence and reaches the final state."""
    w = torch.cos(0.3 * torch.arange(L, dtype=torch.float64))[None, :, None]
    if stateful:
        y, s = out
        return (y.double() * w).sum() + (s.double() * torch.linspace(-1, 2, s.shape[-1], dtype=torch.float64)).sum()
    return (out.double() * w).sum()


@pytest.mark.slow
@pytest.mark.parametrize("stateful,N", [(False, 6), (True, 6), (True, 20)])
def test_triton_dense_equals_float64_autograd(small_blocks, monkeypatch, stateful, N):
    """Output, final state, du, dx0 and the gradients of dA, dB, c, D through the five kernels equal float64
    autograd through the PyTorch path (B=3 in 2 batch blocks, L=150: 5 chunks of 32, the last of 22 steps;
    N=6 and 20 masked in 16- and 32-wide tiles); the PyTorch path is never called on the Triton side."""
    H, B, L = 2, 3, 150
    sys64 = _system(H, N, 1)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(B, L, H, dtype=torch.float64, generator=g)
    x0 = torch.randn(B, H, N, dtype=torch.float64, generator=g)
    leaves64 = [t.clone().requires_grad_() for t in (u, *sys64, x0)]
    out64 = _chunked_conv_dense_torch(*leaves64[:5], leaves64[5] if stateful else None, stateful, 32)
    g64 = torch.autograd.grad(_loss(out64, stateful, L), leaves64, allow_unused=True)

    def no_torch_path(*a, **k):
        raise AssertionError("the Triton path must not fall back to the PyTorch dense path")

    monkeypatch.setattr(kchunked, "_chunked_conv_dense_torch", no_torch_path)
    leaves = [t.float().clone().requires_grad_() for t in (u, *sys64, x0)]
    with backend.force_triton():
        out = chunked_conv_dense(*leaves[:5], leaves[5] if stateful else None, stateful)
    got = torch.autograd.grad(_loss(out, stateful, L), leaves, allow_unused=True)
    outs, refs = (out, out64) if stateful else ((out,), (out64,))
    for a, b in zip(outs, refs):
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert _rel(a, b) < 1e-5
    for name, a, b in zip(("u", "dA", "dB", "c", "D", "x0"), got, g64):
        if name == "x0" and not stateful:
            assert a is None and b is None
            continue
        assert a.shape == b.shape, name
        assert _rel(a, b) < 1e-5, (name, _rel(a, b))


def test_segmented_sequential_kernels_equal_float64_autograd(small_blocks, monkeypatch):
    """The carry and adjoint kernels cut into segments (local ends, Horner chains over the segments before /
    after, then each segment): L = 300 is 10 chunks, segments of 4, 4 and 2 chunks; with an initial state and
    the final state, every output and gradient against float64 autograd through the PyTorch path."""
    monkeypatch.setattr(tdense, "MIN_SEGMENT", 1)
    assert tdense.segments(10, 4) == (4, 3)
    H, B, L, N = 2, 3, 300, 6
    sys64 = _system(H, N, 4)
    g = torch.Generator().manual_seed(5)
    u = torch.randn(B, L, H, dtype=torch.float64, generator=g)
    x0 = torch.randn(B, H, N, dtype=torch.float64, generator=g)
    leaves64 = [t.clone().requires_grad_() for t in (u, *sys64, x0)]
    out64 = _chunked_conv_dense_torch(*leaves64[:5], leaves64[5], True, 32)
    g64 = torch.autograd.grad(_loss(out64, True, L), leaves64)
    leaves = [t.float().clone().requires_grad_() for t in (u, *sys64, x0)]
    with backend.force_triton():
        out = chunked_conv_dense(*leaves[:5], leaves[5], True)
    got = torch.autograd.grad(_loss(out, True, L), leaves)
    for a, b in zip(out, out64):
        assert _rel(a, b) < 1e-5
    for name, a, b in zip(("u", "dA", "dB", "c", "D", "x0"), got, g64):
        assert _rel(a, b) < 1e-5, (name, _rel(a, b))


@pytest.mark.parametrize("triton_path", [False, True])
def test_bidirectional_chunked_equals_the_two_sided_fft(small_blocks, triton_path):
    """The two directions as one chunked pass over 2H channels (causal half, and the time-reversed input's causal
    convolution reversed back and delayed one step) against the FFT convolution with the two-sided kernel of
    the explicit powers (float64 reference; the Triton path in float32, with the kernels forced)."""
    from statespaces.kernels.chunked import chunked_conv_dense_bidirectional, power_kernel_ref
    from statespaces.ops.fftconv import fftconv

    H, B, L, N = 3, 2, 75, 6
    dA, dB, c0, D = _system(H, N, 8)
    c1 = torch.randn(H, N, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    u = torch.randn(B, L, H, dtype=torch.float64)
    k = torch.stack([power_kernel_ref(dA, dB, c0, L), power_kernel_ref(dA, dB, c1, L)])
    ref = fftconv(u, k, bidirectional=True) + D * u
    args = (u, dA, dB, torch.stack([c0, c1]), D)
    if triton_path:
        with backend.force_triton():
            y = chunked_conv_dense_bidirectional(*(t.float() for t in args))
        assert y.dtype == torch.float32 and _rel(y, ref) < 1e-5
    else:
        assert _rel(chunked_conv_dense_bidirectional(*args), ref) < 1e-12
    with pytest.raises(ValueError, match=r"chunked_conv_dense_bidirectional: expected .* c \(2, H, N\)"):
        chunked_conv_dense_bidirectional(u, dA, dB, c0, D)
    with pytest.raises(ValueError, match=r"chunked_conv_dense_bidirectional: expected u \(B, L, H\)"):
        chunked_conv_dense_bidirectional(u[..., :2], dA, dB, torch.stack([c0, c1]), D)
    with pytest.raises(ValueError, match=r"chunked_conv_dense: expected .* x0 \(B, H, N\)"):
        kchunked.chunked_conv_dense(u, dA, dB, c0, D, torch.zeros(B + 1, H, N, dtype=torch.float64), True)


def test_segment_rule():
    """One segment with many programs or a short sequence; else about sqrt(n) chunks per segment."""
    assert tdense.segments(2048, 4096) == (2048, 1)                     # B = 256 rows x 256 channels
    assert tdense.segments(20, 16) == (20, 1)                           # too short to cut
    assert tdense.segments(2048, 256) == (64, 32)                       # B = 1, H = 256, L = 65536
    assert tdense.segments(128, 256) == (16, 8)                         # B = 16, H = 256, L = 4096
    KS, S = tdense.segments(1000, 8)
    assert KS * (S - 1) < 1000 <= KS * S


def test_triton_dense_input_gradient_only_and_short_sequence(small_blocks):
    """Tables without gradient (the du-only backward) and a sequence shorter than one chunk (L=7: n=1,
    r=7), with the final state: against float64 autograd."""
    H, B, L, N = 3, 2, 7, 4
    dA, dB, c, D = _system(H, N, 3)
    u = torch.randn(B, L, H, dtype=torch.float64)
    x0 = torch.randn(B, H, N, dtype=torch.float64)
    uu, xx = u.clone().requires_grad_(), x0.clone().requires_grad_()
    ref = _chunked_conv_dense_torch(uu, dA, dB, c, D, xx, True, 32)
    g64 = torch.autograd.grad(_loss(ref, True, L), [uu, xx])
    uf, xf = u.float().requires_grad_(), x0.float().requires_grad_()
    with backend.force_triton():
        out = chunked_conv_dense(uf, dA.float(), dB.float(), c.float(), D.float(), xf, True)
    got = torch.autograd.grad(_loss(out, True, L), [uf, xf])
    assert _rel(out[0], ref[0]) < 1e-5 and _rel(out[1], ref[1]) < 1e-5
    assert _rel(got[0], g64[0]) < 1e-5 and _rel(got[1], g64[1]) < 1e-5


def test_dense_tables_equal_the_powers():
    """The tables the kernels read, against explicit matrix powers in float64 (r < T and r = T)."""
    H, N, T = 2, 5, 8
    dA, dB, c, D = _system(H, N, 4)
    P = [torch.eye(N, dtype=torch.float64).expand(H, N, N)]
    for _ in range(T):
        P.append(dA @ P[-1])
    for r in (3, T):
        taps, w_in, w_out, PT, Pr = dense_tables(dA, dB, c, D, T, r)
        pb = torch.stack([(Pj @ dB[..., None])[..., 0] for Pj in P], 1)        # (H, T+1, N): dA^j dB
        k = (pb[:, :T] * c[:, None]).sum(-1)
        k[:, 0] += D
        torch.testing.assert_close(taps, k, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(w_in, pb[:, :T].flip(1), rtol=1e-12, atol=1e-12)
        wo = torch.stack([(c[:, None, :] @ P[t + 1])[:, 0] for t in range(T)], 1)
        torch.testing.assert_close(w_out, wo, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(PT, P[T], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(Pr, P[r], rtol=1e-12, atol=1e-12)


def test_cpu_keeps_the_pytorch_dense_path(monkeypatch):
    """Without force_triton a CPU call never reaches the Triton kernels, and the dense rule on CPU is
    unchanged; the Triton rule asks for the state size and refuses one that the kernels do not hold."""
    def no_triton(*a, **k):
        raise AssertionError("CPU tensors must keep the PyTorch dense path")

    monkeypatch.setattr(kchunked, "_chunked_conv_dense_triton", no_triton)
    dA, dB, c, D = (t.float() for t in _system(2, 4, 5))
    y = chunked_conv_dense(torch.randn(1, 40, 2), dA, dB, c, D)
    assert y.shape == (1, 40, 2)
    u = torch.zeros(1, 64, 2)
    assert prefer_chunked(u, stateful=True, dense=True)                   # CPU: stateful calls are chunked,
    assert not prefer_chunked(u, stateful=False, dense=True)              # stateless ones take the FFT
    monkeypatch.setattr(backend, "_TRITON_OK", True)
    with backend.force_triton():
        assert prefer_chunked(u, stateful=False, dense=True, modes=tdense.MAX_N)
        assert not prefer_chunked(u, stateful=False, dense=True, modes=tdense.MAX_N + 2)
        assert not prefer_chunked(u, stateful=True, dense=True)           # state size unknown: the FFT


def test_failing_dense_kernel_warns_once_and_falls_back(monkeypatch):
    """A Triton failure (compile, launch) warns once, names the op, and the PyTorch path answers."""
    monkeypatch.setattr(backend, "_FAILED", {})
    monkeypatch.setattr(backend, "_WARNED", set())
    monkeypatch.setattr(backend, "_BACKEND", "auto")
    monkeypatch.setattr(backend, "_TRITON_OK", True)
    monkeypatch.setattr(backend, "choose", lambda op, *t, **k: "triton")     # as for CUDA tensors

    def broken(*a, **k):
        raise RuntimeError("PTXASError: ptxas failed (simulated)")

    monkeypatch.setattr(kchunked, "_chunked_conv_dense_triton", broken)
    dA, dB, c, D = (t.float() for t in _system(2, 4, 6))
    u = torch.randn(2, 45, 2)
    with pytest.warns(backend.TritonFallbackWarning, match="chunked_conv_dense.*PTXASError"):
        y = chunked_conv_dense(u, dA, dB, c, D)
    torch.testing.assert_close(y, _chunked_conv_dense_torch(u, dA, dB, c, D, None, False, kchunked.CHUNK))
    assert "chunked_conv_dense" in backend.failed_ops()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chunked_conv_dense(u, dA, dB, c, D)


@pytest.mark.slow
@pytest.mark.parametrize("stateful,bidirectional", [(False, False), (True, False), (False, True)])
def test_s4_layer_takes_the_triton_dense_path(small_blocks, monkeypatch, stateful, bidirectional):
    """An S4 layer with the Triton kernels forced (as on CUDA): the rule sends stateless, stateful and
    bidirectional calls to the dense chunked form, which runs the Triton kernels (never the FFT nor the PyTorch
    dense path); output, state and every gradient equal the float64 layer (CPU: the PyTorch dense path,
    stateless: the FFT)."""
    import copy

    import statespaces.layers.base as base
    from statespaces import S4

    torch.manual_seed(7)
    layer = S4(2, 8, init="legs", seed=3, bidirectional=bidirectional)
    ref = copy.deepcopy(layer).double()
    x = torch.randn(3, 45, 2)
    s0 = layer.initial_state(3) + torch.randn(3, 2, 4, dtype=torch.complex64) if stateful else None

    def run(m, xx, ss):
        out = m(xx, state=ss, return_state=stateful)
        y, s = out if stateful else (out, None)
        loss = (y.double() * torch.cos(0.2 * torch.arange(45, dtype=torch.float64))[:, None]).sum()
        if s is not None:
            loss = loss + torch.view_as_real(s).double().sum()
        loss.backward()
        return y, s

    x64 = x.double().requires_grad_()
    y64, s64 = run(ref, x64, None if s0 is None else s0.to(torch.complex128))

    def forbidden(*a, **k):
        raise AssertionError("with the Triton kernels forced, S4 must take the Triton dense chunked path")

    monkeypatch.setattr(base, "fftconv", forbidden)
    monkeypatch.setattr(kchunked, "_chunked_conv_dense_torch", forbidden)
    monkeypatch.setattr(backend, "_TRITON_OK", True)
    xx = x.clone().requires_grad_()
    with backend.force_triton():
        y, s = run(layer, xx, s0)
    assert _rel(y, y64) < 1e-5 and _rel(xx.grad, x64.grad) < 1e-4
    if stateful:
        assert _rel(torch.view_as_real(s), torch.view_as_real(s64)) < 1e-5
    for (name, p), p64 in zip(layer.named_parameters(), ref.parameters()):
        assert _rel(p.grad, p64.grad) < 1e-4, name
