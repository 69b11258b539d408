"""LinOSS (seed 001, notes Part 6.1): schemes, eigenvalues, views, stability, bad input."""

import pytest
import torch

from statespaces.kernels.oscillator import (
    IMEX_MAX_DT2A,
    matrix_powers,
    oscillator_eigenvalues,
    oscillator_kernel,
    oscillator_responses,
    oscillator_transition,
)
from statespaces.layers.linoss import LinOSS

SCHEMES = ["IM", "IMEX"]
f64 = torch.float64


def _dense(M):
    """(2, 2, P) block diagonals -> dense (2P, 2P)."""
    return torch.cat([torch.cat([torch.diag(M[0, 0]), torch.diag(M[0, 1])], 1),
                      torch.cat([torch.diag(M[1, 0]), torch.diag(M[1, 1])], 1)], 0)


def _layer(disc, H=4, P=6, seed=0, **kw):
    return LinOSS(H, P, discretization=disc, seed=seed, **kw).double()


# ---- Proposition 3.1 ----------------------------------------------------------------------------
def test_im_eigenvalues_prop31():
    g = torch.Generator().manual_seed(0)
    A = torch.cat([torch.tensor([0.0, 1e-8, 1e6], dtype=f64), torch.rand(50, generator=g, dtype=f64) * 10])
    for dt in (1e-3, 0.3, 1.0, 7.0):
        dtv = torch.full_like(A, dt)
        M, _ = oscillator_transition(A, dtv, "IM")
        ev = torch.linalg.eigvals(_dense(M))
        S = 1 / (1 + dt * dt * A)
        assert bool((ev.abs() <= 1 + 1e-12).all())
        assert torch.allclose(ev.abs().sort().values, torch.cat([S.sqrt(), S.sqrt()]).sort().values, atol=1e-9)
        lam = oscillator_eigenvalues(A, dtv, "IM")
        expect = S * torch.complex(torch.ones_like(A), dt * A.sqrt())     # S (1 + i dt sqrt(A))
        assert torch.allclose(lam, expect, atol=1e-12)


def test_imex_eigenvalues_unit_modulus_and_failure_beyond_4():
    g = torch.Generator().manual_seed(1)
    dt = torch.rand(64, generator=g, dtype=f64) + 0.01
    A = torch.rand(64, generator=g, dtype=f64) * IMEX_MAX_DT2A / dt**2
    M, _ = oscillator_transition(A, dt, "IMEX")
    ev = torch.linalg.eigvals(_dense(M))
    assert torch.allclose(ev.abs(), torch.ones_like(ev.abs()), atol=1e-6)
    assert torch.allclose(oscillator_eigenvalues(A, dt, "IMEX").abs(), torch.ones(64, dtype=f64))
    # the condition the seed omits: dt^2 A = 5 gives real eigenvalues 0.38 and 2.62
    M, _ = oscillator_transition(torch.tensor([5.0], dtype=f64), torch.tensor([1.0], dtype=f64), "IMEX", validate=False)
    ev = torch.linalg.eigvals(_dense(M)).abs().sort().values
    assert torch.allclose(ev, torch.tensor([(3 - 5**0.5) / 2, (3 + 5**0.5) / 2], dtype=f64), atol=1e-12)


def test_layer_eigenvalues_bounded_for_any_parameters():
    g = torch.Generator().manual_seed(2)
    for disc in SCHEMES:
        for A_param in ("relu", "square"):
            layer = _layer(disc, P=32, A_param=A_param)
            with torch.no_grad():
                layer.A_hat.copy_(torch.randn(32, generator=g, dtype=f64) * 30)
                layer.dt_raw.copy_(torch.randn(32, generator=g, dtype=f64) * 5)
            for rate in (0.1, 1.0, 3.0):
                ev = torch.linalg.eigvals(_dense(layer.transition(rate)[0].detach()))
                assert bool((ev.abs() <= 1 + 1e-6).all())
                if disc == "IMEX":
                    assert torch.allclose(ev.abs(), torch.ones_like(ev.abs()), atol=1e-6)
                    assert bool(((layer.dt(rate) ** 2 * layer.stiffness(rate)) <= IMEX_MAX_DT2A + 1e-9).all())


