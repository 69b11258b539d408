"""Triton kernels vs their reference twins, run on CPU by the Triton interpreter (tiny shapes).

TRITON_INTERPRET=1 is set here, before anything imports the kernel modules, so their
``@triton.jit`` functions are interpreted (numpy) and accept CPU tensors. The dispatcher only
sends CPU tensors to them inside ``dispatch.force_triton()``. Gradients are compared with the
float64 autograd of the reference twins (themselves gradchecked in test_kernels/test_scan).
The real-GPU run of the same checks is tests/test_triton_gpu.py.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter  # noqa: E402

from statespaces.kernels import dispatch, vandermonde, vandermonde_naive  # noqa: E402
from statespaces.ops.scan import scan_loop  # noqa: E402
from statespaces.ops.triton import scan as tscan  # noqa: E402
from statespaces.ops.triton import vandermonde as tvand  # noqa: E402

try:  # the DPLR Cauchy kernel exists only once statespaces.kernels.cauchy does
    from statespaces.kernels.cauchy import cauchy_naive
    from statespaces.ops.triton import cauchy as tcauchy
except ImportError:  # pragma: no cover
    cauchy_naive = tcauchy = None

patch_triton_interpreter()   # NumPy >= 2.4 vs the Triton 3.6 interpreter (conftest.py)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 16 so that L of a few dozen spans several tiles, chunks and backward splits."""
    monkeypatch.setattr(tvand, "FWD_BLOCK_L", 16)
    monkeypatch.setattr(tvand, "BWD_BLOCK_L", 16)
    monkeypatch.setattr(tvand, "BWD_TARGET_PROGRAMS", 64)
    monkeypatch.setattr(tvand, "FWD_TARGET_PROGRAMS", 64)
    monkeypatch.setattr(tvand, "MIN_TILES", 1)
    monkeypatch.setattr(tscan, "MAX_BLOCK_L", 16)
    monkeypatch.setattr(tscan, "MAX_BLOCK_N", 16)
    if tcauchy is not None:
        monkeypatch.setattr(tcauchy, "BLOCK_M", 16)
        monkeypatch.setattr(tcauchy, "BLOCK_S", 16)


