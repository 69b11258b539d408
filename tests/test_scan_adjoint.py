"""The CPU diagonal scan's two forms (loop over time, odd/even doubling) and its adjoint backward, against the
sequential twin ``scan_loop`` differentiated by autograd; and the per-step ZOH factors of irregular sampling
(``discretize_diagonal`` with a batch of steps) against the per-system float64 route."""
import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import statespaces.ops.scan as scan_mod
from statespaces.discretize import _ExpPhiTable, discretize_diagonal
from statespaces.ops.scan import scan_diagonal, scan_loop

C128, F64 = torch.complex128, torch.float64


def _cases(g):
    """(a, b, x0) in float64: time-varying complex, time-invariant broadcast, real a with complex b, complex a
    with real b, one step."""
    def c(*shape, scale=1.0):
        re, im = (torch.randn(*shape, generator=g, dtype=F64) for _ in range(2))
        return torch.complex(re, im) * scale
    yield "complex", c(2, 3, 9, 4, scale=0.5), c(2, 3, 9, 4), c(2, 3, 4)
    yield "invariant", c(3, 1, 4, scale=0.5), c(2, 3, 9, 4), None
    yield "real a", torch.randn(9, 4, generator=g, dtype=F64) * 0.5, c(2, 9, 4), c(4)
    yield "real b", c(2, 9, 4, scale=0.5), torch.randn(2, 9, 4, generator=g, dtype=F64), None
    yield "one step", c(2, 1, 4, scale=0.5), c(2, 1, 4), c(2, 4)


@pytest.fixture(params=["loop", "doubling"])
def form(request, monkeypatch):
    """Force the loop over time (every size loops) or the odd/even doubling (none does)."""
    monkeypatch.setattr(scan_mod, "LOOP_STEP_BYTES", 0 if request.param == "loop" else 1 << 62)
    return request.param


@pytest.mark.parametrize("case", range(5))
def test_scan_and_its_adjoint_equal_the_loop_under_autograd(form, case):
    name, a, b, x0 = list(_cases(torch.Generator().manual_seed(case)))[case]
    leaves = [t.clone().requires_grad_() for t in (a, b)] + ([] if x0 is None else [x0.clone().requires_grad_()])
    got = scan_diagonal(*leaves[:2], leaves[2] if x0 is not None else None)
    want = scan_loop(*leaves[:2], leaves[2] if x0 is not None else None)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), name
    w = torch.randn(got.shape, dtype=got.dtype, generator=torch.Generator().manual_seed(1))
    g_got = torch.autograd.grad((got * w).real.sum(), leaves)
    g_want = torch.autograd.grad((want * w).real.sum(), leaves)
    for x, y in zip(g_got, g_want):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.allclose(x, y, rtol=1e-11, atol=1e-11), name


@pytest.mark.parametrize("real_a", [False, True])
def test_scan_gradcheck_second_order_and_forward_mode(form, real_a):
    g = torch.Generator().manual_seed(3)
    b, x0 = torch.randn(2, 5, 3, dtype=C128, generator=g), torch.randn(2, 3, dtype=C128, generator=g)
    a = torch.randn(5, 3, dtype=F64 if real_a else C128, generator=g) * 0.5
    inputs = tuple(t.requires_grad_() for t in (a, b, x0))
    assert gradcheck(scan_diagonal, inputs)
    assert gradgradcheck(scan_diagonal, inputs)
    assert gradcheck(scan_diagonal, inputs, check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False)


def test_scan_backward_is_one_adjoint_scan_not_a_recorded_doubling():
    """Autograd records one node for the scan (its backward is the adjoint scan), not the slices and products of
    each doubling level: their backward took 10x the forward's time."""
    a = (torch.randn(2, 64, 8, dtype=C128) * 0.5).requires_grad_()
    b = torch.randn(2, 64, 8, dtype=C128, requires_grad=True)
    x = scan_diagonal(a, b)
    assert type(x.grad_fn).__name__ == "_ScanDiagonalBackward"
    assert {type(f[0]).__name__ for f in x.grad_fn.next_functions if f[0] is not None} == {"AccumulateGrad"}


