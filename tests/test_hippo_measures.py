"""HiPPO transition matrices and closed-form bases (thesis ch. 4-5, app. D-E)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from statespaces.hippo import MEASURES, basis, conjugate, scale, shift, transition, weight

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny sequential ops (conftest.py)


def kernel(A, B, ts):
    return torch.stack([torch.linalg.matrix_exp(float(t) * A) @ B for t in ts], dim=1)


# --------------------------------------------------------------- exact kernels
@pytest.mark.parametrize("N", [1, 2, 5, 16, 64])
def test_legs_lti_kernel_is_shifted_legendre(N):
    """Cor 5.10: e^{tA}B = sqrt(2n+1) P_n(2e^{-t}-1) e^{-t}, exactly for finite N."""
    A, B = transition("legs", N)
    ts = [0.0, 0.1, 0.5, 1.0, 2.0, 4.0]
    K = kernel(A, B, ts)
    n = np.arange(N)
    for j, t in enumerate(ts):
        ref = np.sqrt(2 * n + 1) * special.eval_legendre(n, 2 * np.exp(-t) - 1) * np.exp(-t)
        np.testing.assert_allclose(K[:, j].numpy(), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("N", [1, 4, 33])
def test_legs_eigenvalues_are_minus_one_to_minus_N(N):
    A, B = transition("legs", N)
    assert A.dtype == F64 and A.shape == (N, N) and B.shape == (N,)
    assert torch.equal(torch.diagonal(A), -torch.arange(1, N + 1, dtype=F64))
    assert torch.equal(A, torch.tril(A))  # triangular => spectrum = diagonal
    ev = torch.linalg.eigvals(A)
    np.testing.assert_allclose(np.sort(ev.real.numpy()), -np.arange(N, 0, -1.0), atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.7, 2.0])
def test_lagt_kernel_is_laguerre(alpha):
    """Derived here (not in the thesis): e^{tA}B = L_n^(alpha)(t) e^{-t} with A = -tril(1)."""
    N = 12
    A, B = transition("lagt", N, alpha=alpha)
    ts = [0.0, 0.3, 1.0, 3.0]
    K = kernel(A, B, ts)
    n = np.arange(N)
    for j, t in enumerate(ts):
        ref = special.eval_genlaguerre(n, alpha, t) * np.exp(-t)
        np.testing.assert_allclose(K[:, j].numpy(), ref, rtol=1e-10, atol=1e-10)
    if alpha == 0.0:
        assert torch.equal(A, -torch.tril(torch.ones(N, N, dtype=F64))) and torch.equal(B, torch.ones(N, dtype=F64))


def _jacobi_orthonormal_scipy(n, a, b, y):
    """Independent route: scipy Jacobi polynomial on [0,1] normalized by quadrature."""
    w = lambda s: (1 - s) ** a * s**b
    mass = integrate.quad(w, 0, 1)[0]
    p = lambda s: special.eval_jacobi(n, a, b, 2 * s - 1)
    norm = integrate.quad(lambda s: p(s) ** 2 * w(s) / mass, 0, 1, limit=200)[0]
    sign = np.sign(special.eval_jacobi(n, a, b, 1.0))  # leading coefficient > 0 <=> p_n(1) > 0 here
    return sign * p(y) / np.sqrt(norm)


@pytest.mark.parametrize("measure,params", [("jacobi", dict(alpha=1.5, beta=0.3)), ("chebyshev", {}),
                                            ("jacobi", dict(alpha=-0.3, beta=2.0))])
def test_generalized_op_kernel(measure, params):
    """Cor E.8: SSM (-(alpha_nk + I), p_n(1)) has kernel p_n(e^{-t}) e^{-t}; alpha via E.14."""
    N = 7
    A, B = transition(measure, N, **params)
    a, b = (-0.5, -0.5) if measure == "chebyshev" else (params["alpha"], params["beta"])
    ts = [0.0, 0.2, 1.0, 2.5]
    K = kernel(A, B, ts)
    for n in range(N):
        for j, t in enumerate(ts):
            ref = _jacobi_orthonormal_scipy(n, a, b, math.exp(-t)) * math.exp(-t)
            assert abs(K[n, j].item() - ref) < 1e-8
    assert torch.allclose(basis(measure, N, torch.tensor(ts), **params), K, atol=1e-10)


def test_jacobi_00_is_legs():
    A, B = transition("jacobi", 24, alpha=0.0, beta=0.0)
    A0, B0 = transition("legs", 24)
    assert torch.allclose(A, A0, atol=1e-10) and torch.allclose(B, B0, atol=1e-12)


# ------------------------------------------------------------------- LegT / LMU
def _transfer(A, B, C, s):
    N = A.shape[0]
    M = s * torch.eye(N, dtype=torch.complex128) - A.to(torch.complex128)
    return (C.to(torch.complex128) @ torch.linalg.solve(M, B.to(torch.complex128))).item()


@pytest.mark.parametrize("s", [0.3, 1.0, 2.0 + 1.0j, -0.5 + 3.0j])
def test_legt_transfer_function_is_pade(s):
    """Thm 5.14 / App. E.4.4: with C_n = sqrt(2n+1)(-1)^n, D = 0 the transfer function is
    the [N-1/N] Pade approximant of e^{-s}: N=1: 1/(1+s), N=2: (1-s/3)/(1+2s/3+s^2/6)."""
    for N, ref in [(1, 1 / (1 + s)), (2, (1 - s / 3) / (1 + 2 * s / 3 + s**2 / 6))]:
        A, B = transition("legt", N)
        n = torch.arange(N, dtype=F64)
        C = torch.sqrt(2 * n + 1) * (-1.0) ** n
        assert abs(_transfer(A, B, C, s) - ref) < 1e-12


def test_legt_sign_is_stable_and_diagonal():
    """App. D.2.1 sign (eq. 4.1 prints a double minus): diag = -(2n+1), spectrum in LHP."""
    A, _ = transition("legt", 20, theta=2.0)
    assert torch.allclose(torch.diagonal(A), -(2 * torch.arange(20, dtype=F64) + 1) / 2)
    assert torch.linalg.eigvals(A).real.max() < 0


def test_legt_state_equals_window_projection():
    """Independent route: integrate x' = Ax + Bu with an ODE solver and compare with the
    quadrature projection x_n(T) = int_0^1 u(T - tau) L_n(1 - tau) dtau (Prop 5.6)."""
    N, T = 24, 2.0
    A, B = transition("legt", N)
    An, Bn = A.numpy(), B.numpy()
    u = lambda t: np.sin(3 * t) + np.cos(t) if t >= 0 else 0.0
    sol = integrate.solve_ivp(lambda t, x: An @ x + Bn * u(t), (0.0, T), np.zeros(N),
                              method="DOP853", rtol=1e-11, atol=1e-12)
    xT = sol.y[:, -1]
    for n in range(6):
        ref = integrate.quad(lambda tau: u(T - tau) * math.sqrt(2 * n + 1) *
                             special.eval_legendre(n, 2 * (1 - tau) - 1), 0.0, 1.0)[0]
        assert abs(xT[n] - ref) < 1e-5  # finite-N LegT reconstructs u(t - theta): ~1e-6 here
    # the LMU is the same memory with coefficients scaled by lambda_n = sqrt(2n+1)(-1)^n
    A2, B2 = transition("lmu", N)
    x2 = integrate.solve_ivp(lambda t, x: A2.numpy() @ x + B2.numpy() * u(t), (0.0, T), np.zeros(N),
                             method="DOP853", rtol=1e-11, atol=1e-12).y[:, -1]
    lam = np.sqrt(2 * np.arange(N) + 1) * (-1.0) ** np.arange(N)
    np.testing.assert_allclose(x2, lam * xT, rtol=1e-6, atol=1e-5)


# ------------------------------------------------------------------------ FouT
def test_fout_built_from_frequencies():
    A, B = transition("fout", 9)
    for m in range(1, 5):
        assert A[2 * m - 1, 2 * m].item() == pytest.approx(2 * math.pi * m)
        assert A[2 * m, 2 * m - 1].item() == pytest.approx(-2 * math.pi * m)
    assert A[0, 0].item() == -2 and A[0, 1].item() == pytest.approx(-2 * math.sqrt(2))
    assert A[1, 3].item() == pytest.approx(-4)
    np.testing.assert_allclose(B.numpy(), [2.0] + [2 * math.sqrt(2), 0.0] * 4)


def test_fout_kernel_approaches_fourier_basis():
    """Thm 5.11: K_0 -> 1[0,1] and K_n -> p_n(1-t) 1[0,1] as N grows."""
    N = 257
    A, B = transition("fout", N)
    ts = 0.02 * torch.arange(1, 81, dtype=F64)
    step = torch.linalg.matrix_exp(0.02 * A)
    cols, x = [], B
    for _ in ts:
        x = step @ x
        cols.append(x)
    K = torch.stack(cols, dim=1)
    inside = (ts > 0.05) & (ts < 0.95)
    outside = ts > 1.05
    assert (K[0][inside] - 1).abs().max() < 0.1
    assert K[0][outside].abs().max() < 0.1
    ref = basis("fout", 5, ts)
    assert (K[1:5, inside] - ref[1:5, inside]).abs().max() < 0.1


def test_fout_delay_kernel():
    """Cor 5.17: FouT with C_n = 2 p_n(1), D = 1, discretized at dt = 1/100 has its
    discrete kernel peaked at lag 1/dt = 100."""
    from statespaces.hippo import discretize

    N, dt, L = 129, 0.01, 160
    A, B = transition("fout", N)
    Ab, Bb = discretize(A, B, dt, "zoh")
    # p_n(1) = (1, sqrt2, 0, sqrt2, 0, ...); the lag-0 reconstruction value q_n(0) = p_n(1)
    C = 2 * basis("fout", N, torch.tensor([0.0]), kind="reconstruction")[:, 0]
    x = Bb.clone()
    K = []
    for _ in range(L):
        K.append((C @ x).item())
        x = Ab @ x
    K = torch.tensor(K)
    K[0] += 1.0  # D = 1 (the skip term only enters the k=0 tap)
    assert abs(int(K[20:].abs().argmax()) + 20 - 100) <= 1


# -------------------------------------------------- orthogonality by quadrature
@pytest.mark.parametrize("measure,params,upper", [
    ("legs", {}, 40.0), ("legt", {}, 1.0), ("lmu", {}, 1.0), ("fout", {}, 1.0),
    ("lagt", {}, 60.0), ("lagt", {"alpha": 1.5}, 80.0), ("chebyshev", {}, 40.0),
    ("jacobi", {"alpha": 1.0, "beta": 0.5}, 40.0)])
def test_kernel_and_reconstruction_are_biorthogonal(measure, params, upper):
    """int K_n(t) q_m(t) dt = delta_nm (Def 5.1 / Prop 5.3), scipy quadrature; and for
    untilted measures K_n = q_n * omega."""
    N, theta = 5, 1.7
    upper = upper * theta

    def f(v):  # substitution t = v^2 removes the t^{-1/2} endpoint singularity (Chebyshev)
        tt = torch.tensor([v * v], dtype=F64)
        K = basis(measure, N, tt, theta=theta, **params)[:, 0]
        Q = basis(measure, N, tt, theta=theta, kind="reconstruction", **params)[:, 0]
        return (torch.outer(K, Q) * 2 * v).numpy()

    G = integrate.quad_vec(f, 0.0, math.sqrt(upper), points=[math.sqrt(theta)], epsabs=1e-10)[0]
    np.testing.assert_allclose(G, np.eye(N), atol=2e-6)
    ts = torch.linspace(0.01, upper * 0.5, 50, dtype=F64)
    K = basis(measure, N, ts, theta=theta, **params)
    Q = basis(measure, N, ts, theta=theta, kind="reconstruction", **params)
    w = weight(measure, ts, theta=theta, **params)
    if not (measure == "lagt" and params) and measure not in ("lmu",):
        assert torch.allclose(K, Q * w, atol=1e-10)


def test_kernel_formula_matches_matrix_exponential_with_theta():
    for measure, params in [("legs", {}), ("lagt", {"alpha": 0.5}), ("chebyshev", {})]:
        A, B = transition(measure, 10, theta=3.0, **params)
        ts = torch.tensor([0.0, 0.7, 2.0, 6.0], dtype=F64)
        assert torch.allclose(kernel(A, B, ts), basis(measure, 10, ts, theta=3.0, **params), atol=1e-10)


# -------------------------------------------------------------- closure (§5.4)
def test_closure_properties():
    A, B = transition("legs", 12)
    ts = [0.3, 1.1, 2.5]
    c = 2.5
    # scalar scaling: e^{t cA} cB = c e^{(ct) A} B
    A2, B2 = scale(A, B, c)
    assert torch.allclose(kernel(A2, B2, ts), c * kernel(A, B, [c * t for t in ts]), atol=1e-10)
    # theta is the inverse scaling: transition(theta) == scale(transition, 1/theta)
    for m in MEASURES:
        At, Bt = transition(m, 7, theta=4.0)
        As, Bs = scale(*transition(m, 7), 0.25)
        assert torch.allclose(At, As) and torch.allclose(Bt, Bs)
    # identity shift: e^{t(A + cI)} B = e^{ct} e^{tA} B
    A3, B3 = shift(A, B, -0.7)
    assert torch.allclose(kernel(A3, B3, ts), kernel(A, B, ts) * torch.exp(-0.7 * torch.tensor(ts, dtype=F64)),
                          atol=1e-10)
    # unitary change of basis: e^{t VAV*} VB = V e^{tA} B
    Q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=F64, generator=torch.Generator().manual_seed(0)))
    A4, B4 = conjugate(A, B, Q)
    assert torch.allclose(kernel(A4, B4, ts), Q @ kernel(A, B, ts), atol=1e-10)
    with pytest.raises(ValueError, match="unitary"):
        conjugate(A, B, 2 * Q)


def test_timescale_of_measures():
    """Def 5.19: E[omega] = 1 for LegS, 1/2 for LegT/FouT (theta = 2 normalizes it to 1)."""
    def mean(measure, theta=1.0, upper=60.0):
        w = lambda t: weight(measure, torch.tensor([t]), theta=theta)[0].item()
        num = integrate.quad(lambda t: t * w(t), 0, upper, points=[theta], limit=200)[0]
        return num / integrate.quad(w, 0, upper, points=[theta], limit=200)[0]
    assert mean("legs") == pytest.approx(1.0, abs=1e-6)
    assert mean("legt") == pytest.approx(0.5, abs=1e-6)
    assert mean("fout", theta=2.0) == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- bad inputs
def test_bad_arguments():
    with pytest.raises(ValueError, match="N must be an integer >= 1"):
        transition("legs", 0)
    with pytest.raises(ValueError):
        transition("legs", -3)
    with pytest.raises(TypeError):
        transition("legs", 2.5)
    with pytest.raises(TypeError):
        transition("legs", True)
    with pytest.raises(ValueError) as exc:
        transition("legx", 4)
    for name in MEASURES:
        assert name in str(exc.value)
    with pytest.raises(TypeError, match="valid options"):
        transition(3, 4)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="theta"):
            transition("legt", 4, theta=bad)
    with pytest.raises(TypeError, match="accepted"):
        transition("legs", 4, alpha=1.0)
    with pytest.raises(ValueError, match="alpha > -1"):
        transition("lagt", 4, alpha=-1.0)
    with pytest.raises(ValueError, match="kernel, reconstruction"):
        basis("legs", 3, torch.zeros(2), kind="measure")
    assert transition("LegS", 3)[0].shape == (3, 3)  # case-insensitive


def test_measure_parameters_accept_any_real_scalar():
    """R7: ``alpha=np.float32(0.5)`` failed with "must be a finite real, got np.float32(0.5)", a 0-d tensor too.
    Any real scalar is now read as a float; bools, complex values, NaN/inf and non-scalar tensors are refused."""
    ref = transition("lagt", 5, alpha=0.5)
    for alpha in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5), torch.tensor(0.5, dtype=F64)):
        A, B = transition("lagt", 5, alpha=alpha)
        assert torch.equal(A, ref[0]) and torch.equal(B, ref[1]), alpha
    assert torch.equal(transition("lagt", 5, alpha=np.int64(1))[1], transition("lagt", 5, alpha=1.0)[1])
    assert torch.equal(transition("legt", 5, theta=torch.tensor(2.0))[0], transition("legt", 5, theta=2.0)[0])
    for bad in (True, np.bool_(True), torch.tensor(True), 0.5 + 0j, torch.tensor(0.5 + 0j), torch.tensor([0.5]), "0.5"):
        with pytest.raises(TypeError, match="parameter alpha of measure 'lagt' must be a finite real number"):
            transition("lagt", 5, alpha=bad)
    for bad in (float("nan"), float("inf"), np.float32("nan"), torch.tensor(float("inf"))):
        with pytest.raises(ValueError, match="parameter alpha of measure 'lagt' must be a finite real number"):
            transition("lagt", 5, alpha=bad)
