"""Chunked LTI convolution (statespaces.kernels.chunked_conv) against its independent twins: the FFT
convolution of the Vandermonde kernel and the explicit recurrence, in float64; gradcheck; the layer
dispatch (S4D stateful forward, LinOSS ``mode='chunked'``)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")   # before triton is imported: the rule test forces the Triton path

import pytest  # noqa: E402
import torch  # noqa: E402

from statespaces import S4D, LinOSS, backend  # noqa: E402
from statespaces.kernels.chunked_conv import (  # noqa: E402
    chunk_length,
    chunked_conv_diagonal,
    chunked_conv_diagonal_ref,
    prefer_chunked,
)
from statespaces.kernels.vandermonde import vandermonde  # noqa: E402
from statespaces.ops.fftconv import fftconv  # noqa: E402

C128 = torch.complex128


def _system(H, M, K=1, seed=0, slow=False):
    g = torch.Generator().manual_seed(seed)
    re = -torch.rand(H, M, dtype=torch.float64, generator=g) * (1e-3 if slow else 0.5)
    log_dA = torch.complex(re, 3 * torch.randn(H, M, dtype=torch.float64, generator=g))
    dB = torch.randn(H, M, dtype=C128, generator=g)
    C = torch.randn(K, H, M, dtype=C128, generator=g)
    D = torch.randn(H, dtype=torch.float64, generator=g)
    return log_dA, dB, C, D


def _fft_route(u, log_dA, dB, C, scale, D):
    L = u.shape[1]
    k = scale * vandermonde(C * dB, log_dA, L)                      # (K, H, L)
    k[0, :, 0] += D
    return fftconv(u, k if C.shape[0] == 2 else k[0], bidirectional=C.shape[0] == 2)


# (B, L, H, M, T): L a multiple of T, not a multiple, L < T, L = 1, T = 1
SHAPES = [(2, 64, 3, 4, 16), (3, 50, 2, 5, 16), (1, 7, 4, 3, 32), (2, 1, 3, 2, 8), (1, 9, 2, 3, 1), (2, 129, 5, 8, 64)]


@pytest.mark.parametrize("B,L,H,M,T", SHAPES)
@pytest.mark.parametrize("K", [1, 2])
def test_matches_fft_convolution(B, L, H, M, T, K):
    log_dA, dB, C, D = _system(H, M, K, seed=L + T)
    u = torch.randn(B, L, H, dtype=torch.float64)
    y = chunked_conv_diagonal(u, log_dA, dB, C, 2.0, D, chunk=T)
    torch.testing.assert_close(y, _fft_route(u, log_dA, dB, C, 2.0, D), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("B,L,H,M,T", SHAPES)
def test_state_in_and_out_match_the_recurrence(B, L, H, M, T):
    log_dA, dB, C, D = _system(H, M, seed=3 * L + T)
    u = torch.randn(B, L, H, dtype=torch.float64)
    s0 = torch.randn(B, H, M, dtype=C128)
    y, s = chunked_conv_diagonal(u, log_dA, dB, C, 1.0, D, state=s0, return_state=True, chunk=T)
    y_ref, s_ref = chunked_conv_diagonal_ref(u, log_dA, dB, C, 1.0, D, state=s0, return_state=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)
    # two calls carrying the state = one call over the whole sequence
    cut = L // 2
    if 0 < cut < L:
        y1, s1 = chunked_conv_diagonal(u[:, :cut], log_dA, dB, C, 1.0, D, state=s0, return_state=True, chunk=T)
        y2, s2 = chunked_conv_diagonal(u[:, cut:], log_dA, dB, C, 1.0, D, state=s1, return_state=True, chunk=T)
        torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s2, s, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("M, L, T", [(32, 2048, 128), (128, 2048, 128), (32, 2047, 64), (128, 1024, 64),
                                     (31, 4096, 64)])
def test_default_chunk_grows_with_the_state_and_the_length(M, L, T, monkeypatch):
    """At least 64 real state entries (M >= 32 complex modes) and WIDE_STATE_LENGTH steps take WIDE_STATE_CHUNK
    steps per chunk (the boundary states are B H (L/T) 2M entries, and their carry costs time at long L); shorter
    sequences or smaller states CHUNK (the T^2 Toeplitz products dominate: T = 128 took 2x the time at L = 256). The
    result is the recurrence either way."""
    import statespaces.kernels.chunked_conv as cc

    seen = []
    tables = cc.diagonal_tables
    monkeypatch.setattr(cc, "diagonal_tables", lambda *a, **k: seen.append(a[4]) or tables(*a, **k))
    log_dA, dB, C, D = _system(1, M, seed=M)
    u = torch.randn(1, L, 1, dtype=torch.float64)
    s0 = torch.randn(1, 1, M, dtype=C128)
    y, s = chunked_conv_diagonal(u, log_dA, dB, C, 2.0, D, state=s0, return_state=True)
    assert seen == [T]
    y_ref, s_ref = chunked_conv_diagonal_ref(u, log_dA, dB, C, 2.0, D, state=s0, return_state=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_bidirectional_matches_the_two_sided_recurrence():
    log_dA, dB, C, D = _system(3, 4, K=2, seed=5)
    u = torch.randn(2, 45, 3, dtype=torch.float64)
    y = chunked_conv_diagonal(u, log_dA, dB, C, 2.0, D, chunk=8)
    torch.testing.assert_close(y, chunked_conv_diagonal_ref(u, log_dA, dB, C, 2.0, D), rtol=1e-10, atol=1e-10)


def test_random_shapes_against_fft():
    g = torch.Generator().manual_seed(11)
    for _ in range(12):
        B, L, H, M = (int(torch.randint(1, hi, (1,), generator=g)) for hi in (4, 200, 5, 9))
        T = int(torch.randint(1, 80, (1,), generator=g))
        K = int(torch.randint(1, 3, (1,), generator=g))
        log_dA, dB, C, D = _system(H, M, K, seed=L)
        u = torch.randn(B, L, H, dtype=torch.float64, generator=g)
        y = chunked_conv_diagonal(u, log_dA, dB, C, 2.0, D, chunk=T)
        where = f"B={B} L={L} H={H} M={M} T={T} K={K}"
        torch.testing.assert_close(y, _fft_route(u, log_dA, dB, C, 2.0, D), rtol=1e-9, atol=1e-9,
                                   msg=lambda m, where=where: f"{where}: {m}")


def test_gradcheck():
    log_dA, dB, C, D = _system(2, 3, seed=1)
    u = torch.randn(2, 11, 2, dtype=torch.float64)
    s0 = torch.randn(2, 2, 3, dtype=C128)
    args = [t.clone().requires_grad_() for t in (u, log_dA, dB, C, D, s0)]

    def f(u, log_dA, dB, C, D, s0):
        y, s = chunked_conv_diagonal(u, log_dA, dB, C, 2.0, D, state=s0, return_state=True, chunk=4)
        return y, torch.view_as_real(s)

    assert torch.autograd.gradcheck(f, args, fast_mode=True)


def test_gradcheck_bidirectional():
    log_dA, dB, C, D = _system(2, 2, K=2, seed=2)
    args = [t.clone().requires_grad_() for t in (torch.randn(1, 9, 2, dtype=torch.float64), log_dA, dB, C, D)]
    assert torch.autograd.gradcheck(lambda u, a, b, c, d: chunked_conv_diagonal(u, a, b, c, 1.0, d, chunk=4), args,
                                    fast_mode=True)


def test_float32_carry_does_not_drift():
    """Slow modes (|a| ~ 1) over many chunks: the float64 carry keeps the float32 error at the level of
    one chunk's rounding instead of growing with L/T."""
    log_dA, dB, C, D, u, s0 = (t.to(torch.complex64 if t.is_complex() else torch.float32).to(t.dtype)
                               for t in (*_system(2, 4, seed=7, slow=True), torch.randn(1, 4096, 2, dtype=torch.float64),
                                         torch.randn(1, 2, 4, dtype=C128)))          # exactly representable in float32
    y64, s64 = chunked_conv_diagonal(u, log_dA, dB, C, 1.0, D, s0, True, chunk=16)
    y32, s32 = chunked_conv_diagonal(u.float(), log_dA.to(torch.complex64), dB.to(torch.complex64),
                                     C.to(torch.complex64), 1.0, D.float(), s0.to(torch.complex64), True, chunk=16)
    assert y32.dtype == torch.float32 and s32.dtype == torch.complex64
    assert (y32.double() - y64).abs().max() / y64.abs().max() < 2e-5
    assert (s32.to(C128) - s64).abs().max() / s64.abs().max() < 2e-5


