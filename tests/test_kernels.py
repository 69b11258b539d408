"""Fast kernel paths against their reference twins (fp64 where exactness is the point)."""
import pytest
import torch

from statespaces.kernels import direct_causal_conv, vandermonde, vandermonde_naive, vandermonde_transpose
from statespaces.ops import fftconv


def _modes(H=3, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    log_a = torch.complex(-0.3 * torch.rand(H, N, dtype=torch.float64, generator=g), 3 * torch.randn(H, N, dtype=torch.float64, generator=g))
    coef = torch.randn(H, N, dtype=torch.complex128, generator=g)
    return coef, log_a


@pytest.mark.parametrize("L", [1, 2, 7, 64, 100, 1001])
def test_vandermonde_equals_naive(L):
    coef, log_a = _modes()
    torch.testing.assert_close(vandermonde(coef, log_a, L), vandermonde_naive(coef, log_a, L), atol=1e-11, rtol=1e-11)


def test_vandermonde_batched_coefficients():
    coef, log_a = _modes()
    batch = torch.randn(4, *coef.shape, dtype=torch.complex128)
    torch.testing.assert_close(vandermonde(batch, log_a, 33), vandermonde_naive(batch, log_a, 33), atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("L", [1, 5, 64, 333])
def test_vandermonde_transpose_equals_sum(L):
    _, log_a = _modes()
    u = torch.randn(2, 3, L, dtype=torch.float64)
    powers = torch.exp(log_a.unsqueeze(-1) * torch.arange(L, dtype=torch.float64))  # (H, N, L)
    ref = torch.einsum("bhl,hnl->bhn", u.to(torch.complex128), powers)
    torch.testing.assert_close(vandermonde_transpose(u, log_a), ref, atol=1e-11, rtol=1e-11)


def test_vandermonde_gradcheck():
    coef, log_a = _modes(H=2, N=3)
    coef.requires_grad_(True)
    log_a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c, w: vandermonde(c, w, 11), (coef, log_a))
    u = torch.randn(2, 2, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: torch.view_as_real(vandermonde_transpose(x, w)), (u, log_a))


@pytest.mark.parametrize("L", [1, 2, 17, 64])
def test_fftconv_equals_direct_convolution(L):
    u = torch.randn(2, L, 3, dtype=torch.float64)
    k = torch.randn(3, L, dtype=torch.float64)
    torch.testing.assert_close(fftconv(u, k), direct_causal_conv(u, k), atol=1e-11, rtol=1e-11)


def test_fftconv_is_causal():
    u = torch.randn(1, 40, 2, dtype=torch.float64)
    k = torch.randn(2, 40, dtype=torch.float64)
    v = u.clone()
    v[:, 25:] += 1.0
    torch.testing.assert_close(fftconv(u, k)[:, :25], fftconv(v, k)[:, :25])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fftconv_cpu_row_blocks_match_whole_tensor_path_and_direct_sum(monkeypatch, bidirectional):
    """The CPU schedule (one batch entry at a time, rows in cache-sized blocks, here forced down to
    3 rows per block so that H = 7 ends in a partial block) equals the whole-tensor transforms of the
    CUDA/traced schedule and the direct sum, output and both gradients, in float64."""
    import sys

    mod = sys.modules["statespaces.ops.fftconv"]
    L, H = 29, 7
    g = torch.Generator().manual_seed(5)
    u = torch.randn(3, L, H, dtype=torch.float64, generator=g)
    k = torch.randn(*((2,) if bidirectional else ()), H, L if bidirectional else 17, dtype=torch.float64, generator=g)
    n = 2 * L if bidirectional else mod._fft_len(L + 17)
    monkeypatch.setattr(mod, "GROUP_BYTES", 3 * 2 * n * 8)
    assert [b.stop - b.start for b in mod._row_blocks(H, n, 8)][:2] == [3, 3]
    dy = torch.randn(3, L, H, dtype=torch.float64, generator=g)

    def run(grouped):
        monkeypatch.setattr(mod, "_grouped", lambda t: grouped)
        a, b = u.clone().requires_grad_(), k.clone().requires_grad_()
        y = fftconv(a, b, bidirectional)
        y.backward(dy)
        with torch.no_grad():
            y0 = fftconv(u, k, bidirectional)
        return y, y0, a.grad, b.grad

    fast, whole = run(True), run(False)
    for x, ref in zip(fast, whole):
        torch.testing.assert_close(x, ref, atol=1e-12, rtol=1e-12)
    if not bidirectional:
        kp = torch.cat([k, k.new_zeros(H, L - 17)], -1)
        torch.testing.assert_close(fast[0], direct_causal_conv(u, kp), atol=1e-11, rtol=1e-11)
    monkeypatch.setattr(mod, "_grouped", lambda t: True)
    a, b = u[:2, :5, :4].clone().requires_grad_(), k[..., :4, :5].clone().requires_grad_()   # blocks of 3 + 1 rows
    assert torch.autograd.gradcheck(lambda x, w: fftconv(x, w, bidirectional), (a, b), fast_mode=True)


def test_fftconv_row_blocks_never_exceed_the_channels():
    """The first block sizes the zero-tailed buffer that every rfft of a call copies into: a short sequence of few
    channels took ~GROUP_BYTES / (2 n) rows (4,096 at H = 8, n = 128), zero-filled per call (20% of a small S4D
    layer's forward+backward)."""
    import sys

    mod = sys.modules["statespaces.ops.fftconv"]
    assert mod._row_blocks(8, 128, 4) == [slice(0, 8)]
    assert mod._row_blocks(1, 2, 8) == [slice(0, 1)]
    blocks = mod._row_blocks(5000, 128, 4)
    assert blocks[0] == slice(0, mod.GROUP_BYTES // (2 * 128 * 4)) and blocks[-1].stop >= 5000


def _anticausal_reference(u, k1):
    """sum_{s>t} k1[s-t-1] u_s, via the causal convolution of the flipped input."""
    w = direct_causal_conv(u.flip(1), k1)
    return torch.cat([w.flip(1)[:, 1:], torch.zeros_like(w[:, :1])], 1)


@pytest.mark.parametrize("L,Lk", [(1, 1), (6, 6), (31, 31), (16, 5), (9, 20)])
def test_bidirectional_fftconv_matches_flipped_reference(L, Lk):
    """Also a kernel pair shorter than L (its anti-causal taps were placed at lags Lk - L - 1.. instead of -1..:
    error 4.8 on outputs of ~8.5) and one longer (truncated)."""
    u = torch.randn(2, L, 3, dtype=torch.float64)
    k = torch.randn(2, 3, Lk, dtype=torch.float64)
    kL = torch.nn.functional.pad(k, (0, max(0, L - Lk)))[..., :L]
    ref = direct_causal_conv(u, kL[0]) + _anticausal_reference(u, kL[1])
    torch.testing.assert_close(fftconv(u, k, bidirectional=True), ref, atol=1e-11, rtol=1e-11)


def test_matrix_power_matches_linalg_and_rejects_negative():
    """``dplr.matrix_power`` (repeated squaring) vs ``torch.linalg.matrix_power``, including ``X^0 = I``."""
    from statespaces.kernels.dplr import matrix_power

    X = torch.randn(3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) / 2
    for L in range(10):
        torch.testing.assert_close(matrix_power(X, L), torch.linalg.matrix_power(X, L))
    with pytest.raises(ValueError, match="L >= 0"):
        matrix_power(X, -1)


@pytest.mark.parametrize("count,stride", [(1, 1), (2, 1), (5, 1), (32, 1), (33, 7), (100, 32)])
def test_power_table_equals_direct_exponent(count, stride):
    """Powers by doubling (products, no exp per entry) against ``exp(stride j log_a)``, complex and real modes;
    the float32 route of the blocked sums too (its relative error is float32 rounding only)."""
    import importlib

    vm = importlib.import_module("statespaces.kernels.vandermonde")
    _, log_a = _modes(H=4, N=6, seed=1)
    j = torch.arange(count, dtype=torch.float64) * stride
    for w in (log_a, log_a.real):
        direct = torch.exp(w.unsqueeze(-1) * j)
        torch.testing.assert_close(vm._power_table(w, count, stride), direct, atol=1e-250, rtol=1e-11)
    w32 = log_a.to(torch.complex64)
    direct32 = torch.exp(w32.to(torch.complex128).unsqueeze(-1) * j)
    torch.testing.assert_close(vm._powers(w32, count, stride).to(torch.complex128), direct32, atol=1e-7, rtol=1e-6)
    unit = torch.exp(w32.to(torch.complex128).unsqueeze(-1) * torch.arange(count, dtype=torch.float64))
    rows = vm._powers_real(w32, count)                                              # [Re; Im] of a^j, j < count
    torch.testing.assert_close(rows.double(), torch.cat([unit.real, unit.imag], -2), atol=1e-7, rtol=1e-6)


def test_zoh_vandermonde_equals_discretize_then_vandermonde_on_every_backend():
    """``zoh_vandermonde`` (the ZOH kernel of a diagonal SSM from dt, A, B, C) against the independent route
    through the dense recurrence x_l = dA x_{l-1} + dB u_l (impulse response read out by C), float64, on the
    default and the ``ref`` backends; gradcheck through the default path."""
    from statespaces import backend
    from statespaces.discretize import discretize_diagonal
    from statespaces.kernels import zoh_vandermonde

    g = torch.Generator().manual_seed(2)
    H, M, K, L = 3, 4, 2, 17
    dt = 0.05 + 0.2 * torch.rand(H, generator=g, dtype=torch.float64)
    A = torch.complex(-0.1 - torch.rand(H, M, generator=g, dtype=torch.float64),
                      3 * torch.randn(H, M, generator=g, dtype=torch.float64))
    B = torch.randn(H, M, generator=g, dtype=torch.complex128)
    C = torch.randn(K, H, M, generator=g, dtype=torch.complex128)
    dA, dB = discretize_diagonal(A, B, dt, "zoh")
    powers = dA.unsqueeze(-1) ** torch.arange(L, dtype=torch.float64)               # (H, M, L)
    ref = 2 * torch.einsum("khm,hml->khl", C * dB, powers).real
    torch.testing.assert_close(zoh_vandermonde(dt, A, B, C, 2.0, L), ref, atol=1e-12, rtol=1e-10)
    with backend.use_backend("ref"):
        torch.testing.assert_close(zoh_vandermonde(dt, A, B, C, 2.0, L), ref, atol=1e-12, rtol=1e-10)
    xs = [t.clone().requires_grad_() for t in (dt, A, B, C)]
    assert torch.autograd.gradcheck(lambda *a: zoh_vandermonde(*a, 1.0, L), xs)
