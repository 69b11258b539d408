"""The Triton wrappers take strided views and strided upstream gradients (a mutation audit of the kernels found
every index and mask checked, but no test handing a wrapper a non-contiguous tensor: without its ``contiguous()``
each kernel read the wrong elements, by up to 847 in value, or NaN for the expanded gradient of ``out.sum()``).

Run by the Triton interpreter on CPU, as tests/test_triton.py. Each wrapper copies what is not contiguous, so the
results on a view must equal, bit for bit, those on a contiguous tensor with the same values. Also: the diagonal
scan with three batch dimensions that cannot be merged (the kernel's 3-D batch index), against float64.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter  # noqa: E402

from statespaces import backend  # noqa: E402
from statespaces.kernels import oscillator  # noqa: E402
from statespaces.kernels.chunked_conv import chunked_conv, diagonal_tables  # noqa: E402
from statespaces.kernels.oscillator import oscillator_transition  # noqa: E402
from statespaces.ops.scan import scan_loop  # noqa: E402
from statespaces.ops.triton import dense_tables as tdt  # noqa: E402
from statespaces.ops.triton import dplr_step as tds  # noqa: E402
from statespaces.ops.triton import linoss as tlin  # noqa: E402
from statespaces.ops.triton import oscillator_step as tos  # noqa: E402
from statespaces.ops.triton import scan as tscan  # noqa: E402
from statespaces.ops.triton import vandermonde as tv  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
patch_triton_interpreter()


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as a non-contiguous view (last two dimensions swapped in memory)."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def every_other(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The same values as a view with stride 2 along ``dim``."""
    shape = list(t.shape)
    shape[dim] *= 2
    buf = torch.zeros(shape, dtype=t.dtype)
    index = [slice(None)] * t.dim()
    index[dim] = slice(None, None, 2)
    buf[tuple(index)] = t
    return buf[tuple(index)]


def cplx(g, *shape):
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


