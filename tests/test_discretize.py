"""Discretization rules (thesis §2.3.1, app. A.1.4) against scipy/matrix-exponential references."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from statespaces import DISCRETIZATIONS, discretize_dense, discretize_diagonal

RULES = [("forward_euler", None), ("backward_euler", None), ("bilinear", None), ("gbt", 0.3), ("zoh", None)]


def _random_system(N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, N, dtype=torch.float64, generator=g) - 2 * torch.eye(N, dtype=torch.float64)
    B = torch.randn(N, dtype=torch.float64, generator=g)
    return A, B


def _scipy_reference(A, B, dt, method, alpha):
    A, B = A.numpy(), B.numpy()
    N = A.shape[0]
    if method == "zoh":
        M = np.zeros((N + 1, N + 1))
        M[:N, :N], M[:N, N] = A * dt, B * dt
        E = scipy.linalg.expm(M)
        return E[:N, :N], E[:N, N]
    a = {"forward_euler": 0.0, "backward_euler": 1.0, "bilinear": 0.5}.get(method, alpha)
    I = np.eye(N)
    lhs = I - a * dt * A
    return np.linalg.solve(lhs, I + (1 - a) * dt * A), np.linalg.solve(lhs, dt * B)


@pytest.mark.parametrize("method,alpha", RULES)
def test_dense_matches_scipy(method, alpha):
    A, B = _random_system()
    dA, dB = discretize_dense(A, B, torch.tensor(0.07, dtype=torch.float64), method, alpha)
    rA, rB = _scipy_reference(A, B, 0.07, method, alpha)
    np.testing.assert_allclose(dA.numpy(), rA, atol=1e-12)
    np.testing.assert_allclose(dB.numpy(), rB, atol=1e-12)


def test_dense_zoh_is_accurate_in_the_small_block():
    """dB = phi(dt A) dt B of a 1x1 system against its closed form (e^x - 1)/x * dt: the matrix exponential of
    [[dt A, dt B], [0, 0]] (torch.linalg.matrix_exp) was off by 3.9e-10 relative at |dt A| ~ 0.03; and a HiPPO
    matrix at steps where ||dt A|| is 0.9 to 450 against scipy's expm (Al-Mohy & Higham)."""
    lam, d = -0.5 + 19.85741037097057j, 0.0013246664878820296
    for scale in (1.0, 3.0, 10.0, 100.0):
        A = torch.tensor([[lam * scale]], dtype=torch.complex128)
        dA, dB = discretize_dense(A, torch.ones(1, dtype=torch.complex128), torch.tensor(d, dtype=torch.float64), "zoh")
        x = complex(lam * scale * d)
        phi = complex(np.expm1(x) / x) if abs(x) > 1e-3 else complex(sum(x**k / math.factorial(k + 1) for k in range(12)))
        assert abs(complex(dB[0]) - phi * d) <= 1e-15 * abs(phi * d)
        assert abs(complex(dA[0, 0]) - complex(np.exp(x))) <= 1e-15
    from statespaces.hippo import transition

    A, B = (t.to(torch.float64) for t in transition("legs", 12))
    for dt in (0.01, 0.1, 1.0, 5.0):
        dA, dB = discretize_dense(A, B, torch.tensor(dt, dtype=torch.float64), "zoh")
        rA, rB = _scipy_reference(A, B, dt, "zoh", None)
        assert np.abs(dA.numpy() - rA).max() <= 1e-13 * np.abs(rA).max()
        assert np.abs(dB.numpy() - rB).max() <= 1e-13 * np.abs(rB).max()


def test_dense_zoh_gradcheck_and_batch():
    A, B = _random_system(N=3)
    A = A.clone().requires_grad_()
    dt = torch.tensor([0.05, 0.7, 30.0], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda a, t: discretize_dense(a, B, t, "zoh"), (A, dt))
    dA, dB = discretize_dense(A, B, dt, "zoh")                 # one matrix per step, each scaled on its own
    for i in range(3):
        rA, rB = _scipy_reference(A.detach(), B, float(dt[i]), "zoh", None)
        np.testing.assert_allclose(dA[i].detach().numpy(), rA, rtol=0, atol=1e-13 * np.abs(rA).max())
        np.testing.assert_allclose(dB[i].detach().numpy(), rB, rtol=0, atol=1e-13 * np.abs(rB).max())


