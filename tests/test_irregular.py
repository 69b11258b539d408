"""Irregular sampling (issue 21 item 5; thesis §4.2.4, app. D.1.4): per-step intervals ``dt`` (B, L).

References discretize every interval independently in float64 -- S4D by the matrix exponential of
each channel's dense ``[[A dt, B dt], [0, 0]]`` (ZOH), LinOSS / D-LinOSS by solving the scheme's
implicit equations at that interval's step -- and run an explicit loop. Equal intervals must give
the regular layer at that rate. (S5's irregular path is tested in tests/test_s5.py.)
"""
import pytest
import torch

from statespaces.layers import S4, S4D, S5, DLinOSS, LinOSS
from statespaces.layers.irregular import intervals_from_timestamps

f64, c128 = torch.float64, torch.complex128


def _s4d_reference(layer, u, dt):
    """S4D (zoh) with interval ``dt[b, t] * Delta_h``: dense matrix exponential per channel and step."""
    A = layer.continuous_A().detach().to(c128)                   # (H, M)
    Bc = torch.view_as_complex(layer.B.detach().contiguous())
    C = torch.view_as_complex(layer.C.detach().contiguous())[0]
    Delta = torch.exp(layer.log_dt.detach())
    Bsz, L, H = u.shape
    M = A.shape[-1]
    x = torch.zeros(Bsz, H, M, dtype=c128)
    y = torch.zeros(Bsz, L, H, dtype=f64)
    for b in range(Bsz):
        for t in range(L):
            for h in range(H):
                s = float(dt[b, t] * Delta[h])
                blk = torch.zeros(M + 1, M + 1, dtype=c128)
                blk[:M, :M] = torch.diag(A[h]) * s
                blk[:M, M] = Bc[h] * s
                E = torch.linalg.matrix_exp(blk)
                x[b, h] = E[:M, :M] @ x[b, h] + E[:M, M] * u[b, t, h]
                y[b, t, h] = layer.scale * (C[h] @ x[b, h]).real + layer.D.detach()[h] * u[b, t, h]
    return y, x