def assert_same(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_oscillator_step_with_a_strided_input():
    g = torch.Generator().manual_seed(0)
    B, H, P = 3, 5, 7
    M = 0.5 * torch.randn(2, 2, P, generator=g, dtype=torch.float64)
    f = torch.randn(2, P, generator=g, dtype=torch.float64)
    Bt, Ct, D = cplx(g, H, P), cplx(g, P, H), torch.randn(H, generator=g)
    u, state = torch.randn(B, H, generator=g), cplx(g, B, 2, P)
    assert not strided(u).is_contiguous()
    with torch.no_grad():
        want = tos.oscillator_step_triton(M, f, Bt, Ct, D, u, state)
        assert_same(tos.oscillator_step_triton(M, f, Bt, Ct, D, strided(u), state), want)
        ref = oscillator.oscillator_step_ref(M, f, Bt, Ct, D, u, state)
    torch.testing.assert_close(want[0], ref[0], rtol=1e-5, atol=1e-5)


def test_dplr_step_with_a_strided_input():
    g = torch.Generator().manual_seed(0)
    B, H, M, r = 3, 4, 5, 2
    args = [0.5 * cplx(g, H, M), cplx(g, H, M), cplx(g, H, M, r), cplx(g, H, r, M), cplx(g, H, r, M),
            cplx(g, H, r, r), cplx(g, H, M), torch.randn(H, generator=g)]
    u, s = torch.randn(B, H, generator=g), cplx(g, B, H, M)
    with torch.no_grad():
        assert_same(tds.dplr_step_triton(*args, strided(u), s), tds.dplr_step_triton(*args, u, s))


def test_chunked_conv_with_strided_input_and_gradient():
    g = torch.Generator().manual_seed(0)
    H, M, B, L, T = 2, 3, 2, 70, 32
    log_dA = torch.complex(-torch.rand(H, M, generator=g) * 0.1, torch.randn(H, M, generator=g))
    dB, C = cplx(g, H, M), cplx(g, H, M)
    tables = diagonal_tables(log_dA, dB, C, 2.0, T, L - 2 * T, torch.randn(H, generator=g))
    u, dy = torch.randn(B, L, H, generator=g), torch.randn(B, L, H, generator=g)
    out = []
    for x, gy in ((u.clone(), dy), (strided(u), strided(dy))):
        x.requires_grad_()
        with backend.force_triton():
            y = chunked_conv(x, tables)
        out.append((y.detach(), *torch.autograd.grad(y, x, gy)))
    assert_same(out[1], out[0])


def test_zoh_vandermonde_with_strided_parameters_and_gradients():
    g = torch.Generator().manual_seed(0)
    K, H, N, L = 2, 3, 5, 40
    dt = 0.01 + 0.1 * torch.rand(H, generator=g)
    A = torch.stack([-0.5 - torch.rand(H, N, generator=g), 3 * torch.randn(H, N, generator=g)], -1)
    B, C = torch.randn(H, N, 2, generator=g), torch.randn(K, H, N, 2, generator=g)
    dout = torch.randn(K, H, L, generator=g)

    def run(A_, C_, grad):
        leaves = [t.detach().clone().requires_grad_() if t.is_contiguous() else t.detach().requires_grad_()
                  for t in (dt, A_, B, C_)]
        out = tv.zoh_vandermonde_triton(*leaves, 2, L)
        if grad is None:                                    # out.sum(): an expanded (stride 0) gradient
            return (out.detach(), *torch.autograd.grad(out.sum(), leaves))
        return (out.detach(), *torch.autograd.grad(out, leaves, grad))

    want = run(A, C, dout)
    assert_same(run(every_other(A, 1), every_other(C, 2), dout), want)
    assert_same(run(A, C, every_other(dout, 2)), want)
    assert_same(run(A, C, None), run(A, C, torch.ones(K, H, L)))


def test_dense_tables_with_a_strided_transition():
    g = torch.Generator().manual_seed(0)
    H, N = 2, 6
    dA = 0.3 * torch.randn(H, N, N, generator=g)
    dB, c, D = torch.randn(H, N, generator=g), torch.randn(H, N, generator=g), torch.randn(H, generator=g)
    assert_same(tdt.dense_tables_triton(strided(dA), dB, c, D), tdt.dense_tables_triton(dA, dB, c, D))


def test_linoss_scan_with_strided_input_and_weights():
    g = torch.Generator().manual_seed(0)
    B, L, H, P = 2, 37, 20, 10
    A = torch.rand(P, dtype=torch.float64, generator=g)
    dt = 0.3 + 0.5 * torch.rand(P, dtype=torch.float64, generator=g)
    M, f = oscillator_transition(A, dt, "im", validate=False)
    W, u = torch.randn(2 * P, H, generator=g) / H ** 0.5, torch.randn(B, L, H, generator=g)
    assert_same(tlin.linoss_scan_triton(strided(u), strided(W), M, f), tlin.linoss_scan_triton(u, W, M, f))


def test_scan_with_three_batch_dimensions_that_cannot_be_merged():
    """a broadcast over the middle of three batch dimensions: the kernel indexes (B0, B1, B2) itself."""
    g = torch.Generator().manual_seed(0)
    L, N = 5, 3
    a = (0.7 * torch.randn(2, 1, 3, L, N, generator=g)).requires_grad_()
    b = torch.randn(2, 4, 3, L, N, generator=g).requires_grad_()
    x0 = torch.randn(2, 4, 3, N, generator=g).requires_grad_()
    dy = torch.randn(2, 4, 3, L, N, generator=g)
    y = tscan.scan_diagonal_triton(a, b, x0)
    grads = torch.autograd.grad(y, (a, b, x0), dy)
    a64, b64, x64 = (t.detach().double().requires_grad_() for t in (a, b, x0))
    y64 = scan_loop(a64, b64, x64)
    grads64 = torch.autograd.grad(y64, (a64, b64, x64), dy.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads64):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
