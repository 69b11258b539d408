"""The fused LinOSS scan (issue 17 item 4) under the Triton interpreter, against the float64 loop.

:func:`statespaces.ops.triton.linoss.linoss_scan_triton` runs ``x_n = M x_{n-1} + f (W u_n)`` for 2x2
real blocks with the forcing built in-kernel from u (B, L, H); its twins are the float64 loop
:func:`statespaces.ops.scan.scan_loop` (``block=True``) and the layer's PyTorch chunked scan. Tiles
are lowered to 16 so that tiny shapes span several chunks, channel blocks and H slices.

The interpreter's ``associative_scan`` calls the combine function once per element; the fixture
``fast_scan`` replaces it, for this module, by the same left fold done one row at a time (identical
results, ~BLOCK_C times fewer Python calls) so that these tests stay in the fast tier.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter, row_fold_scan  # noqa: E402

from statespaces import backend  # noqa: E402
from statespaces.kernels.oscillator import oscillator_transition  # noqa: E402
from statespaces.ops.scan import scan_loop  # noqa: E402
from statespaces.ops.triton import linoss as tlin  # noqa: E402

patch_triton_interpreter()


@pytest.fixture
def fast_scan(monkeypatch):
    import triton.runtime.interpreter as interp

    monkeypatch.setattr(interp.ScanOps, "generic_scan", row_fold_scan)


@pytest.fixture
def small_tiles(monkeypatch, fast_scan):
    monkeypatch.setattr(tlin, "BLOCK_L", 16)
    monkeypatch.setattr(tlin, "FWD_MAX_BLOCK_C", 16)
    monkeypatch.setattr(tlin, "BWD_MAX_BLOCK_C", 16)
    monkeypatch.setattr(tlin, "BLOCK_H", 16)
    monkeypatch.setattr(tlin, "MIN_SEGMENT_CHUNKS", 1)     # L split into segments of one chunk each


def _case(scheme, Bsz=2, L=37, H=20, P=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.rand(P, dtype=torch.float64, generator=g)
    dt = 0.3 + 0.5 * torch.rand(P, dtype=torch.float64, generator=g)
    M, f = oscillator_transition(A, dt, scheme, validate=False)
    W = torch.randn(2 * P, H, generator=g, dtype=torch.float64) / H ** 0.5
    u = torch.randn(Bsz, L, H, generator=g, dtype=torch.float64)
    x0 = torch.randn(Bsz, 2, 2 * P, generator=g, dtype=torch.float64)
    return u, W, M, f, x0


def _loop(u, W, M, f, x0):
    """Float64 twin: the sequential loop over the real 2P channels."""
    v = u @ W.T
    M2, f2 = torch.cat([M, M], -1), torch.cat([f, f], -1)
    F = torch.stack([f2[0] * v, f2[1] * v], -2)
    X = scan_loop(M2.unsqueeze(0).expand(u.shape[1], *M2.shape), F, x0, block=True)
    return X[:, :, 1], X[:, -1]


def _rel(x, ref):
    return float((x.detach().double() - ref.detach()).abs().max() / ref.detach().abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("scheme,with_x0,with_gfin,L,Bsz", [
    ("im", False, False, 37, 1),          # 3 chunks, the last partial
    ("imex", True, True, 20, 2),          # |lambda| = 1, state in and out, gradients summed over the batch
    ("imex", True, True, 1, 1),           # one step: lam_0 carries g_fin
    ("im", False, True, 32, 1),           # L a multiple of the chunk; g_fin at n = L-2; one segment
])
def test_linoss_scan_triton_matches_float64_loop(small_tiles, monkeypatch, scheme, with_x0, with_gfin, L, Bsz):
    """Segments along L (chained boundary states / adjoints) in all cases but the L = 32 one."""
    if L == 32:
        monkeypatch.setattr(tlin, "MIN_SEGMENT_CHUNKS", 100)
    u, W, M, f, x0 = _case(scheme, Bsz=Bsz, L=L)
    leaves = [u.float(), W.float(), M.clone(), f.clone()] + ([x0.float()] if with_x0 else [])
    leaves = [t.requires_grad_() for t in leaves]
    y, fin = tlin.linoss_scan_triton(*leaves[:4], leaves[4] if with_x0 else None)
    assert y.shape == (Bsz, L, 20) and fin.shape == (Bsz, 2, 20) and y.dtype == torch.float32
    ref_in = [t.detach().double().requires_grad_() for t in leaves]
    ry, rfin = _loop(*ref_in[:4], ref_in[4] if with_x0 else None)
    assert _rel(y, ry) < 2e-6 and _rel(fin, rfin) < 2e-6
    gy = torch.randn(ry.shape, dtype=torch.float64)
    gf = torch.randn(rfin.shape, dtype=torch.float64) if with_gfin else torch.zeros_like(rfin)
    loss = (y * gy.float()).sum() + ((fin * gf.float()).sum() if with_gfin else 0)
    grads = torch.autograd.grad(loss, leaves)
    rgrads = torch.autograd.grad((ry * gy).sum() + (rfin * gf).sum(), ref_in)
    for got, want, leaf in zip(grads, rgrads, leaves):
        assert got.shape == leaf.shape and got.dtype == leaf.dtype
        assert _rel(got, want) < 5e-6, tuple(leaf.shape)


def test_linoss_scan_triton_rejects_bad_shapes():
    u, W, M, f, x0 = _case("im", L=4)
    with pytest.raises(ValueError, match="u must be"):
        tlin.linoss_scan_triton(u[0].float(), W.float(), M, f)
    with pytest.raises(ValueError, match=r"M \(2, 2, P\)"):
        tlin.linoss_scan_triton(u.float(), W.float(), M[..., :3], f)
    with pytest.raises(ValueError, match="x0 must be"):
        tlin.linoss_scan_triton(u.float(), W.float(), M, f, x0[:1].float())


def test_segments_cover_the_chunks():
    for programs in (1, 3, 128, 512, 4096):
        for K in (1, 2, 7, 128, 2048):
            S, KS = tlin._segments(programs, K)
            assert (S - 1) * KS < K <= S * KS
            assert S == 1 or (KS >= tlin.MIN_SEGMENT_CHUNKS and programs * S <= 2 * tlin.TARGET_PROGRAMS)


def test_in_kernel_block_powers_match_repeated_products():
    """``_block_pow`` (the kernels' binary powering of the fp64 2x2 blocks: M^BLOCK_L, and the segment power
    T = (M^BLOCK_L)^KS of the in-kernel chain) against repeated products, n = 0 .. 40."""
    import triton.language as tl

    @triton.jit
    def probe(m_ptr, out_ptr, n, P, BLOCK: tl.constexpr):
        p = tl.arange(0, BLOCK)
        mask = p < P
        k11, k12, k21, k22 = tlin._load_block2(m_ptr, p, mask, P)
        r11, r12, r21, r22 = tlin._block_pow(k11, k12, k21, k22, n)
        tl.store(out_ptr + p, r11, mask=mask)
        tl.store(out_ptr + P + p, r12, mask=mask)
        tl.store(out_ptr + 2 * P + p, r21, mask=mask)
        tl.store(out_ptr + 3 * P + p, r22, mask=mask)

    _, _, M, _, _ = _case("imex")
    P = M.shape[-1]
    ref = torch.eye(2, dtype=torch.float64)[:, :, None].expand(2, 2, P).contiguous()
    for n in range(0, 41):
        out = torch.empty(2, 2, P, dtype=torch.float64)
        probe[(1,)](M.contiguous(), out, n, P, BLOCK=16)
        torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-14)
        ref = torch.einsum("ijp,jkp->ikp", ref, M)


@pytest.mark.parametrize("cls,kw", [("linoss.LinOSS", dict(discretization="IMEX", mode="scan")), ("dlinoss.DLinOSS", dict(mode="scan"))])
def test_layer_under_forced_triton_matches_its_torch_scan(small_tiles, cls, kw):
    """LinOSS / D-LinOSS forward with ``state=`` in and ``return_state`` out, and the parameter
    gradients, on the fused kernel (forced on CPU) vs the layer's own PyTorch chunked scan."""
    import importlib

    mod, name = cls.split(".")
    torch.manual_seed(0)
    layer = getattr(importlib.import_module(f"statespaces.layers.{mod}"), name)(d_model=5, n_oscillators=6, seed=0, **kw)
    x = torch.randn(2, 21, 5)
    state = 0.3 * torch.randn(2, 2, 6, dtype=torch.complex64)
    y_ref, s_ref = layer(x, state=state, return_state=True)
    g_ref = torch.autograd.grad(y_ref.square().sum() + s_ref.abs().square().sum(), list(layer.parameters()))
    calls = []
    real = tlin.linoss_scan_triton
    with backend.force_triton():
        import unittest.mock as mock

        with mock.patch.object(tlin, "linoss_scan_triton", lambda *a, **k: calls.append(1) or real(*a, **k)):
            y, s = layer(x, state=state, return_state=True)
            g = torch.autograd.grad(y.square().sum() + s.abs().square().sum(), list(layer.parameters()))
    assert calls, "the layer did not take the Triton path"
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(s, s_ref, atol=2e-5, rtol=2e-5)
    for p, q in zip(g, g_ref):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cls", ["linoss.LinOSS", "dlinoss.DLinOSS"])