# ---- each scheme against a direct solve of its defining equations -------------------------------------
def _direct_solve(layer, u):
    """Step-by-step solve of the seed's equations (complex B, C; output Re(C y) + D u)."""
    A = layer.stiffness().detach()
    dt = layer.dt().detach()
    Bc, Cc = layer.B_complex.detach(), layer.C_complex.detach()
    Bsz, L, H = u.shape
    z = torch.zeros(Bsz, layer.n_oscillators, dtype=torch.complex128)
    y = torch.zeros_like(z)
    outs = []
    for n in range(L):
        bu = u[:, n].to(torch.complex128) @ Bc.T
        if layer.discretization == "im":
            # z_n = z_{n-1} + dt(-A y_n + Bu_n), y_n = y_{n-1} + dt z_n: solve [[1, dt A], [-dt, 1]] [z; y] = rhs
            sysm = torch.stack([torch.stack([torch.ones_like(A), dt * A], -1), torch.stack([-dt, torch.ones_like(A)], -1)], -2)
            rhs = torch.stack([z + dt * bu, y], -1).unsqueeze(-1)           # (B, P, 2, 1)
            sol = torch.linalg.solve(sysm.to(torch.complex128), rhs)
            z, y = sol[..., 0, 0], sol[..., 1, 0]
        else:
            z = z + dt * (-A * y + bu)
            y = y + dt * z
        outs.append((y @ Cc.T).real + layer.D.detach() * u[:, n])
    return torch.stack(outs, 1)


@pytest.mark.parametrize("disc", SCHEMES)
def test_scheme_equals_direct_solve(disc):
    layer = _layer(disc, H=3, P=5, seed=3)
    u = torch.randn(2, 40, 3, dtype=f64)
    ref = _direct_solve(layer, u)
    for mode in ("scan", "conv", "loop"):
        assert torch.allclose(layer(u, mode=mode), ref, atol=1e-10), mode


def test_seed_forcing_is_wrong_for_im():
    """The seed's F^IM = [dt B u; 0] does not reproduce the implicit scheme (notes 6.1)."""
    A = torch.tensor([0.7], dtype=f64)
    dt = torch.tensor([0.9], dtype=f64)
    M, f = oscillator_transition(A, dt, "IM")
    x_ok, x_seed = torch.zeros(2, dtype=f64), torch.zeros(2, dtype=f64)
    errs = []
    for n in range(30):
        u = 1.0 if n == 0 else 0.0
        x_ok = M[..., 0] @ x_ok + f[:, 0] * u
        x_seed = M[..., 0] @ x_seed + torch.tensor([dt.item() * u, 0.0], dtype=f64)
        errs.append(abs(float(x_ok[1] - x_seed[1])))
    assert max(errs) > 0.1


@pytest.mark.parametrize("disc", SCHEMES)
def test_closed_form_impulse_response(disc):
    A = torch.tensor([0.05, 0.7, 2.0, 3.5], dtype=f64)
    dt = torch.tensor([0.9, 0.9, 0.5, 1.0], dtype=f64)
    L = 200
    k = torch.arange(L, dtype=f64)
    kappa = oscillator_kernel(A, dt, disc, L)
    if disc == "IM":
        r = (1 + dt**2 * A) ** -0.5
        th = torch.atan(dt * A.sqrt())
        expect = dt[:, None] * r[:, None] ** (k + 1) * torch.sin((k + 1) * th[:, None]) / A.sqrt()[:, None]
    else:
        phi = torch.acos(1 - dt**2 * A / 2)
        expect = dt[:, None] ** 2 * torch.sin((k + 1) * phi[:, None]) / torch.sin(phi)[:, None]
    assert torch.allclose(kappa, expect, atol=1e-12)
    # and against the recurrence x_l = M^l f
    M, f = oscillator_transition(A, dt, disc)
    x, rec = f.clone(), []
    for _ in range(L):
        rec.append(x.clone())
        x = torch.stack([M[0, 0] * x[0] + M[0, 1] * x[1], M[1, 0] * x[0] + M[1, 1] * x[1]])
    rec = torch.stack(rec, -1)
    assert torch.allclose(oscillator_responses(A, dt, disc, L), rec, atol=1e-11)
    P = matrix_powers(M, A, dt, disc, torch.tensor([0, 1, 5]))
    assert torch.allclose(P[..., 0], torch.eye(2, dtype=f64)[:, :, None].expand(2, 2, 4))
    assert torch.allclose(P[..., 1], M)