def test_loop_is_chosen_for_wide_steps_on_cpu_and_never_while_tracing(monkeypatch):
    wide = torch.zeros(4, 64, 16, 32, dtype=torch.complex64)           # 4 x 64 x 32 complex64 per step: 64 KiB
    narrow = torch.zeros(1, 16, 32, dtype=torch.complex64)             # 256 B per step
    thin = torch.zeros(4096, 16, 1)                                     # one float32 per row: scattered slices
    assert scan_mod._loops(wide, wide) and not scan_mod._loops(narrow, narrow) and not scan_mod._loops(thin, thin)
    monkeypatch.setattr(scan_mod, "tracing", lambda: True)
    assert not scan_mod._loops(wide, wide)


def test_exp_phi_table_derivatives():
    g = torch.Generator().manual_seed(0)
    z = torch.complex(-torch.rand(5, 3, generator=g, dtype=F64) * 3, torch.randn(5, 3, generator=g, dtype=F64) * 4)
    z[0, 0], z[1, 1] = 0, 1e-9 - 3e-9j               # phi's series (|x| < 1e-8) and phi' 's (|x| < 1e-4)
    for x in (z.requires_grad_(), torch.randn(6, generator=g, dtype=F64).requires_grad_()):
        assert gradcheck(_ExpPhiTable.apply, (x,))
        assert gradgradcheck(_ExpPhiTable.apply, (x,))
        # forward-mode AD takes the float64 route of the per-system factors (the Function has no tangent rule)
        A = x.detach().flatten()[:3].reshape(1, 3).requires_grad_()
        steps = torch.rand(4, 1, generator=g, dtype=F64) + 0.1
        assert gradcheck(lambda A, steps=steps: discretize_diagonal(A, torch.ones_like(A), steps, "zoh")[1], (A,),
                         check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False)


def test_loop_promotes_with_the_initial_state_like_the_doubling(monkeypatch):
    """float32 transitions and forcing with a float64 (or complex128) x0: the result is float64 (complex128) in
    both forms, as in the sequential twin (the loop first returned float32, and crashed on a complex x0)."""
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(128, 6, 32, generator=g) * 0.9, torch.randn(128, 6, 32, generator=g)
    for x0 in (torch.randn(128, 32, generator=g, dtype=F64), torch.randn(128, 32, generator=g, dtype=C128)):
        want = scan_loop(a.to(x0.dtype), b.to(x0.dtype), x0)
        for bytes_ in (0, 1 << 62):
            monkeypatch.setattr(scan_mod, "LOOP_STEP_BYTES", bytes_)
            got = scan_diagonal(a, b, x0)
            assert got.dtype == x0.dtype
            assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)


def _system(g, dtype=F64):
    A = torch.complex(-torch.rand(4, 6, generator=g, dtype=dtype), torch.randn(4, 6, generator=g, dtype=dtype) * 3)
    A[0, 0] = 0                        # an integrator: dB is its limit dt B
    A[1, 1] = 2j                       # undamped
    B = torch.complex(torch.randn(4, 6, generator=g, dtype=dtype), torch.randn(4, 6, generator=g, dtype=dtype))
    return A, B


def test_per_step_zoh_factors_equal_the_per_system_route():
    """dt (B, L, H) per step: the table route (e^x - 1 in its own precision, times B / A) equals discretizing
    each step's system on its own (float64 expm1 and phi)."""
    g = torch.Generator().manual_seed(0)
    A, B = _system(g)
    dt = torch.rand(3, 5, 4, generator=g, dtype=F64) + 1e-3
    dA, dB = discretize_diagonal(A, B, dt, "zoh")
    for i in range(3):
        for j in range(5):
            rA, rB = discretize_diagonal(A, B, dt[i, j], "zoh")
            assert torch.allclose(dA[i, j], rA, rtol=1e-14, atol=1e-15)
            assert torch.allclose(dB[i, j], rB, rtol=1e-14, atol=1e-15)
    assert torch.equal(dB[:, :, 0, 0], dt[:, :, 0] * B[0, 0])


