"""Mutation audit of the S4 algorithm (round 11c): ``kernels/dplr.py`` (DPLR kernel by Cauchy sums and
Woodbury, state maps, recurrent step), ``kernels/cauchy.py`` (chunked Cauchy product and its hand-written backward)
and ``discretize.py`` (thesis app. A.1.4 rules, dense/diagonal ZOH factors).

80 mutants (45 dplr, 13 cauchy, 22 discretize): 65 killed, 3 not observable (D26, a risky-node index off by one
that still refines one of the two nearest nodes; C12, the Cauchy product's node blocks of unequal size, speed only;
Z05, ``_exp_phi`` without float64 widening: no difference measured, ``expm1`` being accurate in float32 too), 12
test gaps, pinned here (the first run overlapped two mutation runners from D30 on; D30-D45 and the unrun mutants
were rerun by one runner).
The survivors: the Cauchy backward with only w requiring grad (its gradient skipped unless z needs one), the
``"ref"`` backend dropping ``conj``, ``phi'`` near its series threshold and ``g_A`` gated on dt's flag in
``_ZOHFactors``, ``discretize_dense`` not promoting a complex B on a real A, the refusals of a misshapen dt and C,
of an unknown Cauchy backend name, of a singular system by S4's solves and of a B with another state size (whose
message named B's row count as A's size: fixed), the sign of ``alpha x`` in the GBT rules' ``log dA``, and the
scale of the ZOH factors on the ``"ref"`` route. The ``phi`` series tests also pin mutants the existing tests
already kill (series threshold, its ``x/2`` term, NaN gradients at ``A = 0`` on the ref backend).

Every check here is against an independent route written in the test: a plain Cauchy sum under autograd, a Taylor
series of ``phi(x) = (e^x - 1)/x``, ``numpy.linalg.solve`` of the GBT system, or an expected refusal.
"""
import math

import numpy as np
import pytest
import torch

from statespaces import backend
from statespaces.discretize import discretize_dense, discretize_diagonal, zoh_kernel_factors
from statespaces.kernels.cauchy import cauchy
from statespaces.kernels.dplr import dplr_kernel

C128, F64 = torch.complex128, torch.float64


def _cauchy_inputs(seed=0, K=7, N=5):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(3, N, dtype=C128, generator=g)
    z = torch.complex(torch.zeros(3, K, dtype=F64), torch.randn(3, K, dtype=F64, generator=g) * 3)
    w = torch.complex(-torch.rand(3, N, dtype=F64, generator=g) - 0.2, torch.randn(3, N, dtype=F64, generator=g))
    return v, z, w


def _cauchy_sum(v, z, w):
    """``sum_n v_n / (z_k - w_n)`` plus the mirrored poles, written out (the definition, thesis Def. C.5)."""
    a = (v[..., None, :] / (z[..., :, None] - w[..., None, :])).sum(-1)
    b = (v.conj()[..., None, :] / (z[..., :, None] - w.conj()[..., None, :])).sum(-1)
    return a, a + b