def test_bidirectional_layer_under_forced_triton_takes_two_fused_scans(small_tiles, cls):
    """A bidirectional ('sum') layer on the fused path: both directions run the kernel with the blocks (M, f)
    alone (no polar form formed: ``_system`` is not called), and output and gradients match the PyTorch scan."""
    import importlib
    import unittest.mock as mock

    mod, name = cls.split(".")
    torch.manual_seed(1)
    layer = getattr(importlib.import_module(f"statespaces.layers.{mod}"), name)(d_model=5, n_oscillators=6, seed=0,
                                                                                 bidirectional=True, mode="scan")
    x = torch.randn(2, 19, 5)
    y_ref = layer(x)
    g_ref = torch.autograd.grad(y_ref.square().sum(), list(layer.parameters()))
    calls = []
    real = tlin.linoss_scan_triton
    with backend.force_triton(), mock.patch.object(tlin, "linoss_scan_triton",
                                                   lambda *a, **k: calls.append(1) or real(*a, **k)), \
            mock.patch.object(type(layer), "_system", side_effect=AssertionError("the fused path formed the system")):
        y = layer(x)
        g = torch.autograd.grad(y.square().sum(), list(layer.parameters()))
    assert len(calls) == 2
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=2e-5)
    for p, q in zip(g, g_ref):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scheme", ["im", "imex"])