def test_per_step_zoh_factors_gradients_include_the_integrator():
    g = torch.Generator().manual_seed(1)
    A, B = _system(g)
    dt = (torch.rand(2, 3, 4, generator=g, dtype=F64) + 0.1).requires_grad_()
    A, B = A.requires_grad_(), B.requires_grad_()

    def dB_of(A, B, dt):
        return discretize_diagonal(A, B, dt, "zoh")[1]

    def dA_of(A, B, dt):
        return discretize_diagonal(A, B, dt, "zoh")[0]

    assert gradcheck(dB_of, (A, B, dt))
    assert gradcheck(dA_of, (A, B, dt))
    assert gradgradcheck(dB_of, (A, B, dt))


@pytest.mark.parametrize("dtype", [torch.complex64, C128])
def test_per_step_zoh_factors_of_tiny_eigenvalues(dtype):
    """|A| down to subnormal: dB is its limit dt B and d dB / dA is phi'(0) dt^2 B = dt^2 B / 2 (a first form,
    (e^x - 1) B / A, overflowed to NaN at subnormal A and differentiated into two cancelling terms)."""
    tiny = 1e-39 if dtype == torch.complex64 else 1e-310
    for mag in (1e-17, 1e-20, tiny):
        A = torch.full((1, 2), -mag, dtype=dtype, requires_grad=True)
        dt = torch.full((3, 1), 0.1, dtype=dtype.to_real())
        dB = discretize_diagonal(A, torch.ones(1, 2, dtype=dtype), dt, "zoh")[1]
        assert torch.allclose(dB, torch.full_like(dB, 0.1))
        (grad,) = torch.autograd.grad(dB.real.sum(), A)
        assert torch.allclose(grad, torch.full_like(grad, 3 * 0.1 ** 2 / 2), rtol=1e-5)


@pytest.mark.parametrize("mag", [1e-6, 5e-4, 1e-2])
def test_per_step_zoh_gradient_of_slow_modes_keeps_float32_precision(mag):
    """d dB / dA at dt |A| from 1e-6 to 1e-2 in float32 within 1e-5 of float64 (autograd through the float32 values
    lost 0.14 at 1e-6: phi' is the difference of two numbers near 1, formed in float64)."""
    grads = []
    for dtype in (torch.complex64, C128):
        A = torch.tensor([[mag * (-3 + 4j), -0.5 + 0j]], dtype=dtype, requires_grad=True)   # |A| = 5 mag
        dt = torch.tensor([[0.2], [0.1]], dtype=dtype.to_real())
        dB = discretize_diagonal(A, torch.ones(1, 2, dtype=dtype), dt, "zoh")[1]
        grads.append(torch.autograd.grad((dB * (1 - 2j)).real.sum(), A)[0].to(C128))
    assert float(((grads[0] - grads[1]).abs() / grads[1].abs()).max()) < 1e-5


def test_phi_prime_against_its_long_series():
    """phi'(x) = sum_k k x^(k-1) / (k+1)! (25 terms, exact to float64 for |x| <= 1) on both sides of the series
    branch's bound (|x| = 1e-4) and beyond."""
    from statespaces.discretize import _exp_phi_values, _phi_prime
    x = torch.tensor([1e-6, -5e-5 + 2e-5j, 0.9e-4j, 1.1e-4, -1e-3 + 1e-3j, 0.1, -0.7 + 0.7j], dtype=C128)
    want = sum(k * x ** (k - 1) / float(math.factorial(k + 1)) for k in range(1, 26))
    e, phi = _exp_phi_values(x)
    assert float(((_phi_prime(x, e, phi) - want).abs() / want.abs()).max()) < 1e-11


@pytest.mark.parametrize("scale", [1e-7, 1e-4, 1e-1, 1.0, 10.0])
def test_per_step_zoh_factors_keep_float32_precision(scale):
    """In float32 the table route stays within a few ulps of the float64 factors, also where dt |A| is tiny (the
    slow modes: e^x - 1 rounded from e^x would be off by 2^-24 / |x|)."""
    g = torch.Generator().manual_seed(2)
    A = torch.complex(-torch.rand(8, 16, generator=g) * scale, torch.randn(8, 16, generator=g) * scale)
    dt = torch.rand(4, 8, generator=g) + 0.1
    ones = torch.ones(8, 16, dtype=torch.complex64)
    dA, dB = discretize_diagonal(A, ones, dt, "zoh")
    rA, rB = discretize_diagonal(A.to(C128), ones.to(C128), dt.to(F64), "zoh")
    assert dA.dtype == dB.dtype == torch.complex64
    assert float(((dA.to(C128) - rA).abs() / rA.abs()).max()) < 2e-6
    assert float(((dB.to(C128) - rB).abs() / rB.abs()).max()) < 2e-6


