"""Triton tables of S4's dense chunked convolution (statespaces.ops.triton.dense_tables), forward and backward, on
CPU under the Triton interpreter. The reference is float64 autograd through the PyTorch tables
(:func:`statespaces.kernels.chunked.dense_tables`, the doubling of ``near_powers``, itself tested against explicit
powers in tests/test_chunked_conv.py) with the Toeplitz gather of the convolution."""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter

from statespaces.kernels.chunked import dense_tables
from statespaces.kernels.chunked_conv import _toeplitz
from statespaces.ops.triton.chunked_dense import CHUNK
from statespaces.ops.triton.dense_tables import dense_tables_triton

patch_triton_interpreter()


def _system(H, N, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(H, N, N, dtype=torch.float64, generator=g)
    dA = 0.97 * A / torch.linalg.matrix_norm(A, 2)[:, None, None]      # stable, not normal
    dB, c = (torch.randn(H, N, dtype=torch.float64, generator=g) for _ in range(2))
    return dA, dB, c, torch.randn(H, dtype=torch.float64, generator=g)


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


def _reference(dA, dB, c, D):
    taps, w_in, w_out, PT, _ = dense_tables(dA, dB, c, D, CHUNK, CHUNK)
    return _toeplitz(taps), w_in, w_out, PT


@pytest.mark.parametrize("N,with_d", [(6, True), (20, False), (64, True)])
def test_tables_and_gradients_equal_float64_autograd(N, with_d):
    """Every table and every gradient (dA, dB, c, D) against float64 autograd; N = 6 and 20 pad the state tile."""
    dA, dB, c, D = _system(3, N, seed=N)
    leaves64 = [t.clone().requires_grad_() for t in (dA, dB, c, D)]
    leaves32 = [t.float().requires_grad_() for t in (dA, dB, c, D)]
    ref = _reference(*leaves64[:3], leaves64[3] if with_d else None)
    out = dense_tables_triton(*leaves32[:3], leaves32[3] if with_d else None)
    assert all(o.dtype == torch.float32 and o.shape == e.shape for o, e in zip(out, ref))
    for name, o, e in zip(("Z", "W_in", "W_out", "dA^T"), out, ref):
        assert _rel(o, e) < 1e-6, name
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(e.shape, dtype=torch.float64, generator=g) for e in ref]
    n = 4 if with_d else 3
    grads64 = torch.autograd.grad(sum((e * w).sum() for e, w in zip(ref, weights)), leaves64[:n])
    grads32 = torch.autograd.grad(sum((o.double() * w).sum() for o, w in zip(out, weights)), leaves32[:n])
    for name, a, b in zip(("dA", "dB", "c", "D"), grads32, grads64):
        assert _rel(a, b) < 2e-6, name


@pytest.mark.parametrize("used", [0, 1, 2, 3])
def test_gradients_of_one_table_alone(used):
    """A loss on a single table: the backward gets None for the others (zeros), and still matches float64."""
    dA, dB, c, D = _system(2, 12, seed=7)
    leaves64 = [t.clone().requires_grad_() for t in (dA, dB, c, D)]
    leaves32 = [t.float().requires_grad_() for t in (dA, dB, c, D)]
    ref = _reference(*leaves64)[used]
    out = dense_tables_triton(*leaves32)[used]
    w = torch.linspace(-1, 1, ref.numel(), dtype=torch.float64).view_as(ref)
    grads64 = torch.autograd.grad((ref * w).sum(), leaves64, allow_unused=True)
    grads32 = torch.autograd.grad((out.double() * w).sum(), leaves32, allow_unused=True)
    for a, b in zip(grads32, grads64):
        if b is None or not b.abs().max() > 0:
            assert a is None or not a.abs().max() > 1e-6
        else:
            assert _rel(a, b) < 2e-6


def test_bad_input_is_refused():
    dA, dB, c, D = (t.float() for t in _system(2, 8, seed=0))
    with pytest.raises(ValueError, match="N <= 64"):
        dense_tables_triton(torch.zeros(2, 65, 65), torch.zeros(2, 65), torch.zeros(2, 65), None)
    with pytest.raises(ValueError, match="float32"):
        dense_tables_triton(dA.double(), dB.double(), c.double(), None)
    with pytest.raises(ValueError, match=r"dB and c \(H, N\)"):
        dense_tables_triton(dA, dB[:1], c, D)
    with pytest.raises(ValueError, match=r"D \(H,\)"):
        dense_tables_triton(dA, dB, c, D[:1])


def test_failing_tables_kernel_warns_once_and_the_pytorch_tables_answer(monkeypatch):
    """The dense chunked convolution on its Triton path with the tables kernel failing: one warning naming the op,
    the PyTorch tables (and the Toeplitz gather) instead, the same output as with the tables kernel."""
    import warnings

    from statespaces import backend
    from statespaces.kernels import chunked as kchunked

    dA, dB, c, D = (t.float() for t in _system(2, 6, seed=5))
    u = torch.randn(2, 45, 2)                                          # 45 = 32 + 13: a short last chunk
    monkeypatch.setattr(backend, "_FAILED", {})
    monkeypatch.setattr(backend, "_WARNED", set())
    monkeypatch.setattr(backend, "choose", lambda op, *t, **k: "triton")     # as for CUDA tensors
    y_kernel, s_kernel = kchunked.chunked_conv_dense(u, dA, dB, c, D, None, True)

    def broken(*a):
        raise RuntimeError("simulated launch failure")

    monkeypatch.setattr(kchunked, "_dense_tables_triton", broken)
    with pytest.warns(backend.TritonFallbackWarning, match="dense_tables.*simulated"):
        y, s = kchunked.chunked_conv_dense(u, dA, dB, c, D, None, True)
    assert "dense_tables" in backend.failed_ops() and "chunked_conv_dense" not in backend.failed_ops()
    assert _rel(y, y_kernel) < 1e-5 and _rel(s, s_kernel) < 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kchunked.chunked_conv_dense(u, dA, dB, c, D)
