"""Checks for the survivors of a fourth mutation audit (HiPPO forms, measures, bases and polynomials, the LSI step,
the reference recurrence, the oscillator normal form), each against an independent route, and the Jacobi weight's
values at the ends of [0, 1] that the audit found wrong (lag 0 of the jacobi/chebyshev measures)."""
import math

import pytest
import torch
from scipy.special import roots_genlaguerre

from statespaces.hippo import HiPPO
from statespaces.hippo.basis import basis, weight
from statespaces.hippo.forms import dplr, nplr
from statespaces.hippo.legs_fast import legs_gbt_coefficients
from statespaces.hippo.measures import transition
from statespaces.hippo.polys import jacobi_01_weight
from statespaces.kernels.oscillator import normal_form
from statespaces.kernels.reference import direct_causal_conv, power_kernel, recurrence

F64 = torch.float64


# ---- the Jacobi weight at the ends (bug: 0 at y = 0 and y = 1 whatever alpha, beta) ---------------------------
def test_jacobi_weight_takes_its_limits_at_the_ends():
    y = torch.tensor([0.0, 1.0], dtype=F64)
    B = lambda a, b: math.gamma(a + 1) * math.gamma(b + 1) / math.gamma(a + b + 2)   # noqa: E731
    assert jacobi_01_weight(y, 0.0, 0.0).tolist() == [1.0, 1.0]                  # uniform: 1 everywhere on [0, 1]
    assert jacobi_01_weight(y, 0.0, 0.5).tolist() == pytest.approx([0.0, 1 / B(0.0, 0.5)], rel=1e-14)
    assert jacobi_01_weight(y, 0.5, 0.0).tolist() == pytest.approx([1 / B(0.5, 0.0), 0.0], rel=1e-14)
    assert jacobi_01_weight(y, -0.5, -0.5).tolist() == [math.inf, math.inf]      # Chebyshev's density diverges
    assert jacobi_01_weight(torch.tensor([-0.1, 1.1], dtype=F64), -0.5, -0.5).tolist() == [0.0, 0.0]


def test_jacobi_zero_zero_is_legs_at_every_lag_including_zero():
    """jacobi(alpha = beta = 0) is documented to reproduce LegS: its measure and reconstruction basis, lag 0 included
    (before: the measure was inf and the basis 0 there)."""
    t = torch.tensor([0.0, 0.3, 1.0, 4.0], dtype=F64)
    torch.testing.assert_close(weight("jacobi", t, alpha=0.0, beta=0.0), weight("legs", t), rtol=1e-12, atol=0)
    torch.testing.assert_close(basis("jacobi", 5, t, kind="reconstruction", alpha=0.0, beta=0.0),
                               basis("legs", 5, t, kind="reconstruction"), rtol=1e-12, atol=1e-14)
    assert weight("jacobi", 0.0, alpha=0.0, beta=0.5).item() == pytest.approx(1 / 1.5, rel=1e-14)
    assert weight("chebyshev", 0.0).item() == 0.0                                # s / w(s) with w -> inf


# ---- LagT's measure: the reconstruction basis is orthogonal under it ----------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.5])
def test_lagt_reconstruction_basis_is_orthogonal_under_its_weight(alpha):
    """int q_n q_m omega dtau = delta_nm / h_n with q_n = L_n^(a) y^a / h_n and omega = y^-a e^-y, by generalized
    Gauss-Laguerre quadrature (exact for the polynomial part): a wrong power of y in ``weight`` breaks it."""
    N, M = 6, 40
    y, w = roots_genlaguerre(M, alpha)                     # int f(y) y^a e^-y dy = sum_k w_k f(y_k)
    y, w = torch.as_tensor(y, dtype=F64), torch.as_tensor(w, dtype=F64)
    q = basis("lagt", N, y, kind="reconstruction", alpha=alpha)                  # (N, M)
    dens = weight("lagt", y, alpha=alpha) / (y ** alpha * torch.exp(-y))        # omega over the quadrature weight
    gram = (q * (w * dens)) @ q.T
    n = torch.arange(N, dtype=F64)
    h = torch.exp(torch.lgamma(n + alpha + 1) - torch.lgamma(n + 1))
    torch.testing.assert_close(gram, torch.diag(1 / h), rtol=1e-10, atol=1e-10)


# ---- the LSI (LegS) step with the thesis' input gain ----------------------------------------------------------
def test_thesis_input_gain_coefficients():
    a, b, g = legs_gbt_coefficients(2.0, 3.0, 0.5, "thesis")      # App. A.1.5: g = delta / t
    assert (a, b, g) == pytest.approx((0.25, 1 / 6, 0.5), rel=1e-14)
    a, b, g = legs_gbt_coefficients(2.0, 3.0, 0.5, "gbt")
    assert g == pytest.approx(0.25 + 1 / 6, rel=1e-14)
    with pytest.raises(ValueError, match="unknown input_gain"):
        legs_gbt_coefficients(1.0, 2.0, 0.5, "bogus")