def _modes(H=3, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    log_a = torch.complex(-0.2 * torch.rand(H, N, generator=g), 2 * torch.randn(H, N, generator=g))
    coef = torch.randn(H, N, dtype=torch.complex64, generator=g)
    return coef, log_a


def _close(x, ref, tol):
    scale = ref.abs().max().clamp_min(1.0)
    err = (x.to(ref.dtype) - ref).abs().max()
    assert err <= tol * scale, f"max error {float(err):.3g} > {tol} x {float(scale):.3g}"


# ---- Vandermonde -------------------------------------------------------------------------------
@pytest.mark.parametrize("L,batch", [(1, ()), (37, ()), (50, (2,)), (19, (2, 1))])
def test_vandermonde_triton_matches_reference(small_tiles, L, batch):
    coef, log_a = _modes(N=5 if L != 50 else 20)   # N=20 > BLOCK_N=16: two mode tiles
    coef = coef.expand(*batch, *coef.shape) * (1 + torch.arange(max(1, len(batch))).reshape(-1, *[1] * (1 + len(batch))) if batch else coef)
    out = tvand.vandermonde_triton(coef, log_a, L)
    assert out.shape == (*coef.shape[:-1], L) and out.dtype == torch.float32
    _close(out, vandermonde_naive(coef.to(torch.complex128), log_a.to(torch.complex128), L), 2e-6)


@pytest.mark.parametrize("L,batched", [(40, False), (23, True)])
def test_vandermonde_triton_gradients_match_reference(small_tiles, L, batched):
    coef, log_a = _modes(H=2, N=4, seed=1)
    if batched:
        coef = torch.stack([coef, 0.5j * coef])                          # (2, H, N), shared log_a
    g = torch.randn(*coef.shape[:-1], L)
    c, w = coef.clone().requires_grad_(), log_a.clone().requires_grad_()
    gc, gw = torch.autograd.grad(tvand.vandermonde_triton(c, w, L), (c, w), g)
    c64 = coef.to(torch.complex128).requires_grad_()
    w64 = log_a.to(torch.complex128).requires_grad_()
    rc, rw = torch.autograd.grad(vandermonde_naive(c64, w64, L), (c64, w64), g.double())
    _close(gc, rc, 1e-5)
    _close(gw, rw, 1e-5)


def test_vandermonde_triton_directional_derivative(small_tiles):
    """Gradcheck-style: <grad, dir> equals the fp64 central difference of the loss along dir."""
    coef, log_a = _modes(H=2, N=3, seed=2)
    L = 21
    g = torch.randn(2, L, dtype=torch.float64)
    c, w = coef.clone().requires_grad_(), log_a.clone().requires_grad_()
    gc, gw = torch.autograd.grad(tvand.vandermonde_triton(c, w, L), (c, w), g.float())
    dc = torch.randn_like(coef)
    dw = 0.1 * torch.randn_like(log_a)

    def loss(s):
        cc = coef.to(torch.complex128) + s * dc.to(torch.complex128)
        ww = log_a.to(torch.complex128) + s * dw.to(torch.complex128)
        return (vandermonde_naive(cc, ww, L) * g).sum()

    eps = 1e-6
    fd = (loss(eps) - loss(-eps)) / (2 * eps)
    # real directional derivative = Re <grad, dir> under the dLoss/dRe + i dLoss/dIm convention
    lin = (gc.cdouble().conj() * dc.cdouble()).real.sum() + (gw.cdouble().conj() * dw.cdouble()).real.sum()
    assert abs(float(lin - fd)) <= 1e-4 * max(1.0, abs(float(fd)))


# ---- scan -------------------------------------------------------------------------------------
def _scan_case(kind, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    L, N = 20, 5                   # 2 chunks of the 16-row test tile

    def rnd(*shape, dt=dtype, s=1.0):
        if dt.is_complex:
            return s * torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)) / 2 ** 0.5
        return s * torch.randn(*shape, generator=g)

    b = rnd(2, 2, L, N)
    x0 = rnd(2, 2, N)
    if kind == "full":
        a = rnd(2, 2, L, N, s=0.7)
    elif kind == "lti":            # one transition per channel, broadcast over batch and time
        a = rnd(2, 1, N, s=0.9)
    elif kind == "expanded":       # stride-0 expansion along L
        a = rnd(2, 1, N, s=0.9).expand(2, L, N)
    elif kind == "mixed":          # real transitions, complex forcing (LinOSS-style)
        a = 0.9 * torch.rand(2, 2, L, N, generator=g)
        b = rnd(2, 2, L, N, dt=torch.complex64)
        x0 = rnd(2, 2, N, dt=torch.complex64)
    return a, b, x0


@pytest.mark.parametrize(
    "kind,dtype,with_x0",
    [
        ("full", torch.complex64, True),
        ("full", torch.float32, False),
        ("lti", torch.complex64, False),
        ("lti", torch.float32, True),
        ("expanded", torch.complex64, True),
        ("mixed", torch.float32, True),
    ],
)
def test_scan_triton_matches_loop_and_gradients(small_tiles, kind, dtype, with_x0):
    a, b, x0 = _scan_case(kind, dtype)
    x0 = x0 if with_x0 else None
    leaves = [t.detach().clone().requires_grad_() for t in (a, b)] + ([x0.clone().requires_grad_()] if with_x0 else [])
    out = tscan.scan_diagonal_triton(*leaves[:2], leaves[2] if with_x0 else None)
    ref_in = [t.detach().to(torch.complex128 if t.is_complex() else torch.float64).requires_grad_() for t in leaves]
    ref = scan_loop(ref_in[0], ref_in[1], ref_in[2] if with_x0 else None)
    assert out.shape == ref.shape and out.is_complex() == ref.is_complex()
    _close(out, ref, 1e-5)
    G = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, G)
    rgrads = torch.autograd.grad(ref, ref_in, G.to(ref.dtype))
    for gg, rg, leaf in zip(grads, rgrads, leaves):
        assert gg.shape == leaf.shape and gg.dtype == leaf.dtype
        _close(gg, rg, 1e-5)


