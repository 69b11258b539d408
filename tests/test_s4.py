"""S4 (DPLR) layer and kernel: Algorithm 1 vs the power kernel, C~, HiPPO paths, modes, errors."""
import math

import pytest
import torch

from statespaces.discretize import discretize_dense
from statespaces.hippo import dplr, transition
from statespaces.kernels.dplr import (dplr_full, dplr_kernel, dplr_real_system, bilinear_real, matrix_power)
from statespaces.kernels.reference import power_kernel
from statespaces.layers.s4 import S4, S4_INITS
from statespaces.layers.s4d import S4D

F64, C128 = torch.float64, torch.complex128


def random_dplr(H, M, r, K=1, gen=None, decay=(0.1, 1.0)):
    g = gen or torch.Generator().manual_seed(0)
    re = -(decay[0] + (decay[1] - decay[0]) * torch.rand(H, M, dtype=F64, generator=g))
    Lam = torch.complex(re, 10 * torch.randn(H, M, dtype=F64, generator=g))
    cn = lambda *s: torch.complex(torch.randn(*s, dtype=F64, generator=g), torch.randn(*s, dtype=F64, generator=g))
    return Lam, cn(r, H, M), cn(H, M), cn(K, H, M)


def truth(Lam, P, B, C, dt, L):
    A, b, c = dplr_real_system(Lam, P, B, C)
    dA, dB = discretize_dense(A, b, dt)
    return power_kernel(dA, dB, c, L)


@pytest.mark.parametrize("r", [1, 2, 3])
@pytest.mark.parametrize("L", [1, 2, 7, 64, 255, 256])
def test_kernel_equals_power_kernel(r, L):
    Lam, P, B, C = random_dplr(3, 5, r, K=2)
    dt = torch.tensor([0.01, 0.1, 0.7], dtype=F64)
    A, _, _ = dplr_real_system(Lam, P, B, C)
    assert float(torch.linalg.eigvals(A).real.max()) < 0          # Hurwitz (Lemma 3.8)
    K = dplr_kernel(Lam, P, B, C, dt, L)
    Kt = truth(Lam, P, B, C, dt, L)
    assert K.shape == (2, 3, L)
    assert float((K - Kt).abs().max() / Kt.abs().max()) < 1e-9
    assert torch.allclose(dplr_kernel(Lam, P, B, C, dt, L, backend="naive"), K, atol=1e-12)


def test_truncation_correction_C_tilde():
    """Without C~ = (I - dA^L)^T C the result is the infinite kernel aliased onto length L."""
    Lam, P, B, C = random_dplr(2, 4, 1, decay=(0.05, 0.2))
    dt = torch.tensor([0.3, 0.5], dtype=F64)
    L = 16
    A, _, _ = dplr_real_system(Lam, P, B, C)
    norm_L = torch.linalg.matrix_norm(matrix_power(bilinear_real(A, dt), L), 2)
    assert float(norm_L.min()) > 0.1                                 # truncation matters here
    long = truth(Lam, P, B, C, dt, 400 * L)
    with_c = dplr_kernel(Lam, P, B, C, dt, L)
    without = dplr_kernel(Lam, P, B, C, dt, L, truncation_correction=False)
    err_with = float((with_c - long[..., :L]).abs().max() / long.abs().max())
    err_without = float((without - long[..., :L]).abs().max() / long.abs().max())
    aliased = long.unflatten(-1, (400, L)).sum(-2)
    assert err_with < 1e-10 and err_without > 1e-2
    assert float((without - aliased).abs().max()) < 1e-9