@pytest.mark.parametrize("fast", [True, False])
def test_hippo_thesis_gain_equals_a_dense_loop(fast):
    """HiPPO-LegS in LSI mode with input_gain="thesis" against the GBT step written out here, densely:
    (I - alpha delta/t' A) x' = (I + (1 - alpha) delta/t A) x + (delta/t) B u, t_k = k + 1, x_0 = u_0 e_0."""
    N, L = 12, 30
    u = torch.randn(2, L, generator=torch.Generator().manual_seed(0), dtype=F64)
    got = HiPPO(N, "legs", input_gain="thesis", fast=fast)(u)
    A, B = transition("legs", N)
    eye = torch.eye(N, dtype=F64)
    x = torch.zeros(2, N, dtype=F64)
    x[:, 0] = u[:, 0]
    want = [x]
    for k in range(1, L):
        t, t_next = float(k), float(k + 1)
        rhs = x @ (eye + 0.5 * (t_next - t) / t * A).T + ((t_next - t) / t) * u[:, k, None] * B
        x = torch.linalg.solve(eye - 0.5 * (t_next - t) / t_next * A, rhs.T).T
        want.append(x)
    torch.testing.assert_close(got, torch.stack(want, 1), rtol=1e-10, atol=1e-12)


# ---- measure parameters: bad values are refused with the documented errors -------------------------------------
def test_measure_parameters_are_checked():
    with pytest.raises(TypeError, match="alpha"):
        transition("lagt", 3, alpha=True)            # a bool is no exponent (it acted as alpha = 1)
    with pytest.raises(ValueError, match="beta > -1"):
        transition("jacobi", 3, beta=-1.5)           # without the check: a LinAlgError from deep inside


# ---- the NPLR/DPLR forms list their modes by decreasing frequency ---------------------------------------------
@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
def test_nplr_and_dplr_modes_sorted_by_decreasing_imaginary_part(measure):
    Lam = nplr(measure, 8)[0]
    assert bool((Lam.imag[:-1] >= Lam.imag[1:]).all()) and Lam.imag[0] > Lam.imag[-1]
    Lh = dplr(measure, 8)[0]
    assert bool((Lh.imag[:-1] >= Lh.imag[1:]).all())


# ---- the reference recurrence with a dense, non-symmetric transition -----------------------------------------
def test_reference_recurrence_with_a_dense_nonsymmetric_transition():
    """Every fast path is tested against ``recurrence``; here it meets a second reference, the convolution with
    the kernel of explicit powers (eq. 2.8), on a dense non-symmetric dA (a diagonal one hides a transpose)."""
    g = torch.Generator().manual_seed(1)
    H, N, L = 2, 4, 12
    dA = 0.4 * torch.randn(H, N, N, generator=g, dtype=F64)
    assert (dA - dA.transpose(-1, -2)).abs().max() > 0.1
    dB, C = torch.randn(H, N, generator=g, dtype=F64), torch.randn(H, N, generator=g, dtype=F64)
    D = torch.randn(H, generator=g, dtype=F64)
    u = torch.randn(3, L, H, generator=g, dtype=F64)
    y, _ = recurrence(dA, dB, C, u, D)
    torch.testing.assert_close(y, direct_causal_conv(u, power_kernel(dA, dB, C, L)) + D * u, rtol=1e-12, atol=1e-12)


# ---- the oscillator normal form decides by a relative test -----------------------------------------------------
@pytest.mark.parametrize("radius", [0.9, 1e-2, 1e-4])
def test_normal_form_of_a_small_block(radius):
    """A block with eigenvalues r e^{+-0.1 i} in a non-normal basis: whatever r, it is brought to the normal form
    [[a, -b], [b, a]] (the threshold is on beta^2 / det M; an absolute one left small blocks as they were)."""
    theta = 0.1
    R = radius * torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=F64)
    S = torch.tensor([[2.0, 0.7], [0.0, 1.0]], dtype=F64)
    M = S @ R @ torch.linalg.inv(S)
    f = torch.tensor([0.3, -1.2], dtype=F64)
    Mn, fn, T = normal_form(M[..., None], f[:, None])
    Mn, fn, T = Mn[..., 0], fn[:, 0], T[:, 0]
    scale = radius
    assert abs(Mn[0, 0] - Mn[1, 1]) < 1e-14 * scale and abs(Mn[0, 1] + Mn[1, 0]) < 1e-14 * scale
    torch.testing.assert_close(torch.linalg.eigvals(Mn), torch.linalg.eigvals(M), rtol=1e-12, atol=1e-15 * scale)
    assert not torch.equal(T, torch.tensor([1.0, 0.0], dtype=F64))
    Tm = torch.tensor([[T[0], T[1]], [0.0, 1.0]], dtype=F64)       # x = Tm x'
    torch.testing.assert_close(Tm @ Mn @ torch.linalg.inv(Tm), M, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(Tm @ fn, f, rtol=1e-12, atol=1e-15)