def test_degenerate_oscillator_a_zero():
    """A = 0 (relu of a negative A_hat): Jordan block, kappa_l = dt^2 (l + 1) in both schemes."""
    A = torch.zeros(2, dtype=f64)
    dt = torch.tensor([0.3, 0.8], dtype=f64)
    for disc in SCHEMES:
        k = oscillator_kernel(A, dt, disc, 50)
        assert torch.allclose(k, dt[:, None] ** 2 * torch.arange(1, 51, dtype=f64), atol=1e-12)


# ---- views: scan == conv == loop == step == chunked == kernel -------------------------------------------
@pytest.mark.parametrize("disc", SCHEMES)
@pytest.mark.parametrize("A_param", ["relu", "square"])
def test_views_agree(disc, A_param):
    layer = _layer(disc, H=5, P=7, seed=4, A_param=A_param)
    x = torch.randn(3, 37, 5, dtype=f64)
    y = layer(x)
    assert y.shape == (3, 37, 5) and y.dtype == f64
    assert torch.allclose(layer(x, mode="conv"), y, atol=1e-10)
    assert torch.allclose(layer(x, mode="loop"), y, atol=1e-10)
    # step
    state = layer.initial_state(3)
    outs = []
    for t in range(37):
        o, state = layer.step(x[:, t], state)
        outs.append(o)
    assert torch.allclose(torch.stack(outs, 1), y, atol=1e-10)
    # chunked, odd splits, every mode; the final state equals the stepped one
    for mode in ("scan", "conv", "loop"):
        s, parts = None, []
        for a, b in ((0, 1), (1, 12), (12, 13), (13, 37)):
            o, s = layer(x[:, a:b], state=s, return_state=True, mode=mode)
            parts.append(o)
        assert torch.allclose(torch.cat(parts, 1), y, atol=1e-10), mode
        assert torch.allclose(s, state, atol=1e-10), mode
    # base-class contract helpers
    zir = layer._zero_input_response(state, 9, 1.0)
    assert torch.allclose(zir, layer(torch.zeros(3, 9, 5, dtype=f64), state=state), atol=1e-10)
    assert torch.allclose(layer._advance_state(None, x, 1.0), state, atol=1e-10)
    # MIMO kernel: impulse at input channel k
    L = 37
    K = layer.kernel(L)
    assert K.shape == (5, 5, L)
    imp = torch.zeros(5, L, 5, dtype=f64)
    imp[torch.arange(5), 0, torch.arange(5)] = 1.0
    resp = layer(imp).permute(2, 0, 1)                                    # (h_out, k_in, l)
    resp[torch.arange(5), torch.arange(5), 0] -= layer.D.detach()
    assert torch.allclose(resp, K, atol=1e-10)
    yk = torch.einsum("hkl,bnk->bnhl", K, x)                            # direct causal conv via K
    direct = torch.stack([sum(yk[:, n - l, :, l] for l in range(n + 1)) for n in range(L)], 1) + x * layer.D
    assert torch.allclose(direct, y, atol=1e-10)


def test_float32_layer_matches_float64():
    layer = LinOSS(6, 8, seed=5)
    x = torch.randn(2, 300, 6)
    with torch.no_grad():
        y32 = layer(x)
        y64 = layer.double()(x.double())
    assert float((y32.double() - y64).abs().max() / y64.abs().max()) < 1e-5  # noqa



