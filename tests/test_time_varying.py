"""The fused time-varying diagonal SSM (ops.time_varying): the CPU Function against its reference twin (the
forcing, the sequential scan and the readout as plain autograd ops), gradcheck, and the layers that use it."""
import pytest
import torch

from statespaces import backend
from statespaces.layers import S4D
from statespaces.ops import time_varying as tv
from statespaces.ops.time_varying import reversed_steps, shift_anticausal, time_varying_ssm, time_varying_ssm_ref

C128 = torch.complex128


def _tables(B=2, L=6, H=3, M=4, dtype=C128, seed=0, x0=True):
    g = torch.Generator().manual_seed(seed)
    real = dtype.to_real()
    r = torch.rand(B, L, H, M, generator=g, dtype=torch.float64) * 0.5 + 0.4
    th = torch.rand(B, L, H, M, generator=g, dtype=torch.float64) * 6
    dA = torch.polar(r, th).to(dtype)
    dB = torch.randn(B, L, H, M, generator=g, dtype=dtype)
    u = torch.randn(B, L, H, generator=g, dtype=torch.float64).to(real)
    C = torch.randn(H, M, generator=g, dtype=dtype)
    s0 = torch.randn(B, H, M, generator=g, dtype=dtype) if x0 else None
    return [t.requires_grad_() if t is not None else None for t in (dA, dB, u, C, s0)]


@pytest.fixture
def fused(monkeypatch):
    """Every shape takes the fused Function (its width rule would keep these small ones on the composition)."""
    monkeypatch.setattr(tv, "FUSED_STEP_BYTES", 0)


def _loop(dA, dB, u, C, scale, x0, anticausal):
    """The pass written out step by step from its definition (module docstring), independent of both routes."""
    B, L, H, M = dA.shape
    x = torch.zeros(B, H, M, dtype=dA.dtype) if x0 is None else x0
    ys, states = [], []
    order = range(L - 1, -1, -1) if anticausal else range(L)
    for t in order:
        table = (t + 1) % L if anticausal else t       # the anti-causal pass: the interval after sample t
        x = dA[:, table] * x + dB[:, table] * u[:, t, :, None]
        states.append(x)
        ys.append(scale * (C * x).real.sum(-1))
    y = torch.stack(ys[::-1] if anticausal else ys, 1)
    if anticausal:
        y = torch.cat([y[:, 1:], torch.zeros_like(y[:, :1])], 1)     # read out one step later (lags -1..-L)
    return y, states[-1]


