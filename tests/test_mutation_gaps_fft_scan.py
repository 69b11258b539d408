"""Mutation-testing gaps in the FFT convolutions, the parallel scans and the Vandermonde kernels.

The audit mutated ``ops/fftconv.py``, ``ops/fftconv_nd.py``, ``ops/scan.py`` and ``kernels/vandermonde.py``
with 74 small behaviour-changing mutants: 44 were killed by the existing tests, 11 survivors are equivalent
(e.g. an FFT length of L + m - 1 instead of L + m, 2-3 smooth instead of 2-3-5 smooth FFT lengths, the unused
lag -L of the two-sided kernel, the Toeplitz/FFT dispatch at exactly L = 64, stride-0 transitions scanned as
time-varying, the power table used under autograd too) and 19 were test gaps, pinned here. Each test below pins
a behaviour that a surviving, non-equivalent mutant changed without any existing test noticing. Every check is
against an independent route: direct convolution sums and plain sequential loops in float64, autograd through
a reference written here, or ``gradcheck``.
"""
import pytest
import torch

from statespaces import backend
from statespaces.ops import fftconv
from statespaces.ops.fftconv_nd import conv_nd, fftconv_nd, toeplitz_conv_nd

DT = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _direct_two_sided(u, k0, k1):
    """``y_t = sum_{s<=t} k0[t-s] u_s + sum_{s>t} k1[s-t-1] u_s`` by loops (taps past a kernel's end are 0)."""
    B, L, H = u.shape
    y = torch.zeros(B, L, H, dtype=DT)
    for t in range(L):
        for s in range(L):
            if s <= t and t - s < k0.shape[-1]:
                y[:, t] += k0[:, t - s] * u[:, s]
            if s > t and s - t - 1 < k1.shape[-1]:
                y[:, t] += k1[:, s - t - 1] * u[:, s]
    return y


def _direct_causal(u, k):
    return _direct_two_sided(u, k, k.new_zeros(k.shape[0], 0))