@pytest.mark.parametrize("bytes_", [0, 1 << 62])
def test_backward_under_vmap_and_forward_over_reverse(bytes_, monkeypatch):
    """The adjoint backward also runs batched (``is_grads_batched``, ``jacobian(vectorize=True)``: under vmap) and
    with forward-mode tangents (forward-over-reverse): both failed in the in-place loop and interleave, and in the
    Function without a tangent rule. Both take the sequential twin there."""
    import torch.autograd.forward_ad as fwAD

    monkeypatch.setattr(scan_mod, "LOOP_STEP_BYTES", bytes_)
    g = torch.Generator().manual_seed(4)
    a = (torch.randn(2, 7, 3, dtype=C128, generator=g) * 0.5).requires_grad_()
    b = torch.randn(2, 7, 3, dtype=C128, generator=g).requires_grad_()
    y, y_ref = scan_diagonal(a, b), scan_loop(a, b)
    G = torch.randn(3, *y.shape, dtype=C128, generator=g)
    got = torch.autograd.grad(y, (a, b), G, is_grads_batched=True, retain_graph=True)
    for i in range(3):
        want = torch.autograd.grad(y_ref, (a, b), G[i], retain_graph=True)
        for p, q in zip(got, want):
            assert torch.allclose(p[i], q, rtol=1e-12, atol=1e-12)
    v = torch.randn(y.shape, dtype=C128, generator=g)
    with fwAD.dual_level():
        outs = [torch.autograd.grad(out, (a, b), fwAD.make_dual(G[0], v), create_graph=True) for out in (y, y_ref)]
        tangents = [[fwAD.unpack_dual(t).tangent for t in o] for o in outs]
    for p, q in zip(*tangents):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-12)


def test_irregular_layer_jacobian_vectorized():
    from statespaces.layers import S4D

    layer = S4D(3, 8, seed=1).double()
    x = torch.randn(1, 6, 3, dtype=F64)
    dt = torch.rand(1, 6, dtype=F64) + 0.2
    J = torch.autograd.functional.jacobian(lambda x: layer(x, dt=dt), x, vectorize=True)
    assert torch.allclose(J, torch.autograd.functional.jacobian(lambda x: layer(x, dt=dt), x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bytes_", [0, 1 << 62])
def test_real_transitions_promote_with_the_initial_state(bytes_, monkeypatch):
    """float32 transitions, complex64 forcing, complex128 x0: complex128 in both forms, as the sequential twin (the
    doubling's real-arithmetic view cast x0 down to complex64)."""
    monkeypatch.setattr(scan_mod, "LOOP_STEP_BYTES", bytes_)
    g = torch.Generator().manual_seed(6)
    a = torch.rand(5, 8, generator=g) * 0.9
    b = torch.randn(128, 5, 8, dtype=torch.complex64, generator=g)
    x0 = torch.randn(128, 8, dtype=C128, generator=g)
    got = scan_diagonal(a, b, x0)
    assert got.dtype == C128
    assert torch.allclose(got, scan_loop(a, b, x0), rtol=1e-6, atol=1e-6)


def test_phi_prime_in_complex64_above_the_old_series_bound():
    """complex64 phi' for |x| in 0.05 .. 0.2, where the direct form (e^x - phi) / x lost up to 75 ulps: within
    5e-7 of the float64 series (the series now reaches |x| = 0.2)."""
    from statespaces.discretize import _exp_phi_values, _phi_prime

    r = torch.tensor([0.06, 0.1, 0.15, 0.19], dtype=F64)[:, None]
    x = (r * torch.exp(1j * torch.linspace(0, 2 * math.pi, 24, dtype=F64))).flatten()
    want = sum(k * x ** (k - 1) / float(math.factorial(k + 1)) for k in range(1, 26))
    x32 = x.to(torch.complex64)
    got = _phi_prime(x32, *_exp_phi_values(x32)).to(C128)
    assert float(((got - want).abs() / want.abs()).max()) < 5e-7