def test_transition_kernel_matches_the_formulas_and_their_gradients(scheme):
    """The one-launch transition (:mod:`statespaces.ops.triton.oscillator`, the CUDA path of
    ``oscillator_transition``) equals the PyTorch formulas, and the autograd node built on its Jacobian gives the
    gradients of plain autograd through them (A = 0 and dt^2 A near the IMEX bound included; P spans two programs)."""
    from statespaces.kernels.oscillator import oscillator_transition_ref
    from statespaces.ops.triton import oscillator as tosc

    g = torch.Generator().manual_seed(3)
    P = tosc.BLOCK + 7
    dt = 0.05 + 0.9 * torch.rand(P, generator=g, dtype=torch.float64)
    A = torch.rand(P, generator=g, dtype=torch.float64) * 3.9 / (dt * dt)
    A[0] = 0.0
    M, f, J = tosc.transition_triton(A, dt, scheme)
    M0, f0 = oscillator_transition_ref(A, dt, scheme)
    torch.testing.assert_close(M, M0, atol=0, rtol=1e-14)
    torch.testing.assert_close(f, f0, atol=0, rtol=1e-14)
    w = [torch.randn(2, 2, P, generator=g, dtype=torch.float64), torch.randn(2, P, generator=g, dtype=torch.float64)]
    grads = []
    for forced in (True, False):
        a, d = A.clone().requires_grad_(), dt.clone().requires_grad_()
        with backend.force_triton(forced):
            Mx, fx = oscillator_transition(a, d, scheme, validate=False) if forced else \
                oscillator_transition_ref(a, d, scheme)
        ((Mx * w[0]).sum() + (fx * w[1]).sum()).backward()
        grads.append((a.grad, d.grad))
    for x, y in zip(*grads):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=1e-12)
    with backend.force_triton():              # without autograd: the kernel's M and f
        Mn, fn = oscillator_transition(A, dt, scheme, validate=False)
    torch.testing.assert_close(Mn, M0, atol=0, rtol=1e-14)