def test_rate_multiplies_dt():
    layer = _layer("IM", seed=6)
    x = torch.randn(2, 20, 4, dtype=f64)
    other = _layer("IM", seed=6)
    with torch.no_grad():
        dt2 = (2 * torch.sigmoid(layer.dt_raw)).clamp(max=0.999)
        other.dt_raw.copy_(torch.log(dt2) - torch.log1p(-dt2))
    mask = 2 * torch.sigmoid(layer.dt_raw) < 0.999
    if bool(mask.all()):
        assert torch.allclose(layer(x, rate=2.0), other(x), atol=1e-10)
    assert torch.allclose(layer(x, rate=2.0, mode="conv"), layer(x, rate=2.0), atol=1e-10)


def test_gradients_scan_equal_loop_and_finite():
    for A_param in ("relu", "square"):
        layer = _layer("IM", seed=7, A_param=A_param)
        with torch.no_grad():
            layer.A_hat[0] = 0.0                                         # A = 0 exactly
        x = torch.randn(2, 25, 4, dtype=f64)
        grads = {}
        for mode in ("scan", "loop", "conv"):
            layer.zero_grad()
            layer(x, mode=mode).square().sum().backward()
            grads[mode] = [p.grad.clone() for p in layer.parameters()]
            assert all(bool(torch.isfinite(g).all()) for g in grads[mode])
        for g1, g2 in zip(grads["scan"], grads["loop"]):
            assert torch.allclose(g1, g2, atol=1e-8)


@pytest.mark.parametrize("L", [37, 64])               # a partial last chunk (padded) and whole chunks (views)
def test_gradients_chunked_channels_first_equal_loop(L):
    """The CPU chunked forward in the oscillator-first layout (ProjectT / ReadoutT around the chunk products)
    against the sequential loop: output, final state, and gradients of every parameter and of the input."""
    layer = _layer("IMEX", H=5, P=7, seed=11)
    assert layer._channels_first(torch.zeros(1, 1, 5, dtype=f64), "chunked")
    x0 = torch.randn(2, L, 5, dtype=f64)
    res = {}
    for mode in ("chunked", "loop"):
        layer.zero_grad()
        x = x0.clone().requires_grad_()
        y, s = layer(x, return_state=True, mode=mode)
        (y.square().sum() + torch.view_as_real(s).sum()).backward()
        res[mode] = [y, s, x.grad] + [p.grad.clone() for p in layer.parameters()]
    for a, b in zip(res["chunked"], res["loop"]):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


# ---- stability over 10^6 steps ------------------------------------------------------------------------------
@pytest.mark.parametrize("disc", SCHEMES)
def test_million_steps_bounded(disc):
    g = torch.Generator().manual_seed(8)
    P, H, n_steps, chunk = 8, 3, 10**6, 2**17
    layer = LinOSS(H, P, discretization=disc, seed=9).double()
    with torch.no_grad():
        layer.A_hat.copy_(torch.rand(P, generator=g, dtype=f64) * 8)     # up to the IMEX bound
        layer.dt_raw.copy_(torch.randn(P, generator=g, dtype=f64))
    A, dt = layer.stiffness().detach(), layer.dt().detach()
    M, f = layer.transition()
    # closed-form powers: M^(10^6) stays bounded (|lambda| <= 1, diagonalizable)
    Pw = matrix_powers(M.detach(), A, dt, disc, torch.tensor([n_steps]))
    assert bool(torch.isfinite(Pw).all()) and float(Pw.abs().max()) < 1e3
    # the layer run in chunks with random input |u| <= 1 and a random initial state
    state = torch.randn(1, 2, P, dtype=torch.complex128, generator=g)
    done = 0
    with torch.no_grad():
        while done < n_steps:
            L = min(chunk, n_steps - done)
            x = torch.rand(1, L, H, generator=g, dtype=f64) * 2 - 1
            y, state = layer(x, state=state, return_state=True)
            assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(state).all())
            done += L
        # worst case |x_n| <= max|M^l x0| + max|Bu| * sum_{l < n} |M^l f|
        resp = torch.zeros(2, P, dtype=f64)
        for start in range(0, n_steps, chunk):
            L = min(chunk, n_steps - start)
            l = torch.arange(start, start + L)
            Ml = matrix_powers(M.detach(), A, dt, disc, l)              # (2, 2, P, L)
            resp += (Ml[:, 0] * f[0, :, None] + Ml[:, 1] * f[1, :, None]).abs().sum(-1)
        bu_max = layer.B_complex.detach().abs().sum(-1)                   # (P,)
        bound = 10 * (1 + resp * bu_max)
    assert bool((state.abs()[0] <= bound).all())
    if disc == "IM":
        assert float(state.abs().max()) < 1e4