@pytest.mark.parametrize("measure", ["legs", "legt", "fout", "lagt"])
def test_nplr_dplr_kernel_path_for_each_measure(measure):
    """HiPPO (A, B) --hippo.dplr--> (Lambda, P, B, V) --Algorithm 1--> kernel == dense bilinear powers."""
    N, L = 16, 200
    A0, B0 = transition(measure, N)
    Lam, P, Bh, V = dplr(measure, N)
    Vf = torch.cat([V, V.conj()], 1)
    # the conjugate-symmetric half reconstructs the HiPPO matrix (convention check)
    assert torch.allclose(Vf @ dplr_full(Lam, P) @ Vf.conj().T, A0.to(C128), atol=1e-9)
    assert torch.allclose(Vf @ torch.cat([Bh, Bh.conj()]), B0.to(C128), atol=1e-9)
    g = torch.Generator().manual_seed(0)
    c_real = torch.randn(2, N, dtype=F64, generator=g)
    dt = torch.tensor([0.01, 0.05], dtype=F64)
    Ch = (c_real.to(C128) @ V)[None]                                  # y = c^T x_real = 2 Re(C_h . x_h)
    shift = torch.zeros_like(Lam.real)
    if measure == "fout":                                             # constant mode Lambda = 0 exactly:
        shift = torch.where(Lam.abs() < 1e-9, -1e-4, 0.0)             # Cauchy pole at node g = 0; floor it
    Lam2 = Lam + shift
    A = (Vf @ dplr_full(Lam2, P) @ Vf.conj().T).real
    dA, dB = discretize_dense(A.expand(2, N, N), B0.expand(2, N), dt)
    Kt = power_kernel(dA, dB, c_real, L)
    K = dplr_kernel(Lam2.expand(2, -1), P[:, None].expand(-1, 2, -1), Bh.expand(2, -1), Ch, dt, L)[0]
    assert float((K - Kt).abs().max() / Kt.abs().max()) < 1e-9


@pytest.mark.parametrize("init", S4_INITS)
def test_layer_kernel_equals_dense_system(init):
    layer = S4(3, 16, init=init, seed=1).double()
    dA, dB, c, _ = layer.dense_system()
    with torch.no_grad():
        for L, rate in ((64, 1.0), (129, 2.5)):
            dA, dB, c, _ = layer.dense_system(rate)
            K, Kt = layer.kernel(L, rate), power_kernel(dA, dB, c, L)
            assert float((K - Kt).abs().max() / Kt.abs().max()) < 1e-9


