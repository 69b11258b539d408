"""S5 (Smith, Warrington & Linderman 2023): the MIMO diagonal layer against references written from the math.

The reference discretizes each mode with a 2x2 matrix exponential (ZOH) or the bilinear formula
written out here, runs an explicit float64 loop over time, and is compared with the layer's
parallel scan, its single steps, its chunked stateful forward and a dense convolution with its
MIMO kernel, all to 1e-10.
"""
import math

import pytest
import torch

from statespaces.hippo.forms import low_rank
from statespaces.hippo.measures import transition
from statespaces.layers import S5
from statespaces.layers.registry import make_layer

f64, c128 = torch.float64, torch.complex128
CONFIGS = {
    "zoh": dict(),
    "bilinear": dict(discretization="bilinear"),
    "full": dict(conj_sym=False),
    "blocks": dict(blocks=2),
}


def _layer(H=3, P=8, seed=0, **kw):
    return S5(H, P, seed=seed, **kw).double()


def _discretize(lam, steps, disc):
    """``(Lambda_bar, g)`` per mode, B_bar = g B: ZOH by the matrix exponential of [[lam dt, dt], [0, 0]]."""
    lam, steps = torch.broadcast_tensors(lam, steps.to(c128))
    if disc == "zoh":
        blk = torch.zeros(*lam.shape, 2, 2, dtype=c128)
        blk[..., 0, 0] = lam * steps
        blk[..., 0, 1] = steps
        E = torch.linalg.matrix_exp(blk)
        return E[..., 0, 0], E[..., 0, 1]
    half = lam * steps / 2
    return (1 + half) / (1 - half), steps / (1 - half)


def _reference(layer, u, rate=1.0, dt=None):
    """Causal output (B, L, H) and final state (B, M) by an explicit loop over time (float64)."""
    lam = layer.continuous_A().detach().to(c128)
    Delta = torch.exp(layer.log_dt.detach()).to(f64) * rate
    Bt, C, D = layer.B_complex.detach(), layer.C_complex.detach()[0], layer.D.detach()
    scale = 2.0 if layer.conj_sym else 1.0
    Bsz, L, _ = u.shape
    x = torch.zeros(Bsz, lam.shape[0], dtype=c128)
    ys = []
    for t in range(L):
        steps = Delta if dt is None else dt[:, t:t + 1] * Delta          # (M,) or (B, M)
        a, g = _discretize(lam, steps, layer.discretization)
        x = a * x + g * (u[:, t].to(c128) @ Bt.T)
        ys.append(scale * (x @ C.T).real + D * u[:, t])
    return torch.stack(ys, 1), x


def _conv(K, u, D):
    """``y_n = sum_{l <= n} K[:, :, l] u_{n-l} + D u_n``, a dense double loop."""
    L = u.shape[1]
    y = torch.zeros_like(u)
    for n in range(L):
        for l in range(n + 1):
            y[:, n] += u[:, n - l] @ K[:, :, l].T
    return y + D * u