# ---- bad input -------------------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="discretization"):
        LinOSS(4, 4, discretization="rk4")
    with pytest.raises(ValueError, match="A_param"):
        LinOSS(4, 4, A_param="abs")
    with pytest.raises(ValueError, match="dt_min"):
        LinOSS(4, 4, dt_min=0.0, dt_max=0.5)
    with pytest.raises(ValueError, match="dt_min"):
        LinOSS(4, 4, dt_min=0.1, dt_max=1.5)
    A, dt = torch.rand(3, dtype=f64), torch.rand(3, dtype=f64)
    with pytest.raises(ValueError, match="dt"):
        oscillator_transition(A, torch.tensor([0.1, 0.0, 0.2], dtype=f64), "IM")
    with pytest.raises(ValueError, match="dt"):
        oscillator_transition(A, -dt, "IMEX")
    with pytest.raises(ValueError, match=">= 0"):
        oscillator_transition(-A, dt, "IM")
    with pytest.raises(ValueError, match="unstable"):
        oscillator_transition(torch.tensor([5.0], dtype=f64), torch.tensor([1.0], dtype=f64), "IMEX")
    with pytest.raises(ValueError, match="discretization"):
        oscillator_transition(A, dt, "explicit")
    # A_param='none': negative A, or IMEX beyond the bound, cannot slip through
    layer = LinOSS(4, 4, A_param="none", seed=0)
    with torch.no_grad():
        layer.A_hat[1] = -0.5
    with pytest.raises(ValueError, match=">= 0"):
        layer(torch.randn(1, 5, 4))
    layer = LinOSS(4, 4, A_param="none", discretization="IMEX", seed=0)
    with torch.no_grad():
        layer.A_hat[0] = 100.0
    for call in (lambda: layer(torch.randn(1, 5, 4)), lambda: layer.kernel(5),
                 lambda: layer.step(torch.randn(1, 4), layer.initial_state(1))):
        with pytest.raises(ValueError, match="unstable"):
            call()
    # relu/square parameterizations clamp instead: same huge A_hat is stable
    layer = LinOSS(4, 4, discretization="IMEX", seed=0)
    with torch.no_grad():
        layer.A_hat[0] = 100.0
    assert bool(torch.isfinite(layer(torch.randn(1, 2000, 4))).all())
    layer = LinOSS(4, 4, seed=0)
    with pytest.raises(ValueError, match="rate"):
        layer(torch.randn(1, 5, 4), rate=0.0)
    with pytest.raises(ValueError, match="mode"):
        layer(torch.randn(1, 5, 4), mode="fft")
    with pytest.raises(ValueError, match="d_model"):
        layer(torch.randn(1, 5, 3))
    with pytest.raises(ValueError, match="state"):
        layer(torch.randn(2, 5, 4), state=layer.initial_state(1))
    with pytest.raises(TypeError):
        layer(torch.randn(1, 5, 4, dtype=torch.complex64))
    with pytest.raises(ValueError):
        layer.kernel(0)


def test_registry_and_repr():
    from statespaces.layers.registry import make_layer

    layer = make_layer(dict(kind="linoss", n_oscillators=4, discretization="IMEX"), 8)
    assert isinstance(layer, LinOSS) and "IMEX" in repr(layer)
    assert {id(p) for p in layer.ssm_parameters()} == {id(layer.A_hat), id(layer.dt_raw), id(layer.B)}
    # paper init ranges
    layer = LinOSS(8, 256, seed=0)
    assert bool((layer.stiffness() >= 0).all()) and float(layer.stiffness().detach().max()) <= 1
    assert bool(((layer.dt() >= 0.5) & (layer.dt() <= 0.75)).all())
    layer = LinOSS(8, 64, dt_min=1e-3, dt_max=1e-1, seed=0)
    assert bool(((layer.dt() >= 1e-3 - 1e-9) & (layer.dt() <= 1e-1 + 1e-9)).all())