# ---- Cauchy (DPLR) ---------------------------------------------------------------------------
def _cauchy_case(seed=0):
    g = torch.Generator().manual_seed(seed)

    def c(*shape):
        return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))

    H, J, N, K = 2, 2, 20, 19                      # N, K > 16: several tiles each way
    w = torch.complex(-0.5 - torch.rand(H, 1, N, generator=g), torch.randn(H, 1, N, generator=g))
    z = 1j * torch.linspace(-3, 3, K).expand(H, 1, K) + 0.1
    return c(H, J, N), z.contiguous(), w


@pytest.mark.skipif(tcauchy is None, reason="statespaces.kernels.cauchy is not in this checkout")
@pytest.mark.parametrize("conj", [False, True])
def test_cauchy_triton_matches_reference_and_gradients(small_tiles, conj):
    v, z, w = _cauchy_case()
    leaves = [t.clone().requires_grad_() for t in (v, z, w)]
    out = tcauchy.cauchy_triton(*leaves, conj=conj)
    ref_in = [t.to(torch.complex128).requires_grad_() for t in (v, z, w)]
    ref = cauchy_naive(*ref_in, conj=conj)
    assert out.shape == ref.shape == (2, 2, 19)
    _close(out, ref, 1e-5)
    G = torch.randn_like(out)
    for gg, rg in zip(torch.autograd.grad(out, leaves, G), torch.autograd.grad(ref, ref_in, G.to(ref.dtype))):
        _close(gg, rg, 1e-5)


@pytest.mark.skipif(tcauchy is None, reason="statespaces.kernels.cauchy is not in this checkout")
def test_dispatch_cauchy_under_force(small_tiles):
    v, z, w = _cauchy_case(1)
    with dispatch.force_triton():
        out = dispatch.cauchy(v, z, w)
    _close(out, cauchy_naive(v.cdouble(), z.cdouble(), w.cdouble()), 1e-5)


# ---- dispatch -----------------------------------------------------------------------------------
def test_dispatch_routes_cpu_to_pytorch_unless_forced(monkeypatch):
    calls = []
    real = tvand.vandermonde_triton
    monkeypatch.setattr(tvand, "vandermonde_triton", lambda *a: calls.append(1) or real(*a))
    coef, log_a = _modes()
    ref = vandermonde(coef, log_a, 9)
    assert calls == []
    with dispatch.force_triton():
        out = vandermonde(coef, log_a, 9)
    assert calls == [1]
    _close(out, ref.double(), 2e-6)
    monkeypatch.setenv("STATESPACES_NO_TRITON", "1")
    with dispatch.force_triton():
        vandermonde(coef, log_a, 9)
    assert calls == [1]


def test_dispatch_scan_under_force_matches_pytorch():
    a, b, x0 = _scan_case("full", torch.complex64)
    a, b, x0 = a[:1, :1], b[:1, :1], x0[:1, :1]
    with dispatch.force_triton():
        out = dispatch.scan_diagonal(a, b, x0)
    _close(out, dispatch.scan_diagonal(a.cdouble(), b.cdouble(), x0.cdouble()), 1e-5)


def test_s4d_layer_under_forced_triton_matches_pytorch_path():
    from statespaces import S4D

    torch.manual_seed(0)
    layer = S4D(d_model=3, d_state=8)
    x = torch.randn(2, 24, 3)
    y_ref = layer(x)
    g_ref = torch.autograd.grad(y_ref.square().sum(), list(layer.parameters()))
    with dispatch.force_triton():
        y = layer(x)
        g = torch.autograd.grad(y.square().sum(), list(layer.parameters()))
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for p, q in zip(g, g_ref):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4)