@pytest.mark.parametrize("scheme", ["im", "imex"])
def test_damped_transition_kernel_gives_the_normal_form_and_its_jacobian(scheme):
    """D-LinOSS's (A_hat, G_hat, dt) -> (M', f', T) in one launch: the blocks of ``damped_system`` (projection
    into the complex band included) in the basis where they are normal, x = [[p, q], [0, 1]] x' (so that
    T M' T^-1 = M, T f' = f), and the one-node gradients (forward-mode Jacobian (3, 8, P)) against autograd
    through the formulas (``damped_system``, then ``normal_form``, its PyTorch twin), float64, at points on every
    side of the projection's kinks."""
    from statespaces.kernels.oscillator import normal_form
    from statespaces.layers.dlinoss import _damped_fused, damped_system
    from statespaces.ops.triton import oscillator as tosc

    g = torch.Generator().manual_seed(11)
    P = tosc.BLOCK + 9
    dt = 0.05 + 0.9 * torch.rand(P, generator=g, dtype=torch.float64)
    A_hat = (torch.rand(P, generator=g, dtype=torch.float64) * 12 - 2) / (dt * dt)
    G_hat = (torch.rand(P, generator=g, dtype=torch.float64) * 6 - 2) / dt
    Mn, fn, T, J = tosc.damped_transition_triton(A_hat, G_hat, dt, scheme)
    _, _, sys = damped_system(A_hat, G_hat, dt, scheme)
    p, q = T
    from statespaces.kernels.oscillator import MAX_SHEAR

    assert tosc.MAX_SHEAR.value == MAX_SHEAR                # the kernel's copy of the shear bound
    rotated, sheared = p != 1, (p == 1) & (q != 0)     # in the band; clamped to its edges (beta ~ 0): sheared
    ok = rotated | sheared                              # (a lane left in its own basis has T = I)
    assert P // 4 < int(rotated.sum()) < P and int(sheared.sum()) > 0
    Tm = torch.stack([torch.stack([p, q]), torch.stack([torch.zeros_like(p), torch.ones_like(p)])])
    Ti = torch.stack([torch.stack([1 / p, -q / p]), torch.stack([torch.zeros_like(p), torch.ones_like(p)])])
    torch.testing.assert_close(torch.einsum("ijp,jkp,klp->ilp", Tm, Mn, Ti), sys.M, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(torch.einsum("ijp,jp->ip", Tm, fn), sys.f, atol=1e-12, rtol=1e-10)
    w = [torch.randn(2, 2, P, generator=g, dtype=torch.float64), torch.randn(2, P, generator=g, dtype=torch.float64),
         torch.randn(2, P, generator=g, dtype=torch.float64)]
    grads = []
    for forced in (True, False):
        xs = [t.clone().requires_grad_() for t in (A_hat, G_hat, dt)]
        if forced:
            with backend.force_triton():
                outs = _damped_fused(*xs, scheme)
        else:
            outs = normal_form(*damped_system(*xs, scheme)[2][:2])
        sum((o * wi)[..., ok].sum() for o, wi in zip(outs, w)).backward()
        grads.append([x.grad for x in xs])
    for x, y in zip(*grads):
        torch.testing.assert_close(x, y, atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("disc", ["imex", "im"])
def test_damped_fused_scan_precision_against_float64(disc, fast_scan):
    """D-LinOSS (ring init: eigenvalues near +-r, blocks far from normal) on the fused scan in fp32 against the
    float64 layer: the normal-form blocks keep it near fp32 rounding (it was 1.4e-4 at L = 1024 with the blocks
    rounded in their original basis; the PyTorch scan in fp32: 6.7e-4)."""
    from statespaces.layers import DLinOSS

    torch.manual_seed(0)
    a = DLinOSS(16, 32, mode="scan", discretization=disc, seed=0)
    b = DLinOSS(16, 32, mode="scan", discretization=disc, seed=0).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 256, 16, dtype=torch.float64)
    ref = b(x).detach()
    with backend.force_triton():
        y = a(x.float()).detach()
    assert float((y.double() - ref).abs().max() / ref.abs().max()) < 5e-6


def test_fused_transition_outputs_can_be_modified_in_place():
    """The fused transition kernels write M, f and the Jacobian into one buffer; the autograd node returned views of
    it, so ``M.mul_(2)`` raised on the Triton path (not on PyTorch's). The gradients of the edited outputs agree."""
    grads = []
    for force in (False, True):
        A = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
        dt = (0.1 + torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).requires_grad_()
        with backend.force_triton(force):
            M, f = oscillator_transition(A, dt, "IM")
        M.mul_(2.0)
        f[0] += 1.0
        (M.square().sum() + f.square().sum()).backward()
        grads.append((A.grad, dt.grad))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("disc", ["IM", "IMEX"])
def test_dlinoss_chunked_kernel_near_theta_pi_against_float64(disc):
    """The Triton chunked kernel carries the chunk states in float32. With the tables of a block far from normal
    (D-LinOSS, theta = pi - 4e-4) in its own basis, a stateful D-LinOSS-IM call was 5.7e-3 off float64 at
    L = 1000 (7.8e-5 at 400); in the normal basis (``layers.oscillator_system.normal_chunk_tables``), 3.7e-7. Output and
    final state, from a given state (rounded as the layer receives it)."""
    from test_mutation_gaps_oscillators import _dlinoss_near_theta_pi, _rel

    layer, l64, x, _ = _dlinoss_near_theta_pi(disc)
    x = x[:1, :600]
    s0 = (0.3 * torch.randn_like(l64.initial_state(1))).to(torch.complex64)
    with backend.force_triton():
        y, s = layer(x, state=s0, mode="chunked", return_state=True)
    y64, s64 = l64(x.double(), state=s0.to(torch.complex128), mode="conv", return_state=True)
    assert _rel(y, y64) < 2e-6 and _rel(s, s64) < 2e-6