@pytest.mark.parametrize("scheme", ["IM", "IMEX"])
def test_transition_node_gradients_equal_the_formulas(scheme):
    """``oscillator_transition`` with gradients is one autograd node (hand-written backward): gradcheck in
    float64, and equal to plain autograd through the formulas (``oscillator_transition_ref``) for a scalar
    dt, per-oscillator dt and per-step dt (B, L, P) as the irregular path uses, A = 0 included."""
    from statespaces.kernels.oscillator import oscillator_transition, oscillator_transition_ref

    g = torch.Generator().manual_seed(7)
    P = 5
    A = (torch.rand(P, generator=g, dtype=torch.float64) * 3).index_fill(0, torch.tensor([0]), 0.0)
    for dt in (torch.tensor(0.3, dtype=torch.float64), 0.2 + 0.5 * torch.rand(P, generator=g, dtype=torch.float64),
               0.2 + 0.5 * torch.rand(2, 3, P, generator=g, dtype=torch.float64)):
        a = A.clone().requires_grad_()
        d = dt.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda a, d: oscillator_transition(*torch.broadcast_tensors(a, d), scheme,
                                                                           validate=False), (a, d))
        weights = [torch.randn(2, 2, *torch.broadcast_shapes(A.shape, dt.shape), generator=g, dtype=torch.float64),
                   torch.randn(2, *torch.broadcast_shapes(A.shape, dt.shape), generator=g, dtype=torch.float64)]
        grads = []
        for fn in (lambda a, d, s: oscillator_transition(a, d, s, validate=False), oscillator_transition_ref):
            a, d = A.clone().requires_grad_(), dt.clone().requires_grad_()
            M, f = fn(*torch.broadcast_tensors(a, d), scheme)
            ((M * weights[0]).sum() + (f * weights[1]).sum()).backward()
            grads.append((M.detach(), f.detach(), a.grad, d.grad))
        for x, y in zip(*grads):
            torch.testing.assert_close(x, y, atol=1e-12, rtol=1e-12)


def test_a_max_sets_the_initial_stiffness_range():
    """A ~ U[0, a_max]: the same uniform draws scaled (same seed), in every A parameterization; the config and
    the repr carry it; a non-positive or non-finite a_max is refused."""
    from statespaces.layers.config import layer_config

    for param in ("relu", "square", "none"):
        base = LinOSS(4, 16, A_param=param, seed=3)
        wide = LinOSS(4, 16, A_param=param, seed=3, a_max=4.0)
        torch.testing.assert_close(wide._stiffness(1.0), 4.0 * base._stiffness(1.0))
    assert "a_max=4.0" in repr(wide) and "a_max" not in repr(base)
    cfg = layer_config({"kind": "linoss", "a_max": 2.5})
    assert cfg.build(3).a_max == 2.5 and layer_config("linoss").a_max == 1.0
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="a_max must be a finite number > 0"):
            LinOSS(4, 8, a_max=bad)
    for bad in (True, "4", torch.tensor(4.0)):
        with pytest.raises(TypeError, match="a_max must be"):
            LinOSS(4, 8, a_max=bad)