@pytest.mark.parametrize("which", [1, 2])
def test_cauchy_gradient_of_one_input_alone(which):
    """The chunked Cauchy backward with only z, or only w, requiring grad: its needs_input_grad branches must give
    the gradient of the plain sum (autograd through the definition), not zero or the other input's gradient."""
    v, z, w = _cauchy_inputs()
    args = [v, z, w]
    args[which] = args[which].clone().requires_grad_()
    gout = torch.randn(3, 7, dtype=C128, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad((cauchy(*args, chunk_elems=4) * gout.conj()).real.sum(), args[which])[0]
    want = torch.autograd.grad((_cauchy_sum(*args)[0] * gout.conj()).real.sum(), args[which])[0]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_cauchy_ref_backend_keeps_the_conjugate_poles():
    """Under backend ``"ref"``, ``cauchy(..., conj=True)`` still adds the mirrored poles ``conj(v)/(z - conj(w))``."""
    v, z, w = _cauchy_inputs(1)
    with backend.use_backend("ref"):
        got = cauchy(v, z, w, conj=True)
    torch.testing.assert_close(got, _cauchy_sum(v, z, w)[1], rtol=1e-12, atol=1e-12)


def _phi_series(x, terms=25):
    """``phi(x) = sum_k x^k / (k + 1)!`` (Horner), the ZOH input factor without cancellation."""
    out = torch.full_like(x, 1.0 / math.factorial(terms + 1))
    for k in range(terms - 1, -1, -1):
        out = out * x + 1.0 / math.factorial(k + 1)
    return out


def test_diagonal_zoh_input_factor_near_zero_in_float64():
    """discretize_diagonal ZOH: ``dB = phi(dt A) dt B`` to ~1e-15 relative for |dt A| from 1e-10 to 1e-2, where the
    series branch (|x| < 1e-8) and the expm1 branch meet: pins the threshold and the series' x/2 term."""
    A = torch.tensor([-1e-10, -5e-9 + 3e-9j, 2e-9j, -5e-4, 3e-4 - 4e-4j, -1e-2 + 1e-2j], dtype=C128)
    dt = torch.tensor(1.0, dtype=F64)
    dA, dB = discretize_diagonal(A, torch.ones_like(A), dt, "zoh")
    torch.testing.assert_close(dB, _phi_series(A), rtol=1e-15, atol=0)
    torch.testing.assert_close(dA, torch.exp(A), rtol=1e-15, atol=0)


def test_dense_discretization_promotes_a_complex_B_on_a_real_A():
    """discretize_dense with real A and complex B: dB is complex and equals ``solve(I - dt A/2, dt B)`` (numpy), the
    imaginary part of B kept."""
    g = torch.Generator().manual_seed(2)
    A = torch.randn(4, 4, dtype=F64, generator=g) - 2 * torch.eye(4, dtype=F64)
    B = torch.randn(4, dtype=C128, generator=g)
    _, dB = discretize_dense(A, B, 0.1, "bilinear")
    I = np.eye(4)
    want = np.linalg.solve(I - 0.05 * A.numpy(), 0.1 * B.numpy())
    assert dB.is_complex()
    np.testing.assert_allclose(dB.numpy(), want, rtol=1e-12, atol=1e-14)


def _zoh_ref(dt, A, B, C, scale):
    x = dt[:, None] * A
    return x, scale * C * (_phi_series(x) * dt[:, None] * B)


def test_zoh_kernel_factors_gradient_of_A_alone_and_near_zero():
    """zoh_kernel_factors' hand-written backward with only A requiring grad (dt, B, C fixed), at |dt A| from 2e-7 to
    1e-2 (both sides of its phi' series threshold 1e-4): equal to autograd through the Taylor series of phi."""
    dt = torch.tensor([1.0, 0.5], dtype=F64)
    A = torch.tensor([[-2e-7 + 1e-7j, -3e-6j, -5e-5 + 2e-5j], [-4e-4, -1e-3 + 2e-3j, -2e-2 + 1e-2j]], dtype=C128)
    A.requires_grad_()
    g = torch.Generator().manual_seed(4)
    B = torch.randn(2, 3, dtype=C128, generator=g)
    C = torch.randn(2, 2, 3, dtype=C128, generator=g)
    gl, gc = torch.randn(2, 3, dtype=C128, generator=g), torch.randn(2, 2, 3, dtype=C128, generator=g)

    def loss(x, y):
        return (x * gl).real.sum() + (y * gc).real.sum()

    got = torch.autograd.grad(loss(*zoh_kernel_factors(dt, A, B, C, 2.0)), A)[0]
    want = torch.autograd.grad(loss(*_zoh_ref(dt, A, B, C, 2.0)), A)[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_zoh_factors_gradients_are_finite_at_a_zero_eigenvalue_on_the_ref_backend():
    """Under backend ``"ref"`` (plain autograd through ``_exp_phi``), a mode with ``A = 0`` has the finite gradient
    of the series (no NaN from the unused ``expm1(x)/x`` branch)."""
    dt = torch.tensor([0.5], dtype=F64)
    A = torch.tensor([[0.0, -0.3 + 1j]], dtype=C128, requires_grad=True)
    B = torch.tensor([[1.0 + 0.5j, 0.2 - 1j]], dtype=C128)
    C = torch.tensor([[[0.3 - 0.2j, 1.0 + 0.1j]]], dtype=C128)
    with backend.use_backend("ref"):
        got = torch.autograd.grad(zoh_kernel_factors(dt, A, B, C, 2.0)[1].real.sum(), A)[0]
    want = torch.autograd.grad(_zoh_ref(dt, A, B, C, 2.0)[1].real.sum(), A)[0]
    assert bool(torch.isfinite(torch.view_as_real(got)).all())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)


def test_discretize_refuses_misshapen_dt_and_C():
    """discretize_diagonal refuses a dt that does not broadcast to A.shape[:-1] (one step per system), and
    zoh_kernel_factors a C without its direction axis, each with a ValueError naming the shapes."""
    A = torch.full((3, 4), -1.0 + 0j, dtype=C128)
    with pytest.raises(ValueError, match="dt must be"):
        discretize_diagonal(A, torch.ones_like(A), torch.ones(4, dtype=F64), "zoh")
    with pytest.raises(ValueError, match="C \\(K, H, M\\)"):
        zoh_kernel_factors(torch.ones(3, dtype=F64), A, torch.ones_like(A), torch.ones_like(A))


def test_dplr_kernel_refuses_an_unknown_cauchy_backend():
    """dplr_kernel with ``backend="bogus"``: a ValueError listing the valid Cauchy backends, not a KeyError."""
    Lam = torch.tensor([[-0.5 + 1j, -0.2 + 3j]], dtype=C128)
    P = torch.full((1, 1, 2), 0.1 + 0j, dtype=C128)
    with pytest.raises(ValueError, match="unknown Cauchy backend 'bogus'; valid: chunked, naive"):
        dplr_kernel(Lam, P, Lam.conj(), Lam[None], torch.tensor([0.1], dtype=F64), 8, backend="bogus")


def test_dplr_solve_refuses_a_singular_system():
    """S4's linear solves refuse a singular system (LAPACK's info > 0) with a ValueError naming the caller, instead
    of returning the garbage of a failed factorization (round 11c, the rerun: D43 only refused info < 0)."""
    from statespaces.kernels.dplr import _solve

    A = torch.zeros(2, 3, 3, dtype=torch.float64)
    A[0] = torch.eye(3, dtype=torch.float64)                # one invertible, one singular system
    with pytest.raises(ValueError, match="probe: 1 singular"):
        _solve(A, torch.ones(2, 3, 1, dtype=torch.float64), "probe")


@pytest.mark.parametrize("method,alpha", [("bilinear", 0.5), ("backward_euler", 1.0), ("gbt", 0.3)])
def test_log_discrete_eigenvalues_of_gbt_rules(method, alpha):
    """``log dA`` of a GBT rule without forming dA equals the log of the rule's eigenvalue written out,
    ``(1 + (1 - alpha) x) / (1 - alpha x)`` with x = dt A, in complex128 (Z06: the sign of ``alpha x`` in the
    denominator)."""
    from statespaces.discretize import log_discrete_eigenvalues

    g = torch.Generator().manual_seed(0)
    x = torch.complex(-torch.rand(4, 5, dtype=torch.float64, generator=g),
                      3 * torch.randn(4, 5, dtype=torch.float64, generator=g))
    want = torch.log((1 + (1 - alpha) * x) / (1 - alpha * x))
    got = log_discrete_eigenvalues(x, method, alpha if method == "gbt" else None)
    torch.testing.assert_close(torch.exp(got), torch.exp(want), rtol=1e-12, atol=1e-12)


def test_discretize_dense_refuses_a_B_of_another_state_size():
    """A dense system whose B has another number of rows than A has states is refused by name and sizes (Z14),
    for a vector B and a matrix B."""
    from statespaces.discretize import discretize_dense

    A = -torch.eye(4, dtype=torch.float64)
    for B in (torch.ones(3, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"B has 3 rows, A is 4x4"):
            discretize_dense(A, B, 0.1, "zoh")


def test_zoh_kernel_factors_ref_backend_keeps_the_scale():
    """Under backend ``"ref"`` the ZOH factors are ``(dt A, scale C (e^{dt A} - 1)/A B)`` with the scale (2 for
    conjugate pairs) applied: against the formula in complex128 (Z20 dropped it on that route only)."""
    from statespaces.discretize import zoh_kernel_factors

    g = torch.Generator().manual_seed(1)
    H, M = 3, 4
    dt = torch.rand(H, dtype=torch.float64, generator=g) + 0.1
    A = torch.complex(-torch.rand(H, M, dtype=torch.float64, generator=g), torch.randn(H, M, dtype=torch.float64,
                                                                                       generator=g))
    B = torch.randn(H, M, dtype=torch.complex128, generator=g)
    C = torch.randn(1, H, M, dtype=torch.complex128, generator=g)
    want = 2.0 * C * (torch.expm1(dt[:, None] * A) / A * B)
    for name in ("ref", "torch"):
        with backend.use_backend(name):
            log_dA, coef = zoh_kernel_factors(dt, A, B, C, scale=2.0)
        torch.testing.assert_close(log_dA, dt[:, None] * A, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(coef, want, rtol=1e-12, atol=1e-12)