def test_zoh_dB_solves_A_dB_equals_dA_minus_I_B():
    A, B = _random_system()
    dA, dB = discretize_dense(A, B, torch.tensor(0.2, dtype=torch.float64), "zoh")
    torch.testing.assert_close(A @ dB, (dA - torch.eye(5, dtype=torch.float64)) @ B, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method,alpha", RULES)
def test_diagonal_path_equals_dense_path(method, alpha):
    g = torch.Generator().manual_seed(1)
    lam = torch.complex(-torch.rand(3, 6, dtype=torch.float64, generator=g), 5 * torch.randn(3, 6, dtype=torch.float64, generator=g))
    B = torch.randn(3, 6, dtype=torch.complex128, generator=g)
    dt = torch.tensor([0.01, 0.1, 0.3], dtype=torch.float64)
    dA, dB = discretize_diagonal(lam, B, dt, method, alpha)
    dAd, dBd = discretize_dense(torch.diag_embed(lam), B, dt, method, alpha)
    torch.testing.assert_close(torch.diag_embed(dA), dAd, atol=1e-12, rtol=0)
    torch.testing.assert_close(dB, dBd, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method,alpha", RULES)
def test_rules_depend_only_on_dtA_dtB(method, alpha):
    """Lemma 2.13: SSM(dt, A, B) == SSM(1, dt A, dt B)."""
    A, B = _random_system()
    dt = torch.tensor(0.05, dtype=torch.float64)
    one = torch.tensor(1.0, dtype=torch.float64)
    for x, y in zip(discretize_dense(A, B, dt, method, alpha), discretize_dense(dt * A, dt * B, one, method, alpha)):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=0)


def test_gbt_special_cases():
    A, B = _random_system()
    dt = torch.tensor(0.1, dtype=torch.float64)
    for name, a in (("forward_euler", 0.0), ("backward_euler", 1.0), ("bilinear", 0.5)):
        for x, y in zip(discretize_dense(A, B, dt, "gbt", a), discretize_dense(A, B, dt, name)):
            torch.testing.assert_close(x, y, atol=1e-14, rtol=0)


def test_zoh_limit_at_zero_eigenvalue():
    lam = torch.tensor([0.0 + 0j, -1e-9 + 0j], dtype=torch.complex128)
    dA, dB = discretize_diagonal(lam, torch.ones(2, dtype=torch.complex128), torch.tensor(0.5, dtype=torch.float64), "zoh")
    torch.testing.assert_close(dB, torch.full((2,), 0.5, dtype=torch.complex128), atol=1e-9, rtol=0)


def test_gating_lemma_2_16():
    """Backward Euler of x' = -x + u with dt = exp(z) is the gate x_t = (1-s(z)) x_{t-1} + s(z) u_t."""
    z = torch.linspace(-3, 3, 7, dtype=torch.float64)
    ones = torch.ones(7, 1, dtype=torch.float64)
    dA, dB = discretize_diagonal(-ones, ones, torch.exp(z), "backward_euler")  # 7 systems of size 1
    torch.testing.assert_close(dA[:, 0], 1 - torch.sigmoid(z))
    torch.testing.assert_close(dB[:, 0], torch.sigmoid(z))


def test_stable_rules_keep_stability():
    lam = torch.complex(-torch.rand(200, dtype=torch.float64) - 1e-3, 100 * torch.randn(200, dtype=torch.float64))
    for method in ("zoh", "bilinear", "backward_euler"):
        dA, _ = discretize_diagonal(lam, torch.ones_like(lam), torch.tensor(0.5, dtype=torch.float64), method)
        assert bool((dA.abs() < 1).all()), method


def test_bad_input():
    A, B = _random_system()
    with pytest.raises(ValueError, match="valid choices are: zoh"):
        discretize_dense(A, B, 0.1, "rk4")
    with pytest.raises(ValueError, match="alpha"):
        discretize_dense(A, B, 0.1, "gbt")
    with pytest.raises(ValueError, match="alpha"):
        discretize_dense(A, B, 0.1, "bilinear", alpha=0.3)
    with pytest.raises(ValueError, match=r"\(\.\.\., N, N\)"):
        discretize_dense(B, B, 0.1)
    assert set(DISCRETIZATIONS) == {m for m, _ in RULES}


@pytest.mark.parametrize("method,alpha", RULES)
def test_undiscretize_inverts_the_eigenvalue_map(method, alpha):
    """undiscretize_diagonal(log dA) = A for every rule (float64), dA from discretize_diagonal."""
    from statespaces.discretize import undiscretize_diagonal

    g = torch.Generator().manual_seed(3)
    A = torch.complex(-torch.rand(2, 6, dtype=torch.float64, generator=g) - 0.1,
                      4 * torch.randn(2, 6, dtype=torch.float64, generator=g))
    dt = torch.tensor([0.01, 0.05], dtype=torch.float64)
    dA, _ = discretize_diagonal(A, torch.ones_like(A), dt, method, alpha)
    torch.testing.assert_close(undiscretize_diagonal(torch.log(dA), dt, method, alpha), A, atol=1e-9, rtol=0)


def test_rule_names_and_alphas_have_one_home():
    """Layers and HiPPO take the rule names and the GBT alpha table from statespaces.discretize."""
    from statespaces import discretize as d
    from statespaces.hippo import online
    from statespaces.layers import s4d

    assert s4d.S4D_DISCRETIZATIONS is d.DISCRETIZATIONS
    assert online.DISCRETIZATIONS == (*d.GBT_ALPHA, "zoh") and not hasattr(online, "_ALPHA")
    assert d.gbt_alpha("bilinear") == 0.5 and d.gbt_alpha("zoh") is None and d.gbt_alpha("gbt", 0.25) == 0.25
    with pytest.raises(ValueError, match="fixes alpha=0.5"):
        d.gbt_alpha("bilinear", 0.3)


# ---- the fused ZOH kernel factors (one autograd node, hand-written backward) ------------------------------
def _zoh_inputs(H=3, M=4, K=2, zero_modes=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    dt = (0.05 + torch.rand(H, generator=g, dtype=torch.float64)).requires_grad_()
    A = torch.complex(-torch.rand(H, M, generator=g, dtype=torch.float64), torch.randn(H, M, generator=g,
                                                                                      dtype=torch.float64))
    if zero_modes:                       # x = dt A exactly 0 and tiny: the series branches of phi and phi'
        A[0, 0] = 0
        A[1, 1] = complex(-1e-9, 2e-9)
    A = A.requires_grad_()
    B = torch.randn(H, M, generator=g, dtype=torch.complex128).requires_grad_()
    C = torch.randn(K, H, M, generator=g, dtype=torch.complex128).requires_grad_()
    return dt, A, B, C


@pytest.mark.parametrize("zero_modes", [False, True])
def test_zoh_kernel_factors_equal_the_generic_route_and_pass_gradcheck(zero_modes):
    from statespaces.discretize import zoh_kernel_factors

    dt, A, B, C = _zoh_inputs(zero_modes=zero_modes)
    log_dA, coef = zoh_kernel_factors(dt, A, B, C, 2.0)
    _, dB = discretize_diagonal(A, B, dt, "zoh")
    torch.testing.assert_close(log_dA, dt[:, None] * A, rtol=0, atol=0)
    torch.testing.assert_close(coef, 2.0 * C * dB, rtol=1e-14, atol=1e-14)
    assert torch.autograd.gradcheck(lambda *a: zoh_kernel_factors(*a, 2.0), (dt, A, B, C))
    # gradients of a real loss equal those of autograd through discretize_diagonal
    gl, gc = torch.randn_like(log_dA), torch.randn_like(coef)

    def loss(x, y):
        return (x * gl).real.sum() + (y * gc).real.sum() + y.abs().square().sum()

    ref = torch.autograd.grad(loss(dt[:, None] * A, 2.0 * C * dB), (dt, A, B, C))
    new = torch.autograd.grad(loss(log_dA, coef), (dt, A, B, C))
    tol = 1e-8 if zero_modes else 1e-10      # at |x| ~ 1e-9 the generic route's series drops phi'(x)'s x/3
    for r, n in zip(ref, new):
        torch.testing.assert_close(n, r, rtol=tol, atol=1e-12)


def test_zoh_kernel_factors_refuse_mismatched_shapes():
    from statespaces.discretize import zoh_kernel_factors

    dt, A, B, C = _zoh_inputs()
    with pytest.raises(ValueError, match="C \\(K, H, M\\)"):
        zoh_kernel_factors(dt, A, B, C[..., :2])


@pytest.mark.parametrize("kw", [{}, {"bidirectional": True}, {"n_ssm": 2}, {"trainable_B": False},
                                {"init": "real", "d_state": 7}], ids=["default", "bidir", "tied", "frozenB", "real"])
def test_s4d_fused_kernel_factors_equal_the_generic_route(kw):
    """S4D under ZOH takes the fused node; outputs and every parameter gradient equal the generic route
    through ``diagonal_system`` (float64)."""
    from statespaces import S4D
    from statespaces.layers.base import DiagonalSSM

    kw = dict(kw)
    layer = S4D(4, kw.pop("d_state", 8), seed=1, **kw).double()
    x = torch.randn(2, 50, 4, dtype=torch.float64)
    params = [p for p in layer.parameters() if p.requires_grad]
    coef, log_dA = layer._kernel_factors(1.5)
    coef_ref, log_ref = DiagonalSSM._kernel_factors(layer, 1.5)
    torch.testing.assert_close(coef, coef_ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(log_dA, log_ref, rtol=0, atol=0)
    y = layer(x)
    g = torch.autograd.grad(y.square().sum(), params)
    from statespaces.kernels.vandermonde import vandermonde
    from statespaces.ops.fftconv import fftconv as conv

    coef_ref, log_ref = DiagonalSSM._kernel_factors(layer, 1.0)
    k = vandermonde(coef_ref, log_ref, 50)
    y_ref = conv(x, layer._with_skip(k if layer.bidirectional else k[0]), layer.bidirectional)
    g_ref = torch.autograd.grad(y_ref.square().sum(), params)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