def test_normal_form_of_oscillator_blocks():
    """``normal_form``: T M' T^-1 = M and T f' = f with T = [[p, q], [0, 1]] (the position kept), M' normal with the
    eigenvalues of M, identity where beta ~ 0 (a double eigenvalue, here LinOSS-IMEX at A = 0), and gradcheck."""
    from statespaces.kernels.oscillator import normal_form, oscillator_transition

    g = torch.Generator().manual_seed(4)
    A = torch.rand(7, generator=g, dtype=torch.float64) * 3
    A[0] = 0.0
    dt = 0.2 + 0.6 * torch.rand(7, generator=g, dtype=torch.float64)
    M, f = oscillator_transition(A, dt, "IMEX")
    Mn, fn, (p, q) = normal_form(M, f)
    assert float(p[0]) == 1.0 and float(q[0]) == 0.0 and torch.equal(Mn[..., 0], M[..., 0])
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    T = torch.stack([torch.stack([p, q]), torch.stack([zero, one])])
    Ti = torch.stack([torch.stack([1 / p, -q / p]), torch.stack([zero, one])])
    torch.testing.assert_close(torch.einsum("ijp,jkp,klp->ilp", T, Mn, Ti), M, atol=1e-13, rtol=1e-12)
    torch.testing.assert_close(torch.einsum("ijp,jp->ip", T, fn), f, atol=1e-13, rtol=1e-12)
    from statespaces.kernels.oscillator import from_normal_basis, to_normal_basis

    x = torch.randn(3, 2, 7, generator=g, dtype=torch.float64)                 # states (B, 2, P)
    torch.testing.assert_close(from_normal_basis(x, torch.stack([p, q])), torch.einsum("ijp,bjp->bip", T, x))
    torch.testing.assert_close(to_normal_basis(from_normal_basis(x, torch.stack([p, q])), torch.stack([p, q])), x)
    with pytest.raises(ValueError, match="normal_form"):
        normal_form(M[0], f)
    with pytest.raises(ValueError, match="normal basis"):
        to_normal_basis(x.transpose(1, 2), torch.stack([p, q]))
    comm = torch.einsum("ijp,kjp->ikp", Mn, Mn) - torch.einsum("jip,jkp->ikp", Mn, Mn)     # M M^T - M^T M
    assert float(comm[..., 1:].abs().max()) < 1e-14
    torch.testing.assert_close(torch.linalg.eigvals(Mn[..., 1:].permute(2, 0, 1)).abs(),
                               torch.linalg.eigvals(M[..., 1:].permute(2, 0, 1)).abs(), atol=1e-12, rtol=1e-12)
    Mg, fg = M[..., 1:].clone().requires_grad_(), f[..., 1:].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: normal_form(a, b), (Mg, fg))


@pytest.mark.parametrize("disc", ["imex", "im"])
def test_dlinoss_scan_mode_float32_precision(disc):
    """D-LinOSS's scan mode in float32 against float64 (ring init: theta near 0 and pi, blocks far from normal):
    the chunks scanned in the blocks' normal form (6.7e-4 in their own basis at L = 1024)."""
    from statespaces.layers import DLinOSS

    a = DLinOSS(16, 32, mode="scan", discretization=disc, seed=0)
    b = DLinOSS(16, 32, mode="scan", discretization=disc, seed=0).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 512, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = b(x).detach()
    assert float((a(x.float()).detach().double() - ref).abs().max() / ref.abs().max()) < 1e-5


def test_imex_margin_message_and_nan_parameters_in_the_inspection_methods():
    """dt^2 A = 3.995 (stable: |lambda| = 1) was refused as 'unstable for dt^2 A > 4'; a NaN parameter made
    eigenvalues(), transition() and stiffness() return NaN silently where forward/kernel/step name it."""
    from statespaces.layers import DLinOSS

    layer = LinOSS(1, 1, discretization="IMEX", A_param="none").double()
    with torch.no_grad():
        layer.A_hat.fill_(3.995 / float(layer.dt()[0]) ** 2)
    with pytest.raises(ValueError, match=r"needs dt\^2 A <= 3.99 \(its margin below 4"):
        layer(torch.randn(1, 4, 1, dtype=torch.float64))
    for lay in (LinOSS(2, 3), DLinOSS(2, 3)):
        with torch.no_grad():
            lay.A_hat[0] = float("nan")
        for name in ("eigenvalues", "transition", "stiffness"):
            with pytest.raises(FloatingPointError, match="A_hat"):
                getattr(lay, name)()
    lay = DLinOSS(2, 3)
    with torch.no_grad():
        lay.G_hat[0] = float("nan")
    with pytest.raises(FloatingPointError, match="G_hat"):
        lay.damping()
