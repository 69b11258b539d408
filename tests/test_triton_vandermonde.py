"""The Triton Vandermonde kernel by powers (issue 17 item 5) under the Triton interpreter.

The kernel builds ``lambda^l = lambda^{l0} lambda^r`` from an in-tile power table and an fp64-exponent
tile base (:mod:`statespaces.ops.triton.vandermonde`); these tests check that its error does not grow
with L (float64 reference to L = 65,536), that a program owning many tiles and several mode tiles
reuses its table correctly, and the gradients against the float64 reference and the PyTorch path.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter  # noqa: E402

from statespaces.kernels import vandermonde_naive  # noqa: E402
from statespaces.kernels.vandermonde import _vandermonde_torch  # noqa: E402
from statespaces.ops.triton import vandermonde as tvand  # noqa: E402

patch_triton_interpreter()


def _modes(H, N, re_scale, seed):
    g = torch.Generator().manual_seed(seed)
    log_a = torch.complex(-re_scale * torch.rand(H, N, generator=g), 3 * torch.randn(H, N, generator=g))
    coef = torch.randn(H, N, dtype=torch.complex64, generator=g)
    return coef, log_a


def _rel(x, ref):
    return float((x.to(ref.dtype) - ref).abs().max() / ref.abs().max())


def _grads(fn, coef, log_a, L, G):
    c, w = coef.clone().requires_grad_(), log_a.clone().requires_grad_()
    return torch.autograd.grad(fn(c, w, L), (c, w), G.to(torch.float64 if c.dtype == torch.complex128 else torch.float32))


@pytest.mark.parametrize("L", [4096, pytest.param(65536, marks=pytest.mark.slow)])
def test_vandermonde_powers_error_does_not_grow_with_L(monkeypatch, L):
    """|lambda| ~ 1 (Re w ~ 1e-4) and |Im w| ~ 3: a power built by repeated multiplication, or an fp32
    exponent l * Im w, would be off by ~l 2^-24 (1e-3 rad at 65,536); the fp64 tile base keeps the
    error at fp32 rounding. Forward and both adjoint sums (the gradients) against float64."""
    monkeypatch.setattr(tvand, "FWD_BLOCK_L", 256)       # fewer interpreted iterations; same algorithm
    monkeypatch.setattr(tvand, "BWD_BLOCK_L", 256)
    monkeypatch.setattr(tvand, "MIN_TILES", 4)           # several programs along L, each with several tiles
    coef, log_a = _modes(1, 3, 1e-4, seed=0)
    out = tvand.vandermonde_triton(coef, log_a, L)
    ref = vandermonde_naive(coef.cdouble(), log_a.cdouble(), L)
    assert _rel(out, ref) < 2e-6
    G = torch.randn(1, L, generator=torch.Generator().manual_seed(1))
    for got, want in zip(_grads(tvand.vandermonde_triton, coef, log_a, L, G),
                         _grads(vandermonde_naive, coef.cdouble(), log_a.cdouble(), L, G)):
        assert _rel(got, want) < 2e-6


def test_vandermonde_powers_table_reused_across_tiles_and_mode_tiles(monkeypatch):
    """One program walks many lag tiles with one power table, over two mode tiles (N > BLOCK_N: the
    second adds onto the first's output), for batched coefficient rows; L not a multiple of the tile."""
    monkeypatch.setattr(tvand, "FWD_BLOCK_L", 16)
    monkeypatch.setattr(tvand, "BWD_BLOCK_L", 16)
    monkeypatch.setattr(tvand, "FWD_MAX_BLOCK_N", 16)
    monkeypatch.setattr(tvand, "MIN_TILES", 8)
    coef, log_a = _modes(2, 20, 0.3, seed=2)
    coef = torch.stack([coef, (0.5 - 1j) * coef])        # (2, H, N): rows share log_a
    L = 16 * 9 + 5
    out = tvand.vandermonde_triton(coef, log_a, L)
    assert out.shape == (2, 2, L)
    assert _rel(out, vandermonde_naive(coef.cdouble(), log_a.cdouble(), L)) < 2e-6


def test_vandermonde_powers_gradients_match_the_torch_path(monkeypatch):
    """Gradcheck-style: the kernel's gradients equal those of the blocked PyTorch path (its twin on
    CPU), and <grad, dir> equals the float64 central difference along a random direction."""
    monkeypatch.setattr(tvand, "FWD_BLOCK_L", 16)
    monkeypatch.setattr(tvand, "BWD_BLOCK_L", 16)
    monkeypatch.setattr(tvand, "MIN_TILES", 2)
    monkeypatch.setattr(tvand, "BWD_TARGET_PROGRAMS", 8)
    coef, log_a = _modes(2, 5, 0.2, seed=3)
    L = 77
    G = torch.randn(2, L, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    gk = _grads(tvand.vandermonde_triton, coef, log_a, L, G)
    gt = _grads(_vandermonde_torch, coef.cdouble(), log_a.cdouble(), L, G)
    for a, b in zip(gk, gt):
        assert _rel(a, b) < 5e-6
    dc, dw = torch.randn_like(coef).cdouble(), 0.05 * torch.randn_like(log_a).cdouble()

    def loss(s):
        return (vandermonde_naive(coef.cdouble() + s * dc, log_a.cdouble() + s * dw, L) * G).sum()

    eps = 1e-6
    fd = float(loss(eps) - loss(-eps)) / (2 * eps)
    lin = float((gk[0].cdouble().conj() * dc).real.sum() + (gk[1].cdouble().conj() * dw).real.sum())
    assert abs(lin - fd) <= 1e-5 * max(1.0, abs(fd))


def test_vandermonde_chunks_cover_L_with_whole_tiles():
    """The launch split: every lag covered once, chunks of whole tiles, >= MIN_TILES tiles per program
    unless L is shorter, and no more programs than the target asks for."""
    for L in (1, 63, 64, 65, 1000, 4096, 65536):
        for rows in (1, 7, 256, 4096):
            split, chunk = tvand._chunks(L, 64, rows, tvand.FWD_TARGET_PROGRAMS)
            assert chunk % 64 == 0 and (split - 1) * chunk < L <= split * chunk
            assert chunk >= min(tvand.MIN_TILES * 64, -(-L // 64) * 64)
            assert split == 1 or rows * split <= 2 * tvand.FWD_TARGET_PROGRAMS


def test_fp64_sincos_and_exp_of_the_tile_tables():
    """The kernels form the fp64 step lambda^BLOCK_L and tile base lambda^start themselves, with their own fp64
    sin / cos (libdevice's spilled registers): against numpy over the reduced range and past it, and the
    whole table against complex128 exp, to ~1e-15 (the step's error is multiplied up to 1024 times)."""
    import numpy as np
    import triton.language as tl

    @triton.jit
    def probe(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        m = offs < n
        x = tl.load(x_ptr + offs, mask=m, other=0.0)
        y = tl.load(y_ptr + offs, mask=m, other=0.0)
        re, im = tvand._exp64(x, y)
        tl.store(out_ptr + 2 * offs, re, mask=m)
        tl.store(out_ptr + 2 * offs + 1, im, mask=m)

    g = torch.Generator().manual_seed(5)
    y = torch.cat([torch.linspace(-3.2, 3.2, 200, dtype=torch.float64),
                   torch.randn(56, generator=g, dtype=torch.float64) * 1e5])        # phases 64 w and start w
    x = -torch.rand(256, generator=g, dtype=torch.float64) * 5
    out = torch.empty(256, 2, dtype=torch.float64)
    probe[(1,)](x, y, out, 256, BLOCK=256)
    want = torch.from_numpy(np.exp(x.numpy() + 1j * y.numpy()))
    err = (torch.view_as_complex(out) - want).abs() / want.abs()
    assert bool((err < 1e-14 + 1e-17 * y.abs()).all()), float(err.max())   # large phases: fp64 reduction by turns


def _zoh_system(H, N, K, seed, dt_small=False):
    """A continuous diagonal system with modes near x = dt A = 0 (the series branch), ordinary ones, and
    phases of up to ~100 rad per step (LegS-like imaginary parts)."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.empty(H, dtype=torch.float64).uniform_(-7, -1, generator=g))
    if dt_small:
        dt[0] = 1e-5
    A = torch.complex(-torch.rand(H, N, generator=g, dtype=torch.float64) - 1e-3,
                      torch.pi * torch.randn(H, N, generator=g, dtype=torch.float64) * 30)
    A[:, 0] = torch.complex(torch.tensor(-0.5, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    B = torch.randn(H, N, generator=g, dtype=torch.complex128)
    C = torch.randn(K, H, N, generator=g, dtype=torch.complex128)
    return dt, A, B, C


def _zoh_ref(dt, A, B, C, scale, L):
    from statespaces.kernels.vandermonde import zoh_vandermonde_ref
    return zoh_vandermonde_ref(dt, A, B, C, scale, L)


@pytest.mark.parametrize("scale,K", [(2, 2), (1, 1)])
def test_zoh_vandermonde_fused_matches_float64_with_gradients(monkeypatch, scale, K):
    """The fused kernels (discretization inside the Vandermonde launch, chain rule in one epilogue launch)
    against the float64 route zoh_kernel_factors -> Vandermonde matrix: output and the gradients of dt, A, B
    and C, over several lag tiles, L-splits and mode tiles (N > BLOCK_N of every kernel), bidirectional rows."""
    monkeypatch.setattr(tvand, "FWD_BLOCK_L", 16)
    monkeypatch.setattr(tvand, "BWD_BLOCK_L", 16)
    monkeypatch.setattr(tvand, "FWD_MAX_BLOCK_N", 16)
    monkeypatch.setattr(tvand, "GRADS_BLOCK_N", 16)
    monkeypatch.setattr(tvand, "MIN_TILES", 2)
    H, N, L = 3, 20, 16 * 11 + 7
    dt, A, B, C = _zoh_system(H, N, K, seed=3, dt_small=True)
    G = torch.randn(K, H, L, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def run(fn, dtype, cdtype):       # both from the fp32-rounded system: the kernels' own error is the point
        xs = [dt.float().to(dtype), A.cfloat().to(cdtype), B.cfloat().to(cdtype), C.cfloat().to(cdtype)]
        xs = [x.clone().requires_grad_() for x in xs]
        out = fn(*xs, scale, L)
        return (out, *torch.autograd.grad(out, xs, G.to(out.dtype)))

    def fused(dt_, A_, B_, C_, s, L_):
        return tvand.zoh_vandermonde_triton(dt_, torch.view_as_real(A_), torch.view_as_real(B_),
                                            torch.view_as_real(C_), s, L_)

    got = run(fused, torch.float32, torch.complex64)
    want = run(_zoh_ref, torch.float64, torch.complex128)
    assert got[0].shape == (K, H, L)
    for name, x, y in zip(["K", "dt", "A", "B", "C"], got, want):
        x, y = (torch.view_as_real(t) if t.is_complex() else t for t in (x.detach(), y.detach()))
        assert _rel(x, y) < 2e-6, name


def test_zoh_vandermonde_dispatch_and_layer_under_force_triton():
    """``zoh_vandermonde`` takes the fused kernels under force_triton and the PyTorch route otherwise;
    an S4D layer's kernel (bidirectional, conjugate pairs) and its parameter gradients agree between them."""
    from statespaces import backend
    from statespaces.layers import S4D

    torch.manual_seed(0)
    layer = S4D(8, d_state=16, bidirectional=True, seed=1)
    L = 300

    def grads():
        layer.zero_grad()
        K = layer.kernel(L)
        (K * torch.linspace(-1, 1, L)).square().sum().backward()
        return K.detach(), [p.grad.clone() for p in layer.parameters() if p.grad is not None]

    K0, g0 = grads()
    with backend.force_triton():
        K1, g1 = grads()
    assert K1.shape == K0.shape == (2, 8, L)
    assert _rel(K1, K0.double()) < 1e-5
    assert len(g0) == len(g1) and len(g1) >= 4
    for a, b in zip(g1, g0):
        assert _rel(a, b.double()) < 1e-4


@pytest.mark.parametrize("zoh", [False, True])
def test_fused_kernel_output_can_be_modified_in_place(zoh):
    """The Functions return the tensor they allocated, not a view of it: a view made inside an autograd Function
    refuses in-place edits ("Output 0 of ... is a view and is being modified inplace"). The gradient of the
    edited kernel is the plain one with the edit's factor (here: 2 on every lag but the zeroed last one)."""
    from statespaces import backend
    from statespaces.layers import S4D

    torch.manual_seed(0)
    layer = S4D(4, d_state=8, discretization="zoh" if zoh else "bilinear", seed=2)
    L = 37

    def grads(edit):
        layer.zero_grad()
        K = layer.kernel(L)
        if edit:
            K[..., -1] = 0.0
            K.mul_(2.0)
            K[:, 0] += 1.0
        (K * torch.linspace(-1, 1, L)).sum().backward()
        return [p.grad.clone() for p in layer.parameters() if p.grad is not None]

    with backend.force_triton():
        plain = grads(False)
        edited = grads(True)
    w = torch.linspace(-1, 1, L)
    layer.zero_grad()
    (layer.kernel(L) * torch.where(torch.arange(L) == L - 1, 0.0, 2.0 * w)).sum().backward()
    want = [p.grad.clone() for p in layer.parameters() if p.grad is not None]
    assert len(plain) == len(edited) == len(want) >= 3
    for a, b in zip(edited, want):
        assert _rel(a, b.double()) < 1e-4


def test_zoh_vandermonde_takes_conjugated_inputs_on_the_triton_path():
    """A conjugated C (conj bit set) made the Triton wrapper fail on ``view_as_real``; the op then switched Triton off
    for the rest of the process and fell back. Now the conj bit is resolved before the launch: no fallback, same
    kernel as the PyTorch route."""
    import warnings

    from statespaces import backend
    from statespaces.kernels.vandermonde import zoh_vandermonde

    dt, A, B, C = _zoh_system(2, 6, 1, seed=5)
    dt, A, B, C = dt.float(), A.cfloat(), B.cfloat(), C.cfloat()
    want = zoh_vandermonde(dt, A, B, C.conj().resolve_conj(), 2.0, 40)
    with backend.force_triton(), warnings.catch_warnings():
        warnings.simplefilter("error")
        got = zoh_vandermonde(dt, A, B, C.conj(), 2.0, 40)
    assert _rel(got, want.double()) < 1e-5
