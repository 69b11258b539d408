"""S4D (thesis §3.2, ch. 6.3): Vandermonde kernel, three views, inits, rate, gradients, bad input."""
import math

import pytest
import torch

from statespaces import S4D
from statespaces.discretize import discretize_dense
from statespaces.kernels import direct_causal_conv, power_kernel, recurrence

INITS = ["legs", "inv", "lin", "real", "rand", "inv2", "quad"]
DISCS = [("zoh", {}), ("bilinear", {}), ("backward_euler", {}), ("gbt", {"alpha": 0.7})]


def _full_system(layer, rate=1.0):
    """The real-equivalent dense system of a layer: conjugate modes added back explicitly."""
    sys = layer.diagonal_system(rate)
    dA, dB, C = torch.exp(sys.log_dA), sys.dB, sys.C[0]
    if sys.scale == 2.0:
        dA, dB, C = (torch.cat([v, v.conj()], -1) for v in (dA, dB, C))
    return torch.diag_embed(dA), dB, C


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc,kw", DISCS)
def test_kernel_equals_power_kernel(init, disc, kw):
    layer = S4D(3, 8, init=init, discretization=disc, seed=1, dt_max=0.5, **kw).double()
    dA, dB, C = _full_system(layer)
    ref = power_kernel(dA, dB, C, 200).real
    torch.testing.assert_close(layer.kernel(200), ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("disc,kw", DISCS)
def test_layer_discretization_matches_dense_rule(disc, kw):
    layer = S4D(2, 6, init="inv", discretization=disc, seed=2, **kw).double()
    sys = layer.diagonal_system()
    A = torch.diag_embed(layer.continuous_A())
    dA, dB = discretize_dense(A, torch.view_as_complex(layer.B), torch.exp(layer.log_dt), disc, kw.get("alpha"))
    torch.testing.assert_close(torch.diag_embed(torch.exp(sys.log_dA)), dA, atol=1e-12, rtol=0)
    torch.testing.assert_close(sys.dB, dB, atol=1e-12, rtol=0)


@pytest.mark.parametrize("init", INITS)
def test_forward_equals_explicit_recurrence_fp64(init):
    layer = S4D(4, 6, init=init, seed=3, dt_max=0.3).double()
    u = torch.randn(2, 37, 4, dtype=torch.float64)
    dA, dB, C = _full_system(layer)
    y_ref, _ = recurrence(dA, dB, C, u, layer.D)
    torch.testing.assert_close(layer(u), y_ref.real, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("B,H,N,L", [(1, 1, 2, 1), (2, 3, 8, 50), (3, 5, 16, 129)])
def test_conv_step_chunked_views_agree_fp32(init, B, H, N, L):
    layer = S4D(H, N, init=init, seed=4)
    x = torch.randn(B, L, H)
    with torch.no_grad():
        y = layer(x)
        state = layer.initial_state(B)
        ys = []
        for t in range(L):
            yt, state = layer.step(x[:, t], state)
            ys.append(yt)
        y_step = torch.stack(ys, 1)
        cuts = sorted(set(torch.randint(1, L, (3,)).tolist())) if L > 1 else []
        chunks, st, prev = [], None, 0
        for c in cuts + [L]:
            yc, st = layer(x[:, prev:c], state=st, return_state=True)
            chunks.append(yc)
            prev = c
        y_chunk = torch.cat(chunks, 1)
    scale = y.abs().max().clamp(min=1)
    torch.testing.assert_close(y_step / scale, y / scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(y_chunk / scale, y / scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(st, state, atol=1e-4 * float(state.abs().max().clamp(min=1)), rtol=0)


def test_bidirectional_kernel_and_output():
    layer = S4D(3, 8, init="inv", bidirectional=True, seed=5).double()
    k = layer.kernel(20)
    assert k.shape == (2, 3, 20)
    assert not torch.allclose(k[0], k[1])
    u = torch.randn(2, 20, 3, dtype=torch.float64)
    w = direct_causal_conv(u.flip(1), k[1])
    anti = torch.cat([w.flip(1)[:, 1:], torch.zeros_like(w[:, :1])], 1)
    ref = direct_causal_conv(u, k[0]) + anti + u * layer.D
    torch.testing.assert_close(layer(u), ref, atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(u[:, 0], layer.initial_state(2))
    with pytest.raises(ValueError, match="not causal"):
        layer(u, return_state=True)


def test_rate_zoh_is_exact_on_piecewise_constant_input():
    """§2.4.1: SSM(dt) on a signal sampled every dt == SSM(dt/2) on the same held signal sampled
    every dt/2. ``rate=2`` runs the layer with twice its step on the twice-subsampled input."""
    layer = S4D(3, 8, init="legs", discretization="zoh", seed=6).double()
    coarse = torch.randn(2, 30, 3, dtype=torch.float64)
    fine = coarse.repeat_interleave(2, dim=1)  # zero-order hold at twice the rate
    y_fine = layer(fine)
    y_coarse = layer(coarse, rate=2.0)
    torch.testing.assert_close(y_coarse, y_fine[:, 1::2], atol=1e-10, rtol=1e-10)


def test_rate_bilinear_matches_up_to_discretization_error():
    """For rules other than ZOH, §2.4.1 holds "up to discretization error": bilinear samples the
    input at the end of each step, a first-order error in dt on a smooth input. We measure that the
    mismatch between ``rate=2`` on the subsampled signal and the full-rate output is small and
    halves when dt halves (first-order convergence to the continuous-time answer)."""
    errs = []
    for dt in (0.02, 0.01, 0.005):
        layer = S4D(2, 8, init="lin", discretization="bilinear", dt_min=dt, dt_max=dt, seed=7).double()
        t = torch.arange(int(8 / dt), dtype=torch.float64) * dt
        sig = torch.stack([torch.sin(2 * t), torch.cos(3 * t)], -1)[None]
        with torch.no_grad():
            y_full = layer(sig)
            y_half = layer(sig[:, 1::2], rate=2.0)
        errs.append(float((y_half - y_full[:, 1::2]).abs().max() / y_full.abs().max()))
    assert errs[-1] < 1e-2, errs
    for coarse, fine in zip(errs, errs[1:]):
        assert 1.6 < coarse / fine < 2.5, errs


def test_gradients_reach_every_parameter():
    layer = S4D(3, 8, init="lin", bidirectional=True, seed=8)
    layer(torch.randn(2, 16, 3)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_init_formulas(float64_default):
    N = 64
    n = torch.arange(N // 2, dtype=torch.float64)
    A = S4D(1, N, init="inv").continuous_A()[0]
    torch.testing.assert_close(A.imag, (N / math.pi) * (N / (2 * n + 1) - 1))
    torch.testing.assert_close(A.real, torch.full_like(n, -0.5))
    A = S4D(1, N, init="lin").continuous_A()[0]
    torch.testing.assert_close(A.imag, math.pi * n)
    A = S4D(1, N, init="real").continuous_A()[0]
    torch.testing.assert_close(A.real, -(torch.arange(N, dtype=torch.float64) + 1))
    for init, imag in (("inv2", (N / math.pi) * (N / (n + 1) - 1)),       # eq. 7.3
                       ("quad", (1 + 2 * n) ** 2 / math.pi)):              # eq. 7.4 (real part -1/2 per the text)
        A = S4D(1, N, init=init).continuous_A()[0]
        torch.testing.assert_close(A.imag, imag)
        torch.testing.assert_close(A.real, torch.full_like(n, -0.5))
    legs = S4D(1, N, init="legs").continuous_A()[0]
    torch.testing.assert_close(legs.real, torch.full_like(n, -0.5), atol=1e-8, rtol=0)
    # Conjecture 6.11 (sign corrected): max Im eig of the normal LegS part ~ N^2/pi - 0.5236.
    assert abs(float(legs.imag.detach().max()) - (N**2 / math.pi - 0.5236)) < 0.05


def test_c_init_is_unit_variance_complex_normal():
    """Remark 5.5 / Cor 5.16: C has unit variance per entry (Listing 1's randn + i randn has 2): E|C|^2 = 1,
    E[C^2] = 0, real and imaginary parts uncorrelated, each of variance 1/2 (within 5 standard errors)."""
    from statespaces.layers.init import c_init

    n = 200_000
    C = c_init((n,), torch.Generator().manual_seed(0))
    se = 5 / math.sqrt(n)
    assert abs(float((C.abs() ** 2).mean()) - 1) < se                # |C|^2 ~ Exp(1): standard error 1/sqrt(n)
    assert abs(complex((C ** 2).mean())) < 2 * se
    assert abs(float(C.real.var()) - 0.5) < se and abs(float(C.imag.var()) - 0.5) < se
    assert abs(float((C.real * C.imag).mean())) < se


def test_log_dt_init_range():
    layer = S4D(2000, 2, init="lin", dt_min=1e-3, dt_max=1e-1, seed=9).double()
    log_dt = layer.log_dt.detach()
    assert float(log_dt.min()) >= math.log(1e-3) and float(log_dt.max()) <= math.log(1e-1)
    # log-uniform: the mean of log dt is the midpoint, its spread that of a uniform
    assert abs(float(log_dt.mean()) - (math.log(1e-3) + math.log(1e-1)) / 2) < 0.1
    assert abs(float(log_dt.std()) - (math.log(100) / math.sqrt(12))) < 0.1


@pytest.mark.parametrize("transform", ["exp", "softplus", "relu"])
def test_real_transforms_keep_A_stable(transform):
    layer = S4D(4, 8, init="inv", real_transform=transform, seed=10)
    assert torch.allclose(layer.continuous_A().real, torch.full((4, 4), -0.5), atol=1e-5)
    with torch.no_grad():
        layer.A_real.normal_(0, 10)
    assert bool((layer.continuous_A().real < 0).all())


def test_unconstrained_unstable_A_raises():
    layer = S4D(2, 4, init="lin", real_transform="none")
    with torch.no_grad():
        layer.A_real.fill_(-1.0)  # Re(A) = +1
    with pytest.raises(ValueError, match="unstable"):
        layer(torch.randn(1, 8, 2))


def test_half_precision_input_returns_input_dtype():
    layer = S4D(3, 8, init="lin")
    x = torch.randn(2, 10, 3)
    y16 = layer(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), layer(x), atol=0.1, rtol=0.05)


def test_bad_input_errors():
    layer = S4D(3, 8, init="lin")
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(10, 3))
    with pytest.raises(ValueError, match="d_model=3"):
        layer(torch.randn(2, 10, 4))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 10, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 10, 3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="float64"):
        layer(torch.ones(2, 10, 3, dtype=torch.float64))
    x = torch.randn(2, 10, 3)
    x[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer(x)
    with pytest.raises(ValueError, match="length 0"):
        layer(torch.randn(2, 0, 3))
    with pytest.raises(ValueError, match="rate"):
        layer(torch.randn(2, 10, 3), rate=0)
    with pytest.raises(ValueError, match="state must have shape"):
        layer(torch.randn(2, 10, 3), state=layer.initial_state(3))
    with pytest.raises(ValueError, match="step input"):
        layer.step(torch.randn(2, 10, 3), layer.initial_state(2))
    with pytest.raises(ValueError, match="odd"):
        S4D(3, 7)
    with pytest.raises(ValueError, match="dt_min"):
        S4D(3, 8, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="valid choices are: legs, inv, lin"):
        S4D(3, 8, init="hippo")
    with pytest.raises(ValueError, match="valid choices are: zoh, bilinear"):
        S4D(3, 8, discretization="rk4")
    with pytest.raises(ValueError, match="d_model"):
        S4D(0, 8)
    with pytest.raises(ValueError, match="kernel length"):
        layer.kernel(0)


def test_extra_repr():
    assert "init='inv'" in repr(S4D(3, 8, init="inv", bidirectional=True))
    # every argument that changes the layer, when it is not the default (S4 and S4ND likewise)
    r = repr(S4D(3, 8, real_transform="softplus", trainable_B=False))
    assert "real_transform='softplus'" in r and "trainable_B=False" in r
    assert "real_transform" not in repr(S4D(3, 8)) and "trainable_B" not in repr(S4D(3, 8))
    from statespaces import S4
    from statespaces.layers.s4nd import S4ND

    assert "real_transform='relu'" in repr(S4(3, 8, real_transform="relu"))
    assert "conv='toeplitz'" in repr(S4ND(3, d_state=4, dims=2, conv="toeplitz"))


def test_step_cache_follows_parameter_updates():
    """Without autograd the discretization is cached for stepping; an in-place update (optimizer
    step, load_state_dict) must invalidate it."""
    layer = S4D(3, 8, init="lin", seed=11)
    x = torch.randn(2, 3)
    with torch.no_grad():
        y1, _ = layer.step(x, layer.initial_state(2))
        layer.log_dt.add_(0.5)
        y2, _ = layer.step(x, layer.initial_state(2))
        layer.C.mul_(2)
        y3, _ = layer.step(x, layer.initial_state(2))
    fresh, _ = layer.step(x, layer.initial_state(2))  # grad mode: no cache
    assert not torch.allclose(y1, y2) and not torch.allclose(y2, y3)
    torch.testing.assert_close(y3, fresh.detach())


def test_step_cache_sees_edits_through_data_and_new_tensors():
    """The CPU cache compares values (through NumPy views of the parameters' memory): an edit through
    ``.data`` (which bumps no version counter), a new tensor assigned to ``.data`` and a one-entry
    write each invalidate it; an unchanged layer keeps hitting it."""
    layer = S4D(3, 8, init="lin", seed=11)
    x = torch.randn(2, 3)

    def cached():
        with torch.no_grad():
            return layer.step(x, layer.initial_state(2))[0]

    def fresh():                                      # grad mode: rebuilt, no cache
        return layer.step(x, layer.initial_state(2))[0].detach()

    ys = [cached()]
    assert layer._step_cache._entry.raw is not None   # the value-keyed NumPy route is the one under test
    built = layer._step_cache._entry.value
    torch.testing.assert_close(cached(), ys[0])
    assert layer._step_cache._entry.value is built    # hit: not rebuilt
    for edit in (lambda: layer.C.data.mul_(2),
                 lambda: setattr(layer.A_imag, "data", layer.A_imag.data + 0.5),
                 lambda: layer.log_dt.data.__setitem__(1, -1.0)):
        edit()
        ys.append(cached())
        assert not torch.allclose(ys[-2], ys[-1])
        torch.testing.assert_close(ys[-1], fresh())


@pytest.mark.parametrize("disc,alpha", [("forward_euler", None), ("gbt", 0.0), ("gbt", 0.2), ("gbt", 0.45)])
def test_explicit_discretizations_refuse_an_unstable_step(disc, alpha):
    """With alpha < 1/2 the GBT rule (forward Euler: alpha = 0) maps a large dt |A| outside the unit disc. The layer
    refuses (kernel, forward, step; S4ND's axes, forward Euler), as forward Euler did; a GBT with alpha=0.2 returned outputs
    of 1e20 before. The same system with alpha >= 1/2, or a small enough dt, runs. It is refused at the call, not when
    built: the initial dt is drawn at random and a checkpoint's stable weights replace it (a refusal in the
    constructor made from_pretrained fail on 16 of 20 saved layers that ran), and rate < 1 shrinks the step."""
    from statespaces import S4ND

    x = torch.randn(2, 40, 4, generator=torch.Generator().manual_seed(0))
    layer = S4D(4, 16, dt_min=0.1, dt_max=0.1, discretization=disc, alpha=alpha, seed=0)
    calls = [lambda: layer.kernel(40), lambda: layer(x), lambda: layer.step(x[:, 0], layer.initial_state(2))]
    if alpha is None:                                                   # S4ND takes no alpha
        calls.append(lambda: S4ND(4, dims=2, d_state=16, dt_min=0.1, dt_max=0.1, discretization=disc,
                                  seed=0)(torch.randn(1, 6, 6, 4)))
    for call in calls:
        with pytest.raises(ValueError, match="unstable"):
            call()
    stable = S4D(4, 16, dt_min=1e-5, dt_max=1e-5, discretization=disc, alpha=alpha, seed=0)
    assert torch.isfinite(stable(x)).all()
    if alpha is not None:
        assert torch.isfinite(S4D(4, 16, dt_min=0.1, dt_max=0.1, discretization="gbt", alpha=0.5, seed=0)(x)).all()


def test_softplus_transform_round_trips_exactly():
    """torch's softplus returns its input above 20, not log(1 + e^x): the stored decay of a float64 layer came back
    7.6e-10 off (x = 21) through real_forward(real_inverse(x))."""
    from statespaces.layers.init import real_forward, real_inverse

    x = torch.tensor([1e-3, 0.5, 5.0, 19.0, 21.0, 30.0, 35.0, 300.0], dtype=torch.float64)
    torch.testing.assert_close(real_forward(real_inverse(x, "softplus"), "softplus"), x, rtol=5e-16, atol=0)
    p = torch.linspace(-40, 40, 801, dtype=torch.float64)
    torch.testing.assert_close(real_forward(p, "softplus"), torch.log1p(torch.exp(p)), rtol=1e-15, atol=1e-300)