@pytest.mark.parametrize("init", S4_INITS)
def test_conv_step_chunked_agree_fp32(init):
    layer = S4(3, 16, init=init, seed=2)
    x = torch.randn(2, 41, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = layer(x)
        state = layer.initial_state(2)
        ys = []
        for t in range(41):
            yt, state = layer.step(x[:, t], state)
            ys.append(yt)
        ys = torch.stack(ys, 1)
        parts, s = [], None
        for a, b in ((0, 9), (9, 10), (10, 41)):
            yp, s = layer(x[:, a:b], state=s, return_state=True)
            parts.append(yp)
        yc = torch.cat(parts, 1)
    scale = float(y.abs().max())
    assert float((ys - y).abs().max()) < 1e-5 * scale
    assert float((yc - y).abs().max()) < 1e-5 * scale
    assert float((s - state).abs().max()) < 1e-4 * float(state.abs().max())   # as tests/test_equivalence.py


def test_bidirectional_and_gradients():
    layer = S4(2, 8, init="legt", bidirectional=True, seed=0)
    assert layer.kernel(32).shape == (2, 2, 32)
    x = torch.randn(2, 32, 2, requires_grad=True)
    layer(x).square().sum().backward()
    for p in [x] + list(layer.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    with pytest.raises(ValueError, match="not causal"):
        layer.step(x[:, 0].detach(), torch.zeros(2, 2, 4, dtype=torch.complex64))


def test_zero_low_rank_equals_s4d_bilinear():
    """P = 0: S4 == S4D with bilinear discretization (§3.4, Table 3.1 text)."""
    s4 = S4(4, 16, init="legs", seed=3).double()
    s4d = S4D(4, 16, init="legs", discretization="bilinear", seed=4).double()
    with torch.no_grad():
        s4.P.zero_()
        s4.log_dt.copy_(s4d.log_dt)
        s4.Lambda_real.copy_(torch.log(-s4d.continuous_A().real))
        s4.Lambda_imag.copy_(s4d.A_imag)
        s4.B.copy_(s4d.B)
        s4.C.copy_(s4d.C)
        assert float((s4.kernel(300) - s4d.kernel(300)).abs().max()) < 1e-12


def _legs_pair(N, dt=0.01, seed=0):
    s4 = S4(1, N, init="legs", dt_min=dt, dt_max=dt, seed=seed).double()
    s4d = S4D(1, N, init="legs", discretization="bilinear", dt_min=dt, dt_max=dt, seed=seed).double()
    with torch.no_grad():
        s4d.C.copy_(s4.C)  # same (half) eigenbasis V of the normal part: same output map
    return s4, s4d


def test_s4d_legs_approaches_s4_legs():
    """Thm 6.9 / app. F.3: kernel of (A^(N), B/2) -> kernel of (A, B) as N grows (distance printed).

    Bilinear, dt = 4/L, L = 512 (horizon t = 4), same random C in the shared eigenbasis. Convergence
    is slow and not monotone at small N (16 -> 32 grows); we check the decrease from N = 32 on."""
    dists = []
    L = 512
    for N in (16, 32, 64, 128, 256):
        s4, s4d = _legs_pair(N, dt=4.0 / L)
        with torch.no_grad():
            k4, kd = s4.kernel(L), s4d.kernel(L)
        dists.append(float((k4 - kd).norm() / k4.norm()))
    print("S4D-LegS vs S4-LegS relative kernel distance, N=16..256:", ", ".join(f"{d:.3f}" for d in dists))
    assert all(b < a for a, b in zip(dists[1:], dists[2:])) and dists[-1] < 1.1


@pytest.mark.slow   # fast tier: a training run / build / reproduction
def test_step_stable_over_1e5_steps_legs():
    """10^5 O(N) steps of S4-LegS: |y_t| never exceeds the kernel's l1 bound, and the state
    after 10^5 steps equals the one computed by the convolutional state map."""
    layer = S4(1, 64, init="legs", dt_min=0.01, dt_max=0.01, seed=0).double()
    T = 100_000
    u = torch.rand(1, T, 1, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        step, C = layer._step_system(1.0)
        x = layer.initial_state(1)
        ymax = 0.0
        uu = u[0, :, 0, None]
        for t in range(T):
            x = step(x, uu[t:t + 1])
            if t % 1000 == 999:
                ymax = max(ymax, float((2 * (C * x).sum(-1).real).abs().max()))
        bound = float(layer.kernel(T).abs().sum())                   # sum_l |K_l| * max|u|, max|u| <= 1
        x_conv = layer._advance_state(None, u, 1.0)
    assert ymax <= bound
    assert float((x - x_conv).abs().max()) < 1e-8 * max(1.0, float(x_conv.abs().max()))


def test_diagonalize_fast_path():
    layer = S4(2, 16, init="rand", seed=0).double()
    fast = layer.diagonalize()
    assert fast.kernel_error < 1e-10
    x = torch.randn(3, 20, 2, dtype=F64)
    with torch.no_grad():
        y, s = layer(x[:, :12], return_state=True)
        z = fast.from_dplr_state(s)
        for t in range(12, 20):
            yt, s = layer.step(x[:, t], s)
            yf, z = fast.step(x[:, t], z)
            assert torch.allclose(yt, yf, atol=1e-9)
    with pytest.raises(ValueError, match="inaccurate"):
        layer.diagonalize(tol=0.0)


def test_diagonalize_checks_the_form_it_returns():
    """The accuracy check is made on the form returned, in the layer's dtype: a float32 LegS form (terms |C_n dB_n|
    ~1e2 to 1e5 cancelling into a kernel of ~0.05) was 9e-3 (N=8) to 0.2 (N=64) off while its check, made on the
    float64 form, passed. Now it is refused, naming float64; the float64 layer's form and a float32 form that is
    accurate (random init) pass, and ``kernel_error`` is the returned form's own error."""
    layer = S4(2, 8, init="legs", seed=1)
    with pytest.raises(ValueError, match=r"inaccurate.*float64"):
        layer.diagonalize()
    with pytest.raises(ValueError, match="inaccurate"):
        layer.stepper(1, form="diagonal")
    assert layer.double().diagonalize().kernel_error < 1e-8
    fine = S4(2, 8, init="rand", seed=1)
    form = fine.diagonalize()
    ref = fine.double().kernel(256)
    fine.float()
    err = float((form.kernel(256).double() - ref).norm() / ref.norm())
    assert form.kernel_error < 1e-4 and err < 1e-4 and abs(err - form.kernel_error) < 1e-5


def test_diagonalized_form_casts_consistently():
    """``.float()`` of a float64 form casts its complex buffers too (nn.Module casts leave complex tensors alone:
    ``.double()`` of a float32 form gave float64 outputs at float32 accuracy and a step that failed inside torch);
    an up-cast is refused, naming the way to a float64 form; save_pretrained says what to save instead."""
    layer = S4(2, 8, init="rand", seed=0).double()
    form = layer.diagonalize().float()
    assert form.D.dtype == torch.float32 and all(t.dtype == torch.complex64 for t in (form.log_dA, form.dB, form.Cd))
    x = torch.randn(2, 20, 2)
    with torch.no_grad():
        y = form(x)
        ys, z = [], form.initial_state(2)
        for t in range(20):
            yt, z = form.step(x[:, t], z)
            ys.append(yt)
        ref = layer(x.double())
    assert z.dtype == torch.complex64 and float((y.double() - ref).abs().max()) < 1e-5
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match=r"diagonalize\(\) on a torch.float64 S4 layer"):
        S4(2, 8, init="rand", seed=0).diagonalize().double()
    with pytest.raises(TypeError, match="save the S4 layer"):
        form.save_pretrained("unused")


@pytest.mark.parametrize("rate", [0.5, 2.0])
def test_diagonalize_at_another_rate(rate):
    """``diagonalize(rate)`` and ``stepper(..., rate, form="diagonal")`` raised for every rate but 1 (the check
    asked the form for its kernel at rate 1). The form's kernel and steps equal the layer's at that rate."""
    layer = S4(2, 16, init="rand", seed=0).double()
    form = layer.diagonalize(rate=rate)
    torch.testing.assert_close(form.kernel(40, rate), layer.kernel(40, rate), atol=1e-10, rtol=0)
    x = torch.randn(2, 30, 2, dtype=F64)
    with torch.no_grad():
        want = layer(x, rate=rate)
        stepper = layer.stepper(2, rate=rate, form="diagonal")
        got = torch.stack([stepper(x[:, t]).clone() for t in range(30)], 1)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)


def test_kernel_memory_is_linear_in_L():
    """Autograd of kernel(L) keeps no O(H N L) tensor (H=4, N=64, L=4096)."""
    H, N, L = 4, 64, 4096
    layer = S4(H, N, seed=0)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        k = layer.kernel(L)
    assert max(saved) < H * N * L / 8
    k.sum().backward()


def test_rate_scales_dt():
    a = S4(2, 8, seed=5).double()
    b = S4(2, 8, seed=5).double()
    with torch.no_grad():
        b.log_dt.add_(math.log(3.0))
        assert torch.allclose(a.kernel(50, rate=3.0), b.kernel(50), atol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="rank"):
        S4(2, 8, rank=0)
    with pytest.raises(ValueError, match="needs rank >= 2"):
        S4(2, 8, init="legt", rank=1)
    with pytest.raises(ValueError, match="odd"):
        S4(2, 7)
    with pytest.raises(ValueError, match="unknown init"):
        S4(2, 8, init="legx")
    layer = S4(2, 8, real_transform="none")
    with torch.no_grad():
        layer.Lambda_real[0, 0] = -0.3                               # Re(Lambda) = +0.3: unstable
    with pytest.raises(ValueError, match="Hurwitz"):
        layer.kernel(16)
    with pytest.raises(ValueError, match="Hurwitz"):
        layer.step(torch.randn(1, 2), layer.initial_state(1))
    for L in (0, 2.5, True):      # 0: ValueError; a float or a bool: TypeError (docs/validation.md)
        with pytest.raises((ValueError, TypeError), match="positive integer"):
            S4(2, 8).kernel(L)


@pytest.mark.parametrize("init", ["legs", "lagt", "rand"])
def test_learned_c_tilde_is_the_same_system(init):
    """l_max: the parameter is C~ (app. C.1.2); at init the layer is the default layer's system, and every
    view (fast kernel, shorter and longer kernels, other rates, steps) agrees with the dense powers."""
    from statespaces.kernels.reference import power_kernel

    plain = S4(3, 8, init=init, seed=0).double()
    tilde = S4(3, 8, init=init, seed=0, l_max=64).double()
    assert "l_max=64" in repr(tilde)
    # the same system up to the float32 rounding of the stored C~ (layers are built in float32)
    torch.testing.assert_close(tilde.kernel(64), plain.kernel(64), atol=1e-6, rtol=1e-5)
    for L, rate in ((40, 1.0), (64, 1.0), (100, 1.0), (64, 2.0)):
        dA, dB, c, _ = tilde.dense_system(rate)
        ref = power_kernel(dA, dB, c, L)
        torch.testing.assert_close(tilde.kernel(L, rate), ref, atol=1e-9, rtol=1e-8)
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    state, ys = tilde.initial_state(2), []
    with torch.no_grad():
        for t in range(30):
            y, state = tilde.step(x[:, t], state)
            ys.append(y)
        torch.testing.assert_close(torch.stack(ys, 1), tilde(x), atol=1e-9, rtol=1e-8)
    tilde(x).sum().backward()
    assert tilde.C.grad is not None and tilde.C.grad.abs().sum() > 0


@pytest.mark.parametrize("r", [1, 2, 3])
def test_bilinear_dplr_system_equals_the_dense_discretization(r):
    """The Woodbury-structured real bilinear system (dA from one rank-r product and three diagonals, dB in
    O(N r)) against the dense route: ``discretize_dense`` of the real form (solves with I - (dt/2) A), float64,
    values and gradients."""
    from statespaces.kernels.dplr import bilinear_dplr_system_ref

    g = torch.Generator().manual_seed(r)
    Lam, P, B, _ = random_dplr(3, 4, r, gen=g)
    dt = torch.rand(3, dtype=F64, generator=g) * 0.5 + 0.01

    def dense(Lam, P, B, dt):
        A, b, _ = dplr_real_system(Lam, P, B, B[None])
        return discretize_dense(A, b, dt)

    for got, want in zip(bilinear_dplr_system_ref(Lam, P, B, dt), dense(Lam, P, B, dt)):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)
    ins = [t.clone().requires_grad_() for t in (Lam, P, B, dt)]
    assert torch.autograd.gradcheck(lambda *a: bilinear_dplr_system_ref(*a), ins)
    gA, gB = torch.randn(3, 8, 8, dtype=F64, generator=g), torch.randn(3, 8, dtype=F64, generator=g)
    grads = []
    for f in (bilinear_dplr_system_ref, dense):
        xs = [t.clone().requires_grad_() for t in (Lam, P, B, dt)]
        dA, dB = f(*xs)
        grads.append(torch.autograd.grad((dA * gA).sum() + (dB * gB).sum(), xs))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kw,L", [(dict(d_model=2, d_state=2, init="fout", n_ssm=1, seed=4), 23),
                                  (dict(d_model=4, d_state=16, init="fout", seed=1), 256)])