def test_s4d_intervals_equal_the_per_interval_matrix_exponential():
    layer = S4D(2, 6, seed=1).double()
    u = torch.randn(2, 10, 2, dtype=f64)
    dt = torch.rand(2, 10, dtype=f64) * 4 + 0.05
    ref, ref_state = _s4d_reference(layer, u, dt)
    y, s = layer(u, dt=dt, return_state=True)
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(s, ref_state, atol=1e-10, rtol=0)
    y1, s1 = layer(u[:, :4], dt=dt[:, :4], return_state=True)              # chunked: state carries over
    y2 = layer(u[:, 4:], dt=dt[:, 4:], state=s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), ref, atol=1e-10, rtol=0)
    ts = torch.cumsum(dt, 1)                                              # timestamps: first interval 1
    dt1 = torch.cat([torch.ones(2, 1, dtype=f64), dt[:, 1:]], 1)
    torch.testing.assert_close(layer(u, timestamps=ts), _s4d_reference(layer, u, dt1)[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(intervals_from_timestamps(ts, first=0.5)[:, 1:], dt[:, 1:], atol=1e-12, rtol=0)


@pytest.mark.parametrize("kw", [dict(), dict(discretization="bilinear"), dict(init="real"),
                                dict(init="inv", discretization="gbt", alpha=0.3, dt_min=1e-4, dt_max=1e-3)],
                         ids=["zoh", "bilinear", "real", "gbt"])
def test_s4d_equal_intervals_are_the_regular_layer(kw):
    layer = S4D(3, 8, seed=2, **kw).double()
    u = torch.randn(2, 21, 3, dtype=f64)
    state = torch.randn(2, 3, layer.n_modes, dtype=c128)
    for c in (0.3, 1.0, 2.5):
        y, s = layer(u, dt=torch.full((2, 21), c, dtype=f64), state=state, return_state=True)
        y_r, s_r = layer(u, rate=c, state=state, return_state=True)
        torch.testing.assert_close(y, y_r, atol=1e-10, rtol=1e-12)            # (gbt at alpha < 1/2: a stable dt)
        torch.testing.assert_close(s, s_r, atol=1e-10, rtol=1e-12)
    g_dt = torch.autograd.grad(layer(u, dt=torch.full((2, 21), 1.5, dtype=f64)).square().sum(), layer.log_dt)[0]
    g_r = torch.autograd.grad(layer(u, rate=1.5).square().sum(), layer.log_dt)[0]
    torch.testing.assert_close(g_dt, g_r, atol=1e-9, rtol=1e-9)


def _oscillator_reference(layer, u, dt, damped):
    """Positions by the scheme's implicit equations at each interval's step (float64 loop)."""
    disc = layer.discretization
    Bc = layer.B_complex.detach()
    Bsz, L, _ = u.shape
    P = layer.n_oscillators
    out = torch.zeros(Bsz, L, layer.d_model, dtype=f64)
    for b in range(Bsz):
        z = torch.zeros(P, dtype=c128)
        y = torch.zeros(P, dtype=c128)
        for t in range(L):
            r = float(dt[b, t])
            A, h = layer.stiffness(r).detach(), layer.dt(r).detach()
            G = layer.damping(r).detach() if damped else torch.zeros_like(A)
            bu = u[b, t].to(c128) @ Bc.T
            one = torch.ones_like(A)
            if disc == "imex":      # z' = z + h(-A y - G z' + bu), y' = y + h z'
                lhs = torch.stack([torch.stack([one + h * G, 0 * one], -1), torch.stack([-h, one], -1)], -2)
                rhs0 = z + h * bu - h * A * y
            else:                   # z' = z + h(-A y' - G z' + bu), y' = y + h z'
                lhs = torch.stack([torch.stack([one + h * G, h * A], -1), torch.stack([-h, one], -1)], -2)
                rhs0 = z + h * bu
            sol = torch.linalg.solve(lhs.to(c128), torch.stack([rhs0, y], -1).unsqueeze(-1))
            z, y = sol[:, 0, 0], sol[:, 1, 0]
            out[b, t] = (layer.C_complex.detach() @ y).real + layer.D.detach() * u[b, t]
    return out


@pytest.mark.parametrize("cls", [LinOSS, DLinOSS])
@pytest.mark.parametrize("disc", ["IM", "IMEX"])
def test_oscillators_with_intervals_equal_the_per_interval_scheme(cls, disc):
    """LinOSS-IM: the forward with intervals equals the per-interval scheme. IMEX and D-LinOSS: refused for steps
    that vary along a sequence (a product of their steps of different sizes grows, see the tests below); constant
    steps are a rate. Their per-interval scheme stays reachable through step(rate=...), checked against the
    reference here."""
    layer = cls(3, 5, discretization=disc, seed=3).double()
    u = torch.randn(2, 13, 3, dtype=f64)
    dt = torch.rand(2, 13, dtype=f64) * 2.5 + 0.1
    ref = _oscillator_reference(layer, u, dt, cls is DLinOSS)
    if disc == "IMEX" or cls is DLinOSS:
        with pytest.raises(ValueError, match="irregular sampling with D-LinOSS" if cls is DLinOSS else
                           "irregular sampling with discretization='IMEX'"):
            layer(u, dt=dt)
        for b in range(2):
            state, ys = layer.initial_state(1), []
            for t in range(13):
                y, state = layer.step(u[b:b + 1, t], state, rate=float(dt[b, t]))
                ys.append(y)
            torch.testing.assert_close(torch.stack(ys, 1), ref[b:b + 1], atol=1e-10, rtol=0)
        return
    for mode in ("scan", "loop"):
        torch.testing.assert_close(layer(u, dt=dt, mode=mode), ref, atol=1e-10, rtol=0)
    y1, s = layer(u[:, :5], dt=dt[:, :5], return_state=True)
    y2 = layer(u[:, 5:], dt=dt[:, 5:], state=s)
    torch.testing.assert_close(torch.cat([y1, y2], 1), ref, atol=1e-10, rtol=0)
    for c in (0.4, 1.0):
        y, s = layer(u, dt=torch.full((2, 13), c, dtype=f64), return_state=True)
        y_r, s_r = layer(u, rate=c, return_state=True)
        torch.testing.assert_close(y, y_r, atol=1e-10, rtol=0)
        torch.testing.assert_close(s, s_r, atol=1e-10, rtol=0)


def test_irregular_refusals():
    x = torch.randn(2, 6, 3)
    ones = torch.ones(2, 6)
    with pytest.raises(ValueError, match="no irregular-sampling path"):
        S4(3, 8)(x, dt=ones)
    with pytest.raises(ValueError, match="mode='scan' or 'loop'"):
        LinOSS(3, 4)(x, dt=ones, mode="conv")
    torch.testing.assert_close(LinOSS(3, 4, mode="conv", seed=0)(x, dt=ones), LinOSS(3, 4, seed=0)(x))
    for layer in (S4D(3, 8), LinOSS(3, 4)):
        with pytest.raises(ValueError, match="non-positive"):
            layer(x, dt=torch.zeros(2, 6))
        with pytest.raises(ValueError, match=r"\(batch, length\)"):
            layer(x, dt=torch.ones(2, 7))
        with pytest.raises(ValueError, match="strictly increasing"):
            layer(x, timestamps=torch.zeros(2, 6))
        with pytest.raises(ValueError, match="meta"):
            layer(x, dt=torch.ones(2, 6, device="meta"))


@pytest.mark.parametrize("make", [lambda: S4D(3, 8, seed=4), lambda: S4D(3, 8, discretization="bilinear", seed=4),
                                  lambda: LinOSS(3, 4, discretization="IM", seed=4), lambda: S5(3, 8, seed=4)],
                         ids=["s4d", "s4d-bilinear", "linoss-im", "s5"])
def test_streaming_steps_with_rate_equal_the_intervals(make):
    """A stream of one sequence: step t with ``rate=dt[t]`` is the forward pass with ``dt``."""
    layer = make().double()
    u = torch.randn(1, 12, 3, dtype=f64)
    dt = torch.rand(1, 12, dtype=f64) * 2 + 0.2
    state, ys = layer.initial_state(1), []
    for t in range(12):
        y, state = layer.step(u[:, t], state, rate=float(dt[0, t]))
        ys.append(y)
    y_full, s_full = layer(u, dt=dt, return_state=True)
    torch.testing.assert_close(torch.stack(ys, 1), y_full, atol=1e-10, rtol=0)
    torch.testing.assert_close(state, s_full, atol=1e-10, rtol=0)


@pytest.mark.parametrize("make", [lambda: S4D(3, 8, seed=5), lambda: S4D(3, 8, discretization="bilinear", seed=5),
                                  lambda: LinOSS(3, 4, discretization="IM", seed=5), lambda: S5(3, 8, seed=5)],
                         ids=["s4d", "s4d-bilinear", "linoss-im", "s5"])
def test_rate_multiplies_the_intervals(make):
    """``rate`` multiplies every step, also with intervals: ``layer(u, dt=s, rate=c) == layer(u, dt=c s)`` (a path
    that ignored rate when dt was given went unnoticed by the other tests)."""
    layer = make().double()
    u = torch.randn(2, 10, 3, dtype=f64, generator=torch.Generator().manual_seed(1))
    s = torch.rand(2, 10, dtype=f64, generator=torch.Generator().manual_seed(2)) * 1.5 + 0.2
    with torch.no_grad():
        torch.testing.assert_close(layer(u, dt=s, rate=2.5), layer(u, dt=2.5 * s), atol=1e-10, rtol=0)
        assert float((layer(u, dt=s, rate=2.5) - layer(u, dt=s)).abs().max()) > 1e-6


# ---- models: residual blocks and the classifier pass dt/timestamps through (issue 21) ----------------
MODEL_LAYERS = {"s4d": dict(kind="s4d", d_state=4), "s5": dict(kind="s5", d_state=4),
                "linoss": dict(kind="linoss", n_oscillators=3),
                "dlinoss": dict(kind="dlinoss", n_oscillators=3, discretization="IM")}
VARYING = [k for k in sorted(MODEL_LAYERS) if k != "dlinoss"]       # D-LinOSS refuses varying steps


def _classifier(kind, pool, prenorm=True, seed=0):
    from statespaces import SequenceClassifier

    torch.manual_seed(seed)
    layer = {**MODEL_LAYERS[kind], "seed": seed}
    return SequenceClassifier(2, 3, d_model=4, n_layers=2, layer=layer, pool=pool, prenorm=prenorm).double().eval()


def _by_hand(model, x, dt):
    """The classifier composed by hand: per block ``norm -> layer(z, dt=dt) -> GELU -> Linear -> GLU``
    (or Linear) ``-> + residual``, each layer on its own dt path; then the final norm, pooling, decoder."""
    h = model.encoder(x)
    for blk in model.blocks:
        z = blk.norm.norm(h) if blk.prenorm else h
        y = blk.layer(z, dt=dt)
        m = blk.output(torch.nn.functional.gelu(y))
        h = h + (torch.nn.functional.glu(m, dim=-1) if blk.mixing == "glu" else m)
        if not blk.prenorm:
            h = blk.norm.norm(h)
    h = model.final_norm(h)
    return model.decoder(h if model.pool == "none" else h.mean(1) if model.pool == "mean" else h[:, -1])


@pytest.mark.parametrize("kind", VARYING)
@pytest.mark.parametrize("pool,prenorm", [("none", True), ("mean", False)])
def test_classifier_with_intervals_equals_the_blocks_composed_by_hand(kind, pool, prenorm):
    model = _classifier(kind, pool, prenorm)
    x = torch.randn(2, 9, 2, dtype=f64)
    dt = torch.rand(2, 9, dtype=f64) * 2 + 0.2
    ref = _by_hand(model, x, dt)
    torch.testing.assert_close(model(x, dt=dt), ref, atol=1e-10, rtol=0)
    ts = torch.cumsum(dt, 1) + 3.0                      # sample times; the first interval is one step
    dt_ts = torch.cat([torch.ones(2, 1, dtype=f64), dt[:, 1:]], 1)
    torch.testing.assert_close(model(x, timestamps=ts), _by_hand(model, x, dt_ts), atol=1e-10, rtol=0)
    block = model.blocks[0]
    h = model.encoder(x)
    y_blk, s_blk = block(h, dt=dt, return_state=True)
    y1, s1 = block(h[:, :4], dt=dt[:, :4], return_state=True)       # a stream in two chunks
    y2, s2 = block(h[:, 4:], dt=dt[:, 4:], state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_blk, atol=1e-10, rtol=0)
    torch.testing.assert_close(s2, s_blk, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", sorted(MODEL_LAYERS))
def test_classifier_with_equal_intervals_is_the_regular_model(kind):
    model = _classifier(kind, "none")
    x = torch.randn(2, 11, 2, dtype=f64)
    lengths = torch.tensor([11, 7])
    for c in (1.0, 0.6):
        dt = torch.full((2, 11), c, dtype=f64)
        ts = torch.arange(11, dtype=f64).expand(2, 11) * c + c    # intervals c (the first: one step)
        want = model(x, rate=c)
        torch.testing.assert_close(model(x, dt=dt), want, atol=1e-10, rtol=0)
        if c == 1.0:
            torch.testing.assert_close(model(x, timestamps=ts), want, atol=1e-10, rtol=0)
        mean = _classifier(kind, "mean")
        torch.testing.assert_close(mean(x, lengths=lengths, dt=dt), mean(x, lengths=lengths, rate=c),
                                   atol=1e-10, rtol=0)


def test_models_refuse_intervals_for_layers_without_the_path():
    from statespaces import ResidualBlock, SequenceClassifier
    from statespaces.layers.s4nd import S4ND

    x = torch.randn(2, 6, 2)
    ones = torch.ones(2, 6)
    for layer, name in ((dict(kind="s4", d_state=4), "S4"), (dict(kind="s4nd", dims=1, d_state=4), "S4ND"),
                        (dict(kind="s4", d_state=4, bidirectional=True), "S4")):
        model = SequenceClassifier(2, 3, d_model=4, n_layers=1, layer=layer)
        with pytest.raises(ValueError, match=name):
            model(x, dt=ones)
        with pytest.raises(ValueError, match=name):
            model(x, timestamps=torch.arange(6.0).expand(2, 6))
    with pytest.raises(ValueError, match="S4ND has no irregular-sampling path"):
        ResidualBlock(S4ND(4, dims=2, d_state=4))(torch.randn(1, 3, 3, 4), dt=torch.ones(1, 3))
    model = _classifier("s4d", "mean").float()
    for kw, msg in ((dict(dt=torch.zeros(2, 6)), "non-positive"), (dict(dt=torch.ones(2, 7)), r"\(batch, length\)"),
                    (dict(timestamps=torch.zeros(2, 6)), "strictly increasing"),
                    (dict(dt=ones, timestamps=ones), "not both"), (dict(dt=ones.long()), "floating-point")):
        with pytest.raises((ValueError, TypeError), match=msg):
            model(x, **kw)


@pytest.mark.parametrize("cls", [LinOSS, DLinOSS])
def test_imex_under_varying_steps_grows_and_is_refused_while_im_stays_bounded(cls):
    """Why IMEX refuses varying steps (found by an oscillator campaign): every IMEX block has |lambda| <= 1, yet the
    impulse response under steps U[0.1, 2.1] grew without bound (LinOSS 0.27 -> 3.1e3 at L = 2000, D-LinOSS to
    1e202); the same steps through IM stay at the regular response's size. Shown here through step(rate=dt_t),
    which runs the same blocks one step at a time."""
    g = torch.Generator().manual_seed(0)
    dt = torch.rand(2000, generator=g, dtype=f64) * 2 + 0.1
    peak = {}
    for disc in ("IM", "IMEX"):
        layer = cls(1, 1, discretization=disc, seed=0).double()
        if cls is LinOSS:
            with torch.no_grad():
                layer.A_hat.fill_(1.0)
                layer.dt_raw.fill_(0.0)
        state, top = layer.initial_state(1), 0.0
        with torch.no_grad():
            for t in range(2000):
                x = torch.ones(1, 1, dtype=f64) if t == 0 else torch.zeros(1, 1, dtype=f64)
                y, state = layer.step(x, state, rate=float(dt[t]))
                top = max(top, float(y.abs().max()))
        peak[disc] = top
    assert peak["IM"] < 10 and peak["IMEX"] > 100 * peak["IM"], peak
    imex = cls(2, 3, discretization="IMEX", seed=0).double()
    u = torch.randn(2, 9, 2, dtype=f64)
    with pytest.raises(ValueError, match="use LinOSS\\(..., discretization='IM'\\)" if cls is DLinOSS else
                       "use discretization='IM' for irregularly sampled data"):
        imex(u, dt=torch.rand(2, 9, dtype=f64) + 0.5)
    rows = torch.tensor([[0.5], [2.0]], dtype=f64).expand(2, 9)       # constant per sequence: a rate, allowed
    torch.testing.assert_close(imex(u, dt=rows)[1:], imex(u[1:], rate=2.0), atol=1e-10, rtol=0)


def test_dlinoss_im_under_varying_steps_grows_and_is_refused():
    """D-LinOSS refuses varying steps under IM too (found by a verification campaign): its projection clamps A and G
    as functions of the step (G may be negative: an anti-damped oscillator held by the scheme's numerical damping at
    that step), so steps of different sizes are different systems. Alternating 0.2 and 1.0 grew a response to
    2.8e40 at L = 200 where constant steps stay under 10; LinOSS-IM (one fixed conservative system, implicit
    Euler) stays bounded. Shown through step(rate=dt_t), which runs the same blocks."""
    x = torch.randn(1, 200, 3, dtype=f64, generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([0.2, 1.0], dtype=f64).repeat(100)
    peak = {}
    for cls in (DLinOSS, LinOSS):
        layer = cls(3, n_oscillators=4, discretization="IM", seed=2).double()
        state, top = layer.initial_state(1), 0.0
        with torch.no_grad():
            for t in range(200):
                y, state = layer.step(x[:, t], state, rate=float(steps[t]))
                top = max(top, float(y.abs().max()))
            const = float(layer(x, rate=0.2).abs().max())
        peak[cls.__name__] = (top, const)
    assert peak["DLinOSS"][0] > 1e20 and peak["DLinOSS"][1] < 10, peak
    assert peak["LinOSS"][0] < 10 * peak["LinOSS"][1], peak
    layer = DLinOSS(3, n_oscillators=4, discretization="IM", seed=2).double()
    with pytest.raises(ValueError, match="irregular sampling with D-LinOSS.*use LinOSS"):
        layer(x, dt=steps[None])
    rows = torch.tensor([[0.5], [2.0]], dtype=f64).expand(2, 200)      # constant per sequence: a rate, allowed
    torch.testing.assert_close(layer(x.expand(2, -1, -1), dt=rows)[1:], layer(x, rate=2.0), atol=1e-10, rtol=0)


def test_oscillator_accessors_check_the_rate():
    """LinOSS.dt(-1) returned negative steps and stiffness(nan) NaNs, while the rest of the API refused them."""
    layer = LinOSS(2, 3, discretization="IMEX", seed=0)
    for fn in (layer.dt, layer.stiffness, DLinOSS(2, 3, seed=0).dt):
        for bad, err in ((-1.0, ValueError), (0, ValueError), (float("nan"), ValueError), ("a", TypeError)):
            with pytest.raises(err, match="rate"):
                fn(bad)


def test_the_first_interval_of_timestamps_survives_large_times():
    """The first interval was formed as t0 - (t0 - first): 2.0 instead of 1.0 at float32 t0 = 3e7, and 0 (refused as
    "not strictly increasing") at float32 Unix seconds (1.7e9) or float64 t0 = 1e17."""
    from statespaces.layers.irregular import intervals_from_timestamps

    for t0, dtype in ((3e7, torch.float32), (1.7e9, torch.float32), (1e17, torch.float64)):
        ts = t0 + torch.tensor([[0.0, 256.0, 512.0]], dtype=torch.float64)
        d = intervals_from_timestamps(ts.to(dtype))
        assert d[0, 0] == 1.0, (t0, d)
        d = intervals_from_timestamps(ts.to(dtype), first=256.0)
        assert d[0, 0] == 256.0


@pytest.mark.parametrize("kind", ["linoss", "dlinoss"])
def test_imex_with_a_constant_interval_accepts_a_padded_batch(kind):
    """Padded steps became interval 1, so a row of 2s padded with 1s read as varying and IMEX refused a batch whose
    examples it accepted one by one."""
    from statespaces.models import SequenceClassifier

    torch.manual_seed(0)
    model = SequenceClassifier(2, 3, d_model=4, n_layers=1, layer={"kind": kind, "n_oscillators": 2,
                                                                    "discretization": "IMEX"}).double().eval()
    x = torch.randn(2, 6, 2, dtype=torch.float64)
    lengths = torch.tensor([6, 4])
    dt = torch.full((2, 6), 2.0, dtype=torch.float64)
    dt[1, 4:] = 0.0                                  # padding, as padding usually is
    with torch.no_grad():
        both = model(x, lengths=lengths, dt=dt)
        alone = model(x[1:, :4], dt=dt[1:, :4])
    torch.testing.assert_close(both[1:], alone, rtol=1e-12, atol=1e-12)
    ts = torch.cumsum(torch.full((1, 6), 2.0, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="pass rate=c for a spacing c"):
        model(x[:1], timestamps=ts)