def test_bad_input_raises():
    log_dA, dB, C, _ = _system(3, 4)
    with pytest.raises(ValueError, match="u must be"):
        chunked_conv_diagonal(torch.randn(2, 5, 4, dtype=torch.float64), log_dA, dB, C)
    with pytest.raises(ValueError, match="no recurrent state"):
        chunked_conv_diagonal(torch.randn(2, 5, 3, dtype=torch.float64), log_dA, dB, torch.cat([C, C]),
                              return_state=True)
    with pytest.raises(ValueError, match="chunk must be"):
        chunk_length(10, 0)
    with pytest.raises(TypeError, match="same precision"):
        chunked_conv_diagonal(torch.randn(2, 5, 3), log_dA, dB, C)
    with pytest.raises(ValueError, match="state must be"):
        chunked_conv_diagonal(torch.randn(2, 5, 3, dtype=torch.float64), log_dA, dB, C, state=torch.zeros(2, 3, 5, dtype=C128))


def test_s4d_stateful_forward_takes_the_chunked_path_and_matches_steps():
    torch.manual_seed(0)
    layer = S4D(3, 8).double()
    x = torch.randn(2, 21, 3, dtype=torch.float64)
    s0 = layer.initial_state(2) + torch.randn(2, 3, 4, dtype=C128)
    assert prefer_chunked(x, stateful=True) and not prefer_chunked(x, stateful=False)
    y, s = layer(x, state=s0, return_state=True)
    state, ys = s0, []
    for t in range(x.shape[1]):
        yt, state = layer.step(x[:, t], state)
        ys.append(yt)
    torch.testing.assert_close(y, torch.stack(ys, 1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, state, rtol=1e-10, atol=1e-10)
    with backend.use_backend("ref"):                                 # the FFT route with the reference twins
        assert not prefer_chunked(x, stateful=True)
        y_ref, s_ref = layer(x, state=s0, return_state=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)



def test_rule_on_the_triton_path():
    """With the Triton kernels (forced here; CUDA in use): chunked for stateful calls (any state width: a wider
    one runs the PyTorch chunked matmuls); stateless calls, training or not, keep the FFT route or the layer's
    own fused scan (LinOSS), both measured faster on an H200."""
    pytest.importorskip("triton")
    from statespaces.ops.triton.chunked_conv import MAX_BLOCK_M

    x = torch.randn(1, 8, 2)
    with backend.force_triton():
        assert not prefer_chunked(x, stateful=False) and not prefer_chunked(x, stateful=False, modes=MAX_BLOCK_M)
        assert prefer_chunked(x, stateful=True, modes=MAX_BLOCK_M) and prefer_chunked(x, True, modes=MAX_BLOCK_M + 1)
        with torch.no_grad():
            assert not prefer_chunked(x, stateful=False)
        assert not prefer_chunked(x.double(), stateful=False)             # float64: the PyTorch paths


@pytest.mark.parametrize("disc", ["IM", "IMEX"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_linoss_chunked_mode_matches_the_loop(disc, bidirectional):
    torch.manual_seed(1)
    m = LinOSS(4, 3, discretization=disc, bidirectional=bidirectional).double()
    x = torch.randn(2, 45, 4, dtype=torch.float64)
    torch.testing.assert_close(m(x, mode="chunked"), m(x, mode="loop"), rtol=1e-10, atol=1e-10)
    assert m.mode == "auto"
    torch.testing.assert_close(m(x), m(x, mode="loop"), rtol=1e-10, atol=1e-10)
    if not bidirectional:
        s0 = m.initial_state(2) + torch.randn(2, 2, 3, dtype=C128)
        y, s = m(x, state=s0, return_state=True, mode="chunked")
        y_ref, s_ref = m(x, state=s0, return_state=True, mode="loop")
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_linoss_chunked_gradients_match_the_scan():
    torch.manual_seed(2)
    m = LinOSS(3, 2).double()
    x = torch.randn(2, 40, 3, dtype=torch.float64, requires_grad=True)
    grads = []
    for mode in ("chunked", "scan"):
        m.zero_grad()
        x.grad = None
        m(x, mode=mode).square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("disc", ["IM", "IMEX"])
def test_dlinoss_chunked_mode_matches_the_loop(disc):
    """D-LinOSS blocks (eigenvalue angles up to pi, stored with a sign) through the same 2x2 tables."""
    from statespaces.layers.dlinoss import DLinOSS

    torch.manual_seed(3)
    m = DLinOSS(3, 4, discretization=disc).double()
    x = torch.randn(2, 70, 3, dtype=torch.float64)
    s0 = m.initial_state(2) + torch.randn(2, 2, 4, dtype=C128)
    y, s = m(x, state=s0, return_state=True, mode="chunked")
    y_ref, s_ref = m(x, state=s0, return_state=True, mode="loop")
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-9, atol=1e-10)


def test_dense_chunked_conv_matches_the_recurrence():
    """kernels.chunked.chunked_conv_dense (S4's real dense form): output and final state equal the explicit
    recurrence in float64, with a partial last chunk and an initial state."""
    from statespaces import S4
    from statespaces.kernels.chunked import chunked_conv_dense

    g = torch.Generator().manual_seed(0)
    for init in ("legs", "legt"):
        layer = S4(3, 8, init=init, seed=1).double()
        dA, dB, c, _ = (t.detach() for t in layer.dense_system())
        u = torch.randn(2, 45, 3, dtype=torch.float64, generator=g)
        x0 = torch.randn(2, 3, 8, dtype=torch.float64, generator=g)
        D = torch.randn(3, dtype=torch.float64, generator=g)
        y, xf = chunked_conv_dense(u, dA, dB, c, D, x0, True, chunk=8)
        xi, ys = x0, []
        for t in range(u.shape[1]):
            xi = torch.einsum("hnm,bhm->bhn", dA, xi) + dB * u[:, t, :, None]
            ys.append((c * xi).sum(-1) + D * u[:, t])
        torch.testing.assert_close(y, torch.stack(ys, 1), rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(xf, xi, rtol=1e-11, atol=1e-12)
        free, z = [], x0                                  # the free response of x0: what a zero state drops
        for _ in range(u.shape[1]):
            z = torch.einsum("hnm,bhm->bhn", dA, z)
            free.append((c * z).sum(-1))
        torch.testing.assert_close(chunked_conv_dense(u, dA, dB, c, D, chunk=16), y - torch.stack(free, 1),
                                   rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("init", ["legs", "fout"])
def test_s4_stateful_forward_takes_the_dense_chunked_path(init):
    """S4's stateful forward on CPU goes through the dense chunked form (rule: prefer_chunked(dense=True));
    output, state and every gradient equal the Cauchy/FFT route with its two state maps (backend "ref") in
    float64."""
    from statespaces import S4

    torch.manual_seed(0)
    layer = S4(3, 8, init=init, seed=2).double()
    x = torch.randn(2, 37, 3, dtype=torch.float64)
    s0 = (layer.initial_state(2) + torch.randn(2, 3, 4, dtype=C128)).requires_grad_()
    assert prefer_chunked(x, stateful=True, dense=True)

    def run():
        layer.zero_grad()
        xx = x.clone().requires_grad_()
        ss = s0.detach().clone().requires_grad_()
        y, s = layer(xx, state=ss, return_state=True)
        (y * torch.cos(torch.arange(37.0))[:, None]).sum().backward(retain_graph=True)
        torch.view_as_real(s).sum().backward()
        return [y.detach(), s.detach(), xx.grad, ss.grad] + [p.grad.clone() for p in layer.parameters()]

    calls = []
    from statespaces.kernels import chunked as kchunked

    orig = kchunked.chunked_conv_dense
    kchunked.chunked_conv_dense = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        got = run()
    finally:
        kchunked.chunked_conv_dense = orig
    assert calls
    with backend.use_backend("ref"):
        assert not prefer_chunked(x, stateful=True, dense=True)
        ref = run()
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("init", ["legs", "legt"])
def test_s4_stateless_forward_takes_the_power_kernel(init):
    """Stateless S4 on CPU convolves by FFT with the kernel from the dense powers (rule: prefer_power_kernel),
    causal and bidirectional (both directions' kernels from one call); output and every gradient equal the
    Cauchy/FFT route in float64; l_max (C~) layers keep Algorithm 1; no stateless call takes the dense chunked
    form any more."""
    from statespaces import S4
    from statespaces.kernels import chunked as kchunked
    from statespaces.kernels.chunked_conv import prefer_power_kernel

    x = torch.randn(2, 41, 3, dtype=torch.float64)
    assert prefer_power_kernel(x) and not prefer_chunked(x, stateful=False, dense=True)
    torch.manual_seed(0)
    layer = S4(3, 8, init=init, seed=1).double()
    w = torch.cos(torch.arange(41.0, dtype=torch.float64))[:, None]

    def run(m):
        m.zero_grad()
        xx = x.clone().requires_grad_()
        y = m(xx)
        (y * w).sum().backward()
        return [y.detach(), xx.grad] + [p.grad.clone() for p in m.parameters()]

    calls, dense = [], []
    orig, orig_dense = kchunked.power_kernel, kchunked.chunked_conv_dense
    kchunked.power_kernel = lambda *a, **k: calls.append(1) or orig(*a, **k)
    kchunked.chunked_conv_dense = lambda *a, **k: dense.append(1) or orig_dense(*a, **k)
    bi = S4(3, 8, init=init, seed=2, bidirectional=True).double()
    try:
        got = run(layer)
        assert len(calls) == 1
        got_bi = run(bi)
        assert len(calls) == 2
        S4(3, 8, seed=1, l_max=41)(x.float())
        assert len(calls) == 2 and not dense                     # l_max: Algorithm 1; nothing chunked
    finally:
        kchunked.power_kernel, kchunked.chunked_conv_dense = orig, orig_dense
    with backend.use_backend("ref"):
        assert not prefer_power_kernel(x)
        ref, ref_bi = run(layer), run(bi)
    for a, b in zip(got + got_bi, ref + ref_bi):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("L,chunk", [(1, 64), (7, 4), (64, 64), (100, 16), (129, 32)])
def test_power_kernel_equals_explicit_powers(L, chunk):
    """``power_kernel`` (near columns and far rows by doubling) equals the lag-by-lag matrix-vector twin in
    float64, for L below, at, and between multiples of the chunk."""
    from statespaces.kernels.chunked import power_kernel, power_kernel_ref

    g = torch.Generator().manual_seed(L)
    dA = torch.randn(3, 6, 6, dtype=torch.float64, generator=g)
    dA = dA / (1.05 * torch.linalg.matrix_norm(dA, 2)[:, None, None])       # stable: spectral norm < 1
    dB, c = torch.randn(2, 3, 6, dtype=torch.float64, generator=g)
    torch.testing.assert_close(power_kernel(dA, dB, c, L, chunk), power_kernel_ref(dA, dB, c, L),
                               rtol=1e-11, atol=1e-13)


def _stable(H, N, seed, radius=0.97):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(H, N, N, dtype=torch.float64, generator=g)
    return radius * X / torch.linalg.matrix_norm(X, 2)[:, None, None], g


@pytest.mark.parametrize("L", [1, 2, 37, 130, 700])
def test_power_kernel_default_chunk_and_every_chunk_agree(L):
    """The chunk chosen by the cost rule (chunk=None) and any fixed chunk give the lag-by-lag kernel, float64,
    for one output vector (H, N) and for several sharing the system (K, H, N) -> (K, H, L)."""
    from statespaces.kernels.chunked import power_kernel, power_kernel_ref

    dA, g = _stable(2, 5, L, radius=1 / 1.02)
    dB, c = torch.randn(2, 2, 5, dtype=torch.float64, generator=g)
    cs = torch.randn(3, 2, 5, dtype=torch.float64, generator=g)
    ref = power_kernel_ref(dA, dB, c, L)
    refs = torch.stack([power_kernel_ref(dA, dB, ck, L) for ck in cs])
    for chunk in (None, 1, 2, 8, 256):
        torch.testing.assert_close(power_kernel(dA, dB, c, L, chunk), ref, rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(power_kernel(dA, dB, cs, L, chunk), refs, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("q", [0, 1, 5])
def test_row_powers_equals_the_loop_and_passes_gradcheck(q):
    """``row_powers`` (q sequential row products, one batched product for X's gradient) against the explicit
    ``V X^i``, and its hand-written backward against finite differences (float64)."""
    from statespaces.kernels.chunked import row_powers

    X, g = _stable(3, 4, q)
    V = torch.randn(3, 2, 4, dtype=torch.float64, generator=g)
    want = torch.stack([V @ torch.linalg.matrix_power(X, i) for i in range(q + 1)], 1)
    torch.testing.assert_close(row_powers(V, X, q), want, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(lambda v, x: row_powers(v, x, q), (V.requires_grad_(), X.requires_grad_()))


@pytest.mark.parametrize("K", [1, 3, 8])
@pytest.mark.parametrize("L", [0, 1, 2, 3, 17, 64, 1000, 4097])
def test_rows_times_power_equals_the_matrix_power(L, K):
    """``V X^L`` by the squarings-then-rows schedule equals ``V @ matrix_power(X, L)``, values and gradients
    (float64), for L with and without low bits below the squarings."""
    from statespaces.kernels.chunked import rows_times_power

    X, g = _stable(2, 6, L + K, radius=0.999)
    V = torch.randn(2, K, 6, dtype=torch.float64, generator=g)
    G = torch.randn(2, K, 6, dtype=torch.float64, generator=g)
    got_in = [t.clone().requires_grad_() for t in (V, X)]
    ref_in = [t.clone().requires_grad_() for t in (V, X)]
    got = rows_times_power(*got_in, L)
    ref = ref_in[0] @ torch.linalg.matrix_power(ref_in[1], L)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-14)
    (got * G).sum().backward()
    (ref * G).sum().backward()
    for a, b in zip(got_in, ref_in):                                   # L = 0: X has no gradient (None)
        torch.testing.assert_close(torch.zeros_like(a) if a.grad is None else a.grad, b.grad, rtol=1e-9, atol=1e-13)


def test_row_products_refuse_bad_input():
    from statespaces.kernels.chunked import row_powers, rows_times_power

    X, g = _stable(2, 4, 0)
    V = torch.randn(2, 1, 4, dtype=torch.float64, generator=g)
    with pytest.raises(ValueError, match="power must be >= 0"):
        rows_times_power(V, X, -1)
    with pytest.raises(ValueError, match="power must be >= 0"):
        row_powers(V, X, -3)
    with pytest.raises(ValueError, match=r"expected rows V \(H, K, N\)"):
        rows_times_power(V[0], X, 3)
    with pytest.raises(ValueError, match=r"expected rows V \(H, K, N\)"):
        row_powers(torch.randn(3, 1, 4, dtype=torch.float64), X, 2)


def test_row_squarings_rule():
    """The cost rule: rows where a row product is cheap against a squaring (CPU, few rows, long L), binary
    powering on CUDA and for as many rows as the state (V = I), and the chunks measured best for S4's kernel."""
    from statespaces.kernels.chunked import row_squarings

    assert [row_squarings(L, 128, 64, 1, False) for L in (0, 1)] == [0, 0]
    assert row_squarings(1024, 128, 64, 1, True) >= 9                 # CUDA: at most two products with X^(2^s)
    assert row_squarings(1024, 128, 64, 64, False) >= 9               # N rows: a row product is a squaring
    assert 3 <= row_squarings(1024, 128, 64, 1, False) <= 7           # CPU, one row: some squarings saved
    # power_kernel's chunk (near columns counted): T = 64 at L = 1024 and T = 256 at 8192 (H128 N64, measured)
    assert [1 << row_squarings(L, 128, 64, 1, False, near=True) for L in (1024, 8192)] == [64, 256]


@pytest.mark.slow
@pytest.mark.parametrize("init", ["legs", "legt", "fout"])
def test_s4_stateless_power_kernel_float32_error_stays_at_the_fft_level(init):
    """float32 at L = 4096 against the float64 layer: the power-kernel route (CPU default) and Algorithm 1
    (backend "ref") both within 1e-5 relative."""
    from statespaces import S4

    torch.manual_seed(0)
    layer = S4(4, 16, init=init, seed=0)
    x = torch.randn(2, 4096, 4)
    with torch.no_grad():
        ref = layer.double()(x.double())
        layer.float()
        chunked = layer(x)
        with backend.use_backend("ref"):
            fft = layer(x)
    err = lambda y: ((y.double() - ref).norm() / ref.norm()).item()    # noqa: E731
    assert err(chunked) < 1e-5 and err(fft) < 1e-5, (err(chunked), err(fft))


@pytest.mark.parametrize("one_node", [True, False], ids=["one-node", "autograd"])
@pytest.mark.parametrize("sides", ["both", "left", "right"])
def test_near_powers_against_explicit_matrix_powers(sides, one_node, monkeypatch):
    """``kernels.chunked.near_powers`` (doubling; both sides stacked into one product per doubling) equals
    the explicit powers ``c^T dA^{j+1}``, ``dA^j b`` and ``dA^T`` in float64, with gradients through it: both
    routes, the one-node backward (taken off the CPU) and plain autograd (the CPU's)."""
    from statespaces.kernels import chunked
    from statespaces.kernels.chunked import near_powers

    monkeypatch.setattr(chunked, "prefer_one_node", lambda dA: one_node)

    g = torch.Generator().manual_seed(3)
    H, N, T = 3, 5, 8
    dA = (0.3 * torch.randn(H, N, N, generator=g, dtype=torch.float64)).requires_grad_()
    c = torch.randn(H, N, generator=g, dtype=torch.float64)
    b = torch.randn(H, N, generator=g, dtype=torch.float64)
    rows, cols, PT = near_powers(dA, T, left=c if sides != "right" else None, right=b if sides != "left" else None)
    P = [torch.eye(N, dtype=torch.float64).expand(H, N, N)]
    for _ in range(T):
        P.append(P[-1] @ dA)
    if sides != "right":
        torch.testing.assert_close(rows, torch.stack([(c.unsqueeze(-2) @ P[j + 1]).squeeze(-2) for j in range(T)], 1))
    else:
        assert rows is None
    if sides != "left":
        torch.testing.assert_close(cols, torch.stack([(P[j] @ b.unsqueeze(-1)).squeeze(-1) for j in range(T)], 1))
    else:
        assert cols is None
    torch.testing.assert_close(PT, P[T])
    left, right = (c if sides != "right" else None), (b if sides != "left" else None)
    for T_ in (1, 2, 8):       # the hand-written backward: every input, every level count (T = 1: no doubling)
        def f(A, l, r, T_=T_):
            return tuple(o for o in near_powers(A, T_, left=l, right=r) if o is not None)
        ins = (dA, None if left is None else left.clone().requires_grad_(),
               None if right is None else right.clone().requires_grad_())
        assert torch.autograd.gradcheck(f, ins)
    if one_node:       # a second derivative is refused, never silently wrong (the saved powers are constants)
        with pytest.raises(RuntimeError, match=r"use_backend\('ref'\)"):
            torch.autograd.grad(near_powers(dA, 4, left=left, right=right)[2].sum(), dA, create_graph=True)
    else:
        assert torch.autograd.gradgradcheck(lambda A: near_powers(A, 4, left=left, right=right)[2], (dA,))


@pytest.mark.parametrize("sides", ["both", "left", "right"])
def test_near_powers_backward_equals_plain_autograd_twin(sides, monkeypatch):
    """The one-node backward of ``near_powers`` against ``near_powers_ref`` (autograd through the doubling),
    float64, T = 32, with a weight on every output (only some outputs used: the others get no gradient)."""
    from statespaces.kernels import chunked
    from statespaces.kernels.chunked import near_powers, near_powers_ref

    monkeypatch.setattr(chunked, "prefer_one_node", lambda dA: True)

    g = torch.Generator().manual_seed(4)
    H, N, T = 4, 6, 32
    dA0 = 0.35 * torch.randn(H, N, N, generator=g, dtype=torch.float64)
    c0, b0 = torch.randn(H, N, generator=g, dtype=torch.float64), torch.randn(H, N, generator=g, dtype=torch.float64)
    weights = [torch.randn(H, T, N, generator=g, dtype=torch.float64), torch.randn(H, T, N, generator=g, dtype=torch.float64),
               torch.randn(H, N, N, generator=g, dtype=torch.float64)]
    for use in ((0, 1, 2), (0, 1), (2,)):
        grads = []
        for fn in (near_powers, near_powers_ref):
            dA, c, b = (t.clone().requires_grad_() for t in (dA0, c0, b0))
            outs = fn(dA, T, left=c if sides != "right" else None, right=b if sides != "left" else None)
            loss = sum((o * weights[i]).sum() for i, o in enumerate(outs) if o is not None and i in use)
            if not isinstance(loss, torch.Tensor):
                continue
            loss.backward()
            grads.append([t.grad for t in (dA, c, b)])
        for mine, ref in zip(*grads) if grads else ():
            if ref is None:
                assert mine is None or not mine.abs().any()
            else:
                torch.testing.assert_close(mine, ref, atol=1e-10, rtol=1e-10)


def test_s4_stateful_gradients_equal_with_the_one_node_near_powers(monkeypatch):
    """S4's stateful chunked forward (dense tables by ``near_powers``) gives the same output, state and every
    parameter gradient with the one-node backward as with plain autograd (float64)."""
    from statespaces import S4
    from statespaces.kernels import chunked

    torch.manual_seed(5)
    layer = S4(4, 8, seed=1).double()
    x = torch.randn(2, 100, 4, dtype=torch.float64)
    state = torch.randn(2, 4, layer.n_modes, dtype=torch.complex128)
    results = []
    for one_node in (False, True):
        monkeypatch.setattr(chunked, "prefer_one_node", lambda dA, v=one_node: v)
        layer.zero_grad()
        y, s = layer(x, state=state, return_state=True)
        (y.square().sum() + s.abs().square().sum()).backward()
        results.append([y.detach(), s.detach()] + [p.grad.clone() for p in layer.parameters() if p.grad is not None])
    assert len(results[0]) == len(results[1]) > 4
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


def test_contiguous_grad_is_the_identity_with_a_contiguous_gradient():
    """``contiguous_grad``: same values, same gradient, and the gradient reaching the (H, B, L) tensor is
    contiguous even when the result leaves as a permuted (B, L, H) view (what the dense chunked path relies on)."""
    from statespaces.kernels.chunked_conv import contiguous_grad

    y = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    seen = []
    y.register_hook(lambda g: seen.append(g.is_contiguous()))
    out = contiguous_grad(y).permute(1, 2, 0)
    assert torch.equal(out, y.permute(1, 2, 0))
    g = torch.randn(2, 5, 3, dtype=torch.float64)
    out.backward(g)
    assert seen == [True] and torch.equal(y.grad, g.permute(2, 0, 1))
    y.grad = None
    seen.clear()
    y.permute(1, 2, 0).backward(g)                                     # without it: a permuted view arrives
    assert seen == [False]
    out = contiguous_grad(y * 1).permute(1, 2, 0)                      # a copy: in-place edits of the result work
    out[:, 0] += 1.0
    out.sum().backward()


def test_block_tables_final_state_with_a_partial_last_chunk():
    """block_tables(powers, b, c, r) called directly (its pow_r is A^r of the last, partial chunk): the final state
    of chunked_conv at L = 13, T = 8 (r = 5) equals the step-by-step recurrence."""
    from statespaces.kernels.chunked_conv import block_tables, chunked_conv

    torch.manual_seed(0)
    H, T, L = 2, 8, 13
    G = torch.tensor([[0.9, -0.2], [0.2, 0.9]], dtype=torch.float64).expand(H, 2, 2)
    powers = torch.stack([torch.linalg.matrix_power(G, j) for j in range(T + 1)], 1)      # (H, T+1, 2, 2)
    b, c = torch.randn(H, 2, dtype=torch.float64), torch.randn(H, 2, dtype=torch.float64)
    u = torch.randn(1, L, H, dtype=torch.float64)
    y, last = chunked_conv(u, block_tables(powers, b, c, L - T), None, True)
    x = torch.zeros(1, H, 2, dtype=torch.float64)
    ys = []
    for t in range(L):
        x = torch.einsum("hij,bhj->bhi", G, x) + b * u[:, t, :, None]
        ys.append((x * c).sum(-1))
    torch.testing.assert_close(last, x.reshape(1, H, 2), atol=1e-12, rtol=0)
    torch.testing.assert_close(y, torch.stack(ys, 1), atol=1e-12, rtol=0)