def test_float32_gradients_through_algorithm_1_for_slow_modes(kw, L):
    """FouT's slow modes (Re Lambda floored at -1e-4): C~ = C (I - dA^L) cancels, and computed in float32 its
    gradients were off by 2e-2 to 1.7e-1 (relative) while the kernel's value was fine. Now formed in float64."""
    import copy

    layer = S4(**kw)
    wide = copy.deepcopy(layer).double()
    g = torch.Generator().manual_seed(0)
    w = torch.randn(layer.d_model, L, generator=g, dtype=F64)
    for m in (layer, wide):
        (m.kernel(L).to(F64) * w).sum().backward()
    for (name, p), (_, q) in zip(layer.named_parameters(), wide.named_parameters()):
        if p.grad is not None:
            err = float((p.grad.double() - q.grad).norm() / q.grad.norm())
            assert err < 1e-3, (name, err)


def test_steps_at_different_rates_use_their_own_system():
    """The step cache is keyed by rate: under no_grad, steps at rates 1, 2, 1 interleaved on one state each equal
    the forward pass at that rate (a cache keyed on nothing would reuse the rate-1 system)."""
    torch.manual_seed(0)
    layer = S4(4, 8, seed=0).double()
    x = torch.randn(2, 1, 4, dtype=torch.float64)
    with torch.no_grad():
        for rate in (1.0, 2.0, 1.0, 0.5):
            y, _ = layer.step(x[:, 0], layer.initial_state(2), rate=rate)
            torch.testing.assert_close(y, layer(x, rate=rate)[:, 0], atol=1e-12, rtol=0)