@pytest.mark.parametrize("anticausal", [False, True])
@pytest.mark.parametrize("with_x0", [False, True])
def test_fused_matches_the_loop_and_the_reference_twin(fused, anticausal, with_x0):
    dA, dB, u, C, x0 = _tables(x0=with_x0)
    y, last = time_varying_ssm(dA, dB, u, C, 0.7, x0, anticausal)
    assert y.grad_fn is not None and "TimeVaryingSSM" in type(y.grad_fn).__name__
    y_loop, last_loop = _loop(dA, dB, u, C, 0.7, x0, anticausal)
    y_ref, last_ref = time_varying_ssm_ref(dA, dB, u, C, 0.7, x0, anticausal)
    for got in ((y, last), (y_ref, last_ref)):
        torch.testing.assert_close(got[0], y_loop, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1], last_loop, rtol=1e-12, atol=1e-12)
    inputs = [t for t in (dA, dB, u, C, x0) if t is not None]
    gy, gl = torch.randn_like(y), torch.randn_like(last)
    # both outputs, then each alone (an unused output's gradient arrives as None)
    for use_y, use_last in ((True, True), (True, False), (False, True)):
        def loss(y_, last_, use_y=use_y, use_last=use_last):
            return (y_ * gy).sum() * use_y + (last_ * gl.conj()).real.sum() * use_last
        got = torch.autograd.grad(loss(y, last), inputs, retain_graph=True)
        want = torch.autograd.grad(loss(y_loop, last_loop), inputs, retain_graph=True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("anticausal", [False, True])
def test_fused_gradcheck(fused, anticausal):
    dA, dB, u, C, x0 = _tables(B=1, L=4, H=2, M=2, seed=3)
    assert torch.autograd.gradcheck(lambda *a: time_varying_ssm(*a[:4], 1.3, a[4], anticausal),
                                    (dA, dB, u, C, x0), eps=1e-6, atol=1e-7)


def test_fused_float32_matches_float64(fused):
    dA, dB, u, C, x0 = _tables(B=2, L=40, H=8, M=4, seed=5)
    want = time_varying_ssm(dA, dB, u, C, 2.0, x0, False)[0]
    low = [t.detach().to(torch.complex64 if t.is_complex() else torch.float32) for t in (dA, dB, u, C, x0)]
    got = time_varying_ssm(*low[:4], 2.0, low[4], False)[0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want.detach(), rtol=1e-4, atol=1e-4)


def test_the_width_rule_and_the_other_paths():
    """Narrow states, the "ref" backend and mixed dtypes take the composition; all give the same numbers."""
    dA, dB, u, C, x0 = _tables(B=2, L=5, H=3, M=4)
    assert not tv._fused(dA, dB, u, C, x0)                  # 2 x 3 x 4 x 16 bytes per step: under the loop's width
    wide = _tables(B=4, L=5, H=16, M=16)
    assert tv._fused(*wide[:4], wide[4])
    assert not tv._fused(*wide[:3], wide[3].to(torch.complex64), wide[4])   # C of another dtype
    want = time_varying_ssm_ref(*wide[:4], 1.0, wide[4], True)[0]
    torch.testing.assert_close(time_varying_ssm(*wide[:4], 1.0, wide[4], True)[0], want)
    with backend.use_backend("ref"):
        y = time_varying_ssm(*wide[:4], 1.0, wide[4], True)[0]
    assert "TimeVaryingSSM" not in type(y.grad_fn).__name__
    torch.testing.assert_close(y, want)


def test_second_derivatives_name_the_ref_backend(fused):
    dA, dB, u, C, x0 = _tables()
    y, _ = time_varying_ssm(dA, dB, u, C, 1.0, x0)
    with pytest.raises(RuntimeError, match="use_backend\\('ref'\\)"):
        torch.autograd.grad(y.square().sum(), C, create_graph=True)
    with backend.use_backend("ref"):                       # the twin's plain ops have second derivatives
        y, _ = time_varying_ssm(dA, dB, u, C, 1.0, x0)
        (g,) = torch.autograd.grad(y.square().sum(), C, create_graph=True)
        assert torch.autograd.grad(g.abs().sum(), dA)[0].abs().sum() > 0


def test_shapes_are_checked():
    dA, dB, u, C, x0 = _tables()
    with pytest.raises(ValueError, match="C must have shape \\(H, M\\)"):
        time_varying_ssm(dA, dB, u, C[:, :2], 1.0)
    with pytest.raises(ValueError, match="dA and dB must have shape"):
        time_varying_ssm(dA, dB[:, :3], u, C, 1.0)
    with pytest.raises(ValueError, match="initial state must have shape"):
        time_varying_ssm(dA, dB, u, C, 1.0, x0[:1])


def test_bad_dtypes_and_empty_sequences_are_refused():
    dA, dB, u, C, x0 = _tables()
    with pytest.raises(TypeError, match="dA must be complex"):
        time_varying_ssm(dA.real, dB, u, C, 1.0)
    with pytest.raises(TypeError, match="C must be complex"):
        time_varying_ssm(dA, dB, u, C.real, 1.0)
    with pytest.raises(TypeError, match="x0 must be complex"):
        time_varying_ssm(dA, dB, u, C, 1.0, x0.real)
    with pytest.raises(TypeError, match="u must be a real floating-point tensor.*complex u"):
        time_varying_ssm(dA, dB, u.to(C128), C, 1.0)
    with pytest.raises(ValueError, match="L = 0"):
        time_varying_ssm(dA[:, :0], dB[:, :0], u[:, :0], C, 1.0)


def test_a_scale_tensor_keeps_its_gradient(fused):
    """A learnable scale (a DiagonalSSM of one's own may return one) takes the composition: float() would detach it."""
    dA, dB, u, C, x0 = _tables()
    grads = []
    for fn in (time_varying_ssm, time_varying_ssm_ref):
        s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        fn(dA, dB, u, C, s, x0)[0].square().sum().backward()
        grads.append(s.grad)
    torch.testing.assert_close(grads[0], grads[1])
    y, _ = time_varying_ssm(dA, dB, u, C, torch.tensor(2.0, dtype=torch.float64), x0)   # no gradient: fused
    assert "TimeVaryingSSM" in type(y.grad_fn).__name__


def test_anticausal_is_the_reversed_pass_of_the_reordered_tables():
    """The definition the fused pass implements by indexing: the causal pass over the flipped input with the tables
    reordered by reversed_steps, flipped back and read out one step later."""
    dA, dB, u, C, _ = _tables(B=3, L=7)
    causal = time_varying_ssm_ref(reversed_steps(dA), reversed_steps(dB), u.flip(1), C, 0.5)[0]
    torch.testing.assert_close(time_varying_ssm_ref(dA, dB, u, C, 0.5, anticausal=True)[0],
                               shift_anticausal(causal.flip(1)))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_s4d_with_intervals_fused_equals_the_composition(monkeypatch, bidirectional):
    """The layer's forward and gradients through the fused Function equal those through the composition."""
    torch.manual_seed(0)
    layer = S4D(8, 8, bidirectional=bidirectional).double()
    x = torch.randn(3, 12, 8, dtype=torch.float64, requires_grad=True)
    ts = torch.cumsum(torch.randint(1, 4, (3, 12)).double(), 1)

    def run(threshold):
        monkeypatch.setattr(tv, "FUSED_STEP_BYTES", threshold)
        layer.zero_grad()
        y = layer(x, timestamps=ts)
        y = y[0] if isinstance(y, tuple) else y
        gx, = torch.autograd.grad(y.square().sum(), x, retain_graph=True)
        y.square().sum().backward()
        return y.detach(), gx, {n: p.grad.clone() for n, p in layer.named_parameters()}, y.grad_fn

    y0, gx0, gp0, _ = run(1 << 40)             # composition
    y1, gx1, gp1, _ = run(0)                   # fused
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx1, gx0, rtol=1e-10, atol=1e-10)
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], rtol=1e-10, atol=1e-10, msg=name)
