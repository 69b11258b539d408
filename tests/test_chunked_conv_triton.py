"""Triton chunked convolution (statespaces.ops.triton.chunked_conv) vs the PyTorch implementation,
on CPU under the Triton interpreter (tiny shapes, blocks of 4 chunks so that a short sequence spans
several blocks and a partial last chunk). The PyTorch implementation is itself tested in float64
against the FFT convolution and the recurrence (tests/test_chunked_conv.py)."""
import copy
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter

from statespaces import S4D, LinOSS, backend
from statespaces.kernels.chunked_conv import (
    chunked_conv,
    chunked_conv_torch,
    diagonal_tables,
)
from statespaces.ops.triton import chunked_conv as tchunk

patch_triton_interpreter()

pytestmark = pytest.mark.slow          # the interpreter: 5-20 s per test on 2 shared cores


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(tchunk, "BLOCK_C", 4)


def _rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("stateful", [False, True])
def test_kernel_matches_torch(small_blocks, stateful):
    torch.manual_seed(0)
    H, M, B, L, T = 2, 3, 1, 150, 32                   # 5 chunks, the last one of 22 steps: two blocks
    log_dA = torch.complex(-torch.rand(H, M) * 0.1, torch.randn(H, M))
    dB, C = torch.randn(H, M, dtype=torch.complex64), torch.randn(H, M, dtype=torch.complex64)
    tabs = diagonal_tables(log_dA, dB, C, 2.0, T, L - 4 * T, torch.randn(H))
    u = torch.randn(B, L, H)
    s0 = torch.randn(B, H, 2 * M) if stateful else None
    ref = chunked_conv_torch(u, tabs, s0, stateful)
    with backend.force_triton():
        out = chunked_conv(u, tabs, s0, stateful)
    if stateful:
        assert out[1].shape == ref[1].shape
        assert _rel(out[1], ref[1]) < 1e-5
        out, ref = out[0], ref[0]
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert _rel(out, ref) < 1e-5


def test_s4d_layer_forward_backward(small_blocks):
    torch.manual_seed(1)
    layer = S4D(2, 4)
    ref = copy.deepcopy(layer).double()
    x = torch.randn(1, 70, 2, requires_grad=True)
    s0 = layer.initial_state(1) + torch.randn(1, 2, 2, dtype=torch.complex64)
    with backend.force_triton():
        y, s = layer(x, state=s0, return_state=True)
        (y.square().sum() + s.abs().sum()).backward()
    x64 = x.detach().double().requires_grad_()
    y64, s64 = ref(x64, state=s0.to(torch.complex128), return_state=True)   # the PyTorch chunked path, float64
    (y64.square().sum() + s64.abs().sum()).backward()
    assert _rel(y, y64) < 1e-5 and _rel(torch.view_as_real(s), torch.view_as_real(s64)) < 1e-5
    assert _rel(x.grad, x64.grad) < 1e-4
    for (name, p), p64 in zip(layer.named_parameters(), ref.parameters()):
        assert _rel(p.grad, p64.grad) < 1e-4, name


def test_linoss_chunked_mode(small_blocks):
    torch.manual_seed(2)
    m = LinOSS(2, 2)
    x = torch.randn(1, 40, 2)
    with torch.no_grad():
        with backend.force_triton():
            y = m(x, mode="chunked")
        ref = copy.deepcopy(m).double()(x.double(), mode="loop")
    assert _rel(y, ref) < 1e-5