# ---- ops/fftconv.py ------------------------------------------------------------------------------
@pytest.mark.parametrize("L", [2, 6, 7])
def test_bidirectional_pair_exactly_one_tap_shorter_than_L(L):
    """A two-sided kernel pair of length L - 1 is zero-padded to L before the pair is merged, so its anti-causal
    taps sit at lags -1, -2, ... (mutant: padding only pairs shorter than L - 1 put k1[0] at lag -2)."""
    g = _gen(L)
    u = torch.randn(2, L, 3, dtype=DT, generator=g)
    k = torch.randn(2, 3, L - 1, dtype=DT, generator=g)
    torch.testing.assert_close(fftconv(u, k, bidirectional=True), _direct_two_sided(u, k[0], k[1]),
                               atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_ref_backend_fftconv_equals_direct_sum(bidirectional):
    """Under backend ``"ref"`` (``fftconv_ref``) the convolution is the same direct sum, aligned at lag 0
    (mutant: the reference twin kept outputs 1..L instead of 0..L-1)."""
    g = _gen(3)
    L = 9
    u = torch.randn(2, L, 3, dtype=DT, generator=g)
    k = torch.randn(*((2,) if bidirectional else ()), 3, 5, dtype=DT, generator=g)
    ref = _direct_two_sided(u, k[0], k[1]) if bidirectional else _direct_causal(u, k)
    with backend.use_backend("ref"):
        y = fftconv(u, k, bidirectional)
    torch.testing.assert_close(y, ref, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fftconv_rejects_empty_sequence_with_its_own_message(bidirectional):
    """An input with L = 0 is refused by fftconv's own shape check (mutant without ``L >= 1``: an unrelated
    FFT-length error, or a RuntimeError from torch for the two-sided kernel)."""
    u = torch.zeros(2, 0, 3, dtype=DT)
    k = torch.zeros(*((2,) if bidirectional else ()), 3, 4, dtype=DT)
    with pytest.raises(ValueError, match=r"fftconv: u must be \(B, L, H\) with L, H >= 1"):
        fftconv(u, k, bidirectional)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fftconv_rejects_kernel_for_another_channel_count(bidirectional):
    """A kernel with one channel row for an input of H = 3 channels is an error, not a silent broadcast of the
    one row over every channel (mutant without the ``k.shape[:-1] == (H,)`` check)."""
    u = torch.randn(2, 8, 3, dtype=DT)
    k = torch.randn(*((2,) if bidirectional else ()), 1, 8, dtype=DT)
    with pytest.raises(ValueError, match="fftconv"):
        fftconv(u, k, bidirectional)


# ---- ops/fftconv_nd.py ---------------------------------------------------------------------------
def _direct_nd_2d(u, k1, k2, two_sided):
    """2-D separable convolution by its definition, axis layouts as in fftconv_nd's docstring (loops)."""
    B, H, L1, L2 = u.shape
    ks, Ls = (k1, k2), (L1, L2)

    def tap(ax, d):
        if two_sided[ax]:
            return ks[ax][:, d % (2 * Ls[ax])] if -Ls[ax] <= d < Ls[ax] else None
        return ks[ax][:, d] if 0 <= d < Ls[ax] else None

    y = torch.zeros(B, H, L1, L2, dtype=DT)
    for t1 in range(L1):
        for t2 in range(L2):
            for s1 in range(L1):
                for s2 in range(L2):
                    a, b = tap(0, t1 - s1), tap(1, t2 - s2)
                    if a is not None and b is not None:
                        y[:, :, t1, t2] += a * b * u[:, :, s1, s2]
    return y


@pytest.mark.parametrize("method", ["fft", "toeplitz"])
def test_nd_causal_factor_longer_than_axis_is_truncated(method):
    """A causal factor may be longer than its axis; taps at lags >= L must not wrap around the length-2L FFT
    into the first outputs (mutant: the causal factor was not truncated to L)."""
    g = _gen(4)
    u = torch.randn(2, 3, 4, 5, dtype=DT, generator=g)
    k1 = torch.randn(3, 2 * 4, dtype=DT, generator=g)       # causal axis 0, length 2 L_1
    k2 = torch.randn(3, 2 * 5, dtype=DT, generator=g)       # two-sided axis 1, length 2 L_2
    ref = _direct_nd_2d(u, k1[:, :4], k2, (False, True))
    torch.testing.assert_close(conv_nd(u, [k1, k2], (False, True), method), ref, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("fn", [fftconv_nd, toeplitz_conv_nd])
def test_nd_rejects_factor_with_wrong_channel_count(fn):
    """A factor with one row for H = 3 channels is an error, not broadcast (mutant without ``k.shape[0] == H``)."""
    u = torch.randn(1, 3, 4, 4, dtype=DT)
    factors = [torch.randn(1, 4, dtype=DT), torch.randn(3, 4, dtype=DT)]
    with pytest.raises(ValueError, match="factor 0 must have shape"):
        fn(u, factors, (False, False))


def test_toeplitz_conv_gradient_reaches_input_when_factors_are_fixed():
    """With fixed (no-grad) factors the input still gets its gradient through the Toeplitz matmuls; checked by
    gradcheck and against autograd through the loop reference (mutant: the input gradient was computed only
    when the Toeplitz matrix needed one)."""
    g = _gen(6)
    u = torch.randn(1, 2, 3, 4, dtype=DT, generator=g, requires_grad=True)
    k1, k2 = torch.randn(2, 6, dtype=DT, generator=g), torch.randn(2, 4, dtype=DT, generator=g)
    assert torch.autograd.gradcheck(lambda x: toeplitz_conv_nd(x, [k1, k2], (True, False)), (u,))
    w = torch.randn(1, 2, 3, 4, dtype=DT, generator=g)
    (gu,) = torch.autograd.grad((toeplitz_conv_nd(u, [k1, k2], (True, False)) * w).sum(), u)
    (ref,) = torch.autograd.grad((_direct_nd_2d(u, k1, k2, (True, False)) * w).sum(), u)
    torch.testing.assert_close(gu, ref, atol=1e-12, rtol=1e-12)


def test_conv_nd_rejects_unknown_method():
    """``conv_nd`` with a method outside CONV_METHODS raises, naming the valid ones (mutant: fell back to FFT)."""
    u = torch.randn(1, 2, 3, 3, dtype=DT)
    factors = [torch.randn(2, 3, dtype=DT), torch.randn(2, 3, dtype=DT)]
    with pytest.raises(ValueError, match="unknown convolution method 'dense'"):
        conv_nd(u, factors, (False, False), "dense")


@pytest.mark.parametrize("fn", [fftconv_nd, toeplitz_conv_nd])
def test_nd_rejects_two_sided_flags_of_another_length(fn):
    """One two_sided flag for two kernel factors is an error (mutant: zip silently used the first axis only)."""
    u = torch.randn(1, 2, 3, 3, dtype=DT)
    factors = [torch.randn(2, 3, dtype=DT), torch.randn(2, 3, dtype=DT)]
    with pytest.raises(ValueError, match="two_sided has 1 entries for 2 kernel factors"):
        fn(u, factors, (False,))


# ---- ops/scan.py ---------------------------------------------------------------------------------
def _loop_diag(a, b, x0=None):
    """``x_n = a_n x_{n-1} + b_n`` one step at a time (written here, not scan_loop), result in b's batch shape."""
    x = torch.zeros(b.shape[:-2] + b.shape[-1:], dtype=torch.promote_types(a.dtype, b.dtype))
    if x0 is not None:
        x = x + x0
    out = []
    for n in range(b.shape[-2]):
        x = a[..., min(n, a.shape[-2] - 1), :] * x + b[..., n, :]
        out.append(x)
    return torch.stack(out, -2)


def test_scan_rejects_transitions_of_intermediate_length():
    """Transitions of length 3 for a forcing of length 5 (neither 1 nor L) are refused with scan's own message
    (mutant accepting any length <= L: a RuntimeError from ``expand``)."""
    from statespaces.ops.scan import scan_diagonal

    with pytest.raises(ValueError, match="scan_diagonal: transitions must have shape"):
        scan_diagonal(torch.rand(3, 4, dtype=DT), torch.randn(2, 5, 4, dtype=DT))


def test_scan_rejects_transitions_with_another_state_size():
    """Transitions with N = 1 for a forcing with N = 4 are refused, not broadcast over the state (mutant without
    the ``a.shape[-1] == b.shape[-1]`` check)."""
    from statespaces.ops.scan import scan_block2, scan_diagonal

    with pytest.raises(ValueError, match="scan_diagonal: transitions"):
        scan_diagonal(torch.rand(5, 1, dtype=DT), torch.randn(2, 5, 4, dtype=DT))
    with pytest.raises(ValueError, match="scan_block2: transitions"):
        scan_block2(torch.rand(5, 2, 2, 1, dtype=DT), torch.randn(2, 5, 2, 4, dtype=DT))


def test_scan_rejects_initial_state_that_enlarges_the_batch():
    """``x0`` of shape (3, 1, N) would broadcast the (2, L, N) states to a batch of (3, 2): refused (mutant:
    only the number of dims was checked)."""
    from statespaces.ops.scan import scan_block2, scan_diagonal

    with pytest.raises(ValueError, match="scan_diagonal: x0 must have shape"):
        scan_diagonal(torch.rand(5, 4, dtype=DT), torch.randn(2, 5, 4, dtype=DT), torch.randn(3, 1, 4, dtype=DT))
    with pytest.raises(ValueError, match="scan_block2: x0 must have shape"):
        scan_block2(torch.rand(5, 2, 2, 4, dtype=DT), torch.randn(2, 5, 2, 4, dtype=DT),
                    torch.randn(3, 1, 2, 4, dtype=DT))


def test_scan_block2_rejects_non_2x2_transitions_with_its_message():
    """Transitions of shape (L, 3, 2, N) are refused by scan_block2's own check (mutant without the (2, 2)
    check: an unpacking error from deep inside)."""
    from statespaces.ops.scan import scan_block2

    with pytest.raises(ValueError, match=r"scan_block2: M must have shape \(\.\.\., L, 2, 2, N\)"):
        scan_block2(torch.rand(5, 3, 2, 4, dtype=DT), torch.randn(2, 5, 2, 4, dtype=DT))


@pytest.mark.parametrize("L", [2, 7])
def test_scan_complex_transitions_real_forcing_is_complex(L):
    """Complex transitions with real forcing and no x0: the first state is real but later ones are complex, and
    the result is the complex loop (mutant: the interleaved output took the first state's real dtype and dropped
    the imaginary parts)."""
    from statespaces.ops.scan import scan_diagonal

    g = _gen(9)
    a = torch.polar(torch.rand(L, 3, dtype=DT, generator=g) * 0.2 + 0.8, torch.rand(L, 3, dtype=DT, generator=g) * 6)
    b = torch.randn(2, L, 3, dtype=DT, generator=g)
    x = scan_diagonal(a, b)
    assert x.dtype == torch.complex128
    torch.testing.assert_close(x, _loop_diag(a, b), atol=1e-12, rtol=1e-12)


# ---- kernels/vandermonde.py ----------------------------------------------------------------------
def test_exp_scaled_of_real_log_under_autograd():
    """``exp_scaled`` of a real ``log_a`` that requires grad (the autograd route of ``_powers``, real branch) is
    ``exp(n log_a)`` with derivative ``n exp(n log_a)``, checked in closed form and by gradcheck (mutant: that
    branch dropped the stride n)."""
    from statespaces.kernels.vandermonde import exp_scaled

    w = (-0.3 * torch.rand(2, 3, dtype=DT, generator=_gen(10))).requires_grad_()
    y = exp_scaled(w, 5)
    torch.testing.assert_close(y, torch.exp(5 * w.detach()), atol=0, rtol=1e-13)
    (gw,) = torch.autograd.grad(y.sum(), w)
    torch.testing.assert_close(gw, 5 * torch.exp(5 * w.detach()), atol=0, rtol=1e-13)
    assert torch.autograd.gradcheck(lambda x: exp_scaled(x, 7), (w,))


def test_exp_scaled_complex64_under_autograd_reduces_the_phase():
    """Under autograd a complex64 ``a^n`` for large n keeps float32 accuracy: the phase ``n Im log_a`` is formed
    and reduced in float64 before rounding (mutant without the reduction: ~1e-2 error at n = 60001)."""
    from statespaces.kernels.vandermonde import exp_scaled

    g = _gen(11)
    log_a = torch.complex(-1e-6 * torch.rand(2, 4, dtype=DT, generator=g), 3 * torch.randn(2, 4, dtype=DT, generator=g))
    w = log_a.to(torch.complex64).requires_grad_()
    n = 60001                                                           # not a power of 2: n Im(w) is inexact
    y = exp_scaled(w, n)
    assert y.requires_grad and y.dtype == torch.complex64
    ref = torch.exp(n * w.detach().to(torch.complex128))                 # float64 from the same rounded log
    assert float((y.detach().to(torch.complex128) - ref).abs().max()) < 1e-5


def test_vandermonde_rejects_coefficients_with_another_mode_count():
    """coef with N = 3 against log_a with N = 1 is an error, not a broadcast (mutant without the N check)."""
    from statespaces.kernels import vandermonde

    with pytest.raises(ValueError, match="disagree on N"):
        vandermonde(torch.randn(2, 3, dtype=torch.complex128), torch.randn(2, 1, dtype=torch.complex128), 8)


def test_vandermonde_transpose_rejects_empty_sequence():
    """``vandermonde_transpose`` of weights with L = 0 raises its own error (mutant without ``L >= 1``)."""
    from statespaces.kernels import vandermonde_transpose

    with pytest.raises(ValueError, match="vandermonde_transpose: u must be"):
        vandermonde_transpose(torch.zeros(2, 0, dtype=DT), torch.randn(2, 3, dtype=torch.complex128))