# ---- initialisation ------------------------------------------------------------------------------
@pytest.mark.parametrize("blocks", [1, 2])
def test_init_is_block_diagonal_hippo_n(blocks):
    P = 8
    layer = _layer(P=P, blocks=blocks, seed=1)
    n = P // blocks
    A, _ = transition("legs", n)
    p = low_rank("legs", n)[0]
    eig = torch.linalg.eigvals(A + torch.outer(p, p))                     # normal part of LegS, dense
    up = eig[eig.imag > 0]
    want = torch.sort(up.imag).values.repeat(blocks).sort().values
    lam = layer.continuous_A().detach()                                   # stored in float32 at init
    torch.testing.assert_close(lam.imag.sort().values, want, atol=0, rtol=1e-7)
    torch.testing.assert_close(lam.real, torch.full_like(lam.real, -0.5), atol=1e-7, rtol=0)
    assert lam.shape == (P // 2,)
    full = _layer(P=P, blocks=blocks, conj_sym=False, seed=1).continuous_A().detach()
    torch.testing.assert_close(full.imag.sort().values, torch.cat([-want, want]).sort().values, atol=0, rtol=1e-7)
    dt = torch.exp(layer.log_dt.detach())
    assert bool(((dt >= 1e-3 - 1e-15) & (dt <= 1e-1 + 1e-15)).all())


def test_init_is_a_real_system_in_the_eigenbasis():
    """B = V^* B0 with B0 real: the conjugate-completed input matrix maps back to a real one."""
    from statespaces.layers.s5 import hippo_n_init

    layer = _layer(H=3, P=8, blocks=2, seed=2)
    _, V = hippo_n_init(8, 2, True)
    Bt = layer.B_complex.detach()
    B0 = V @ Bt + V.conj() @ Bt.conj()                                    # [V, conj V] [B; conj B]
    assert float(B0.imag.abs().max()) < 1e-12
    assert float(B0.real.abs().max()) > 0.05


# ---- every view against the loop ------------------------------------------------------------------
@pytest.mark.parametrize("cfg", sorted(CONFIGS))
def test_scan_step_chunked_kernel_equal_the_loop(cfg):
    layer = _layer(H=3, P=8, seed=3, **CONFIGS[cfg])
    u = torch.randn(2, 33, 3, dtype=f64)
    ref, ref_state = _reference(layer, u)
    torch.testing.assert_close(layer(u), ref, atol=1e-10, rtol=0)
    state, outs = layer.initial_state(2), []
    for t in range(33):
        o, state = layer.step(u[:, t], state)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(state, ref_state, atol=1e-10, rtol=0)
    s, parts = None, []
    for a, b in ((0, 1), (1, 12), (12, 13), (13, 33)):
        o, s = layer(u[:, a:b], state=s, return_state=True)
        parts.append(o)
    torch.testing.assert_close(torch.cat(parts, 1), ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(s, ref_state, atol=1e-10, rtol=0)
    K = layer.kernel(33)
    assert K.shape == (3, 3, 33)
    torch.testing.assert_close(_conv(K, u, layer.D.detach()), ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("rate", [0.25, 3.0])
def test_rate_is_step_rescale(rate):
    layer = _layer(seed=4)
    u = torch.randn(2, 20, 3, dtype=f64)
    ref, _ = _reference(layer, u, rate=rate)
    torch.testing.assert_close(layer(u, rate=rate), ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(_conv(layer.kernel(20, rate=rate), u, layer.D.detach()), ref, atol=1e-10, rtol=0)
    y, _ = layer.step(u[:, 0], layer.initial_state(2), rate=rate)
    torch.testing.assert_close(y, ref[:, 0], atol=1e-10, rtol=0)
    assert float((layer(u).detach() - ref).abs().max()) > 1e-3                      # the rate matters


def test_bidirectional_is_a_forward_and_a_backward_scan():
    """Paper form: y_k = scale Re(C x_k + C_b x^b_k) + D u_k, x^b run on the reversed input (lag 0 in both)."""
    layer = _layer(H=3, P=8, seed=5, bidirectional=True)
    u = torch.randn(2, 19, 3, dtype=f64)
    fwd, _ = _reference(layer, u)
    back_layer = _layer(H=3, P=8, seed=5)
    back_layer.load_state_dict({**layer.state_dict(), "C": layer.C.detach()[1:2]}, strict=False)
    with torch.no_grad():
        back_layer.C = torch.nn.Parameter(layer.C.detach()[1:2].clone())
        back_layer.D.zero_()
    bwd, _ = _reference(back_layer, u.flip(1))
    ref = fwd + bwd.flip(1)
    torch.testing.assert_close(layer(u), ref, atol=1e-10, rtol=0)
    K = layer.kernel(19)
    assert K.shape == (2, 3, 3, 19)
    conv = _conv(K[0], u, layer.D.detach())
    for n in range(19):                                                   # anti-causal part: lags -1..-L
        for l in range(19 - 1 - n):
            conv[:, n] += u[:, n + 1 + l] @ K[1, :, :, l].T
    torch.testing.assert_close(conv, ref, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="bidirectional"):
        layer(u, return_state=True)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(u[:, 0], layer.initial_state(2))


def test_gradcheck_through_the_scan():
    layer = _layer(H=2, P=4, seed=6)
    names = ["log_dt", "A_real", "A_imag", "B", "C"]
    x = torch.randn(1, 7, 2, dtype=f64, requires_grad=True)
    params = [getattr(layer, n).detach().clone().requires_grad_() for n in names]

    def fn(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params), atol=1e-8, rtol=1e-6)


# ---- irregular sampling -----------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", ["zoh", "bilinear"])
def test_irregular_intervals_equal_the_per_interval_discretization(cfg):
    layer = _layer(H=3, P=8, seed=7, **CONFIGS[cfg])
    u = torch.randn(2, 25, 3, dtype=f64)
    dt = torch.rand(2, 25, dtype=f64) * 3 + 0.05
    ref, ref_state = _reference(layer, u, dt=dt)
    torch.testing.assert_close(layer(u, dt=dt), ref, atol=1e-10, rtol=0)
    y1, s = layer(u[:, :9], dt=dt[:, :9], return_state=True)               # chunked with intervals
    y2, s = layer(u[:, 9:], dt=dt[:, 9:], state=s, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(s, ref_state, atol=1e-10, rtol=0)
    ts = torch.cumsum(dt, 1) + 5.0                                         # sample times; first interval 1
    dt_ts = torch.cat([torch.ones(2, 1, dtype=f64), dt[:, 1:]], 1)
    torch.testing.assert_close(layer(u, timestamps=ts), _reference(layer, u, dt=dt_ts)[0], atol=1e-10, rtol=0)
    # equal intervals are the regular layer at that rate
    torch.testing.assert_close(layer(u, dt=torch.full((2, 25), 1.7, dtype=f64)), layer(u, rate=1.7),
                               atol=1e-12, rtol=0)


def test_irregular_bad_intervals():
    layer = S5(3, 8, seed=0)
    x = torch.randn(2, 5, 3)
    cases = {
        "shape": (dict(dt=torch.ones(2, 4)), ValueError, "(batch, length)"),
        "rank": (dict(dt=torch.ones(2, 5, 1)), ValueError, "shape (batch, length)"),
        "zero": (dict(dt=torch.tensor([[1.0, 0.0, 1, 1, 1]] * 2)), ValueError, "non-positive"),
        "negative": (dict(dt=-torch.ones(2, 5)), ValueError, "non-positive"),
        "nan": (dict(dt=torch.full((2, 5), float("nan"))), ValueError, "non-finite"),
        "int": (dict(dt=torch.ones(2, 5, dtype=torch.int64)), TypeError, "floating-point"),
        "list": (dict(dt=[[1.0] * 5] * 2), TypeError, "tensor"),
        "both": (dict(dt=torch.ones(2, 5), timestamps=torch.ones(2, 5)), ValueError, "not both"),
        "unsorted": (dict(timestamps=torch.tensor([[0.0, 1, 1, 2, 3]] * 2)), ValueError, "strictly increasing"),
    }
    for name, (kw, exc, frag) in cases.items():
        with pytest.raises(exc, match=None) as e:
            layer(x, **kw)
        assert frag in str(e.value), (name, e.value)


# ---- constructor, registry, saving ------------------------------------------------------------------
def test_constructor_errors():
    for kw, exc in ((dict(d_state=6, blocks=4), ValueError), (dict(d_state=6, blocks=2), ValueError),
                    (dict(discretization="euler"), ValueError), (dict(conj_sym=1), TypeError),
                    (dict(blocks=0), ValueError), (dict(dt_min=0.2, dt_max=0.1), ValueError)):
        with pytest.raises(exc):
            S5(3, **{"d_state": 8, **kw})
    S5(3, 6, blocks=2, conj_sym=False)                                     # odd block size is fine without conj_sym
    layer = S5(3, 8, real_transform="none", seed=0)
    with torch.no_grad():
        layer.A_real.fill_(-0.1)                                           # Re(Lambda) = +0.1: unstable
    with pytest.raises(ValueError, match="unstable"):
        layer(torch.randn(1, 4, 3))


def test_registry_param_groups_and_save(tmp_path):
    layer = make_layer({"kind": "s5", "d_state": 8, "blocks": 2, "seed": 3}, 4)
    assert isinstance(layer, S5)
    assert {id(p) for p in layer.ssm_parameters()} == {id(layer.log_dt), id(layer.A_real), id(layer.A_imag),
                                                       id(layer.B)}
    layer.save_pretrained(tmp_path / "s5")
    again = S5.from_pretrained(tmp_path / "s5")
    x = torch.randn(2, 9, 4)
    torch.testing.assert_close(again(x), layer(x), atol=0, rtol=0)


# ---- issue 21: the shared dt init, the real-arithmetic scan of compile/export ---------------------
@pytest.mark.parametrize("kw", [dict(), dict(dt_min=1e-2, dt_max=0.5, conj_sym=False), dict(blocks=2)])
def test_dt_init_is_the_shared_log_dt_init(kw):
    """S5's log_dt comes from :func:`statespaces.layers.init.log_dt_init` (the S4D init): the same
    draws from the layer's generator (its first use), one per stored mode."""
    from statespaces.layers.init import log_dt_init

    layer = S5(3, 8, seed=11, **kw)
    want = log_dt_init(layer.n_modes, kw.get("dt_min", 1e-3), kw.get("dt_max", 1e-1),
                       torch.Generator().manual_seed(11))
    assert torch.equal(layer.log_dt.detach(), want.to(layer.log_dt.dtype))


@pytest.mark.parametrize("case", ["regular", "state", "irregular", "bidirectional"])
def test_real_scan_form_equals_the_complex_scan(case, monkeypatch):
    """The form traced by torch.compile/export (2x2 real rotation blocks, :meth:`S5._forward_real`)
    equals the eager complex scan: outputs, final state, and input/parameter gradients (float64)."""
    import statespaces.layers.s5 as s5mod

    layer = _layer(seed=2, bidirectional=case == "bidirectional")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 19, 3, dtype=f64, generator=g, requires_grad=True)
    kw = {}
    if case == "state":
        kw = dict(state=torch.randn(2, layer.n_modes, dtype=c128, generator=g), return_state=True)
    elif case == "irregular":
        kw = dict(dt=torch.rand(2, 19, dtype=f64, generator=g) * 2 + 0.1, return_state=True)

    def run():
        out = layer(x, **kw)
        y, s = out if isinstance(out, tuple) else (out, None)
        grads = torch.autograd.grad((y * y.detach().sin()).sum(), [x, *layer.parameters()])
        return y, s, grads

    y, s, grads = run()
    calls = []
    real = s5mod.S5._forward_real
    monkeypatch.setattr(s5mod, "tracing", lambda: True)
    monkeypatch.setattr(s5mod.S5, "_forward_real", lambda self, *a: calls.append(1) or real(self, *a))
    y2, s2, grads2 = run()
    assert len(calls) == 1
    torch.testing.assert_close(y2, y, atol=1e-12, rtol=1e-12)
    if s is not None:
        torch.testing.assert_close(s2, s, atol=1e-12, rtol=1e-12)
    for a, b in zip(grads2, grads):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-10)


@pytest.mark.parametrize("cfg", ["zoh", "bilinear"])
def test_kernel_with_a_mode_that_underflows_equals_the_loop(cfg):
    """A mode with Delta Re Lambda = -800: Lambda_bar underflows to 0 under ZOH, and the kernel took
    exp(log 0 * 0) = NaN at lag 0 and refused as an overflow, while the scan was right. The kernel's powers
    now come from Delta Lambda itself."""
    layer = _layer(H=2, P=4, seed=1, **CONFIGS[cfg])
    with torch.no_grad():
        layer.A_real[0] = math.log(800.0)
        layer.log_dt.fill_(0.0)
    u = torch.randn(2, 9, 2, dtype=f64)
    ref, _ = _reference(layer, u)
    K = layer.kernel(9)
    torch.testing.assert_close(_conv(K, u, layer.D.detach()), ref, atol=1e-12, rtol=0)
