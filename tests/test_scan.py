"""Parallel associative scans (statespaces.ops.scan) against their sequential twin."""
import pytest
import torch

from statespaces.ops.scan import combine_block2, combine_diagonal, scan_block2, scan_diagonal, scan_loop

LENGTHS = [1, 2, 3, 5, 8, 17, 64, 101]


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _tol(dtype):
    return 1e-12 if dtype in (torch.float64, torch.complex128) else 1e-6


def _diag_system(L, dtype, complex_a, batch=3, N=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.float64 else torch.float32
    if complex_a:
        a = torch.polar(torch.rand(L, N, generator=g, dtype=real) * 0.2 + 0.8, torch.rand(L, N, generator=g, dtype=real) * 6)
        b = torch.complex(torch.randn(batch, L, N, generator=g, dtype=real), torch.randn(batch, L, N, generator=g, dtype=real))
        x0 = torch.complex(torch.randn(batch, N, generator=g, dtype=real), torch.randn(batch, N, generator=g, dtype=real))
    else:
        a = torch.rand(L, N, generator=g, dtype=real) * 1.9 - 0.95
        b = torch.randn(batch, L, N, generator=g, dtype=real)
        x0 = torch.randn(batch, N, generator=g, dtype=real)
    return a, b, x0


def _block_system(L, dtype, complex_f, batch=3, N=5, seed=0, per_batch_M=False):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.float64 else torch.float32
    shape = (batch, L, 2, 2, N) if per_batch_M else (L, 2, 2, N)
    M = (torch.rand(*shape, generator=g, dtype=real) - 0.5) * 1.2   # spectral radius < 1 typically
    F = torch.randn(batch, L, 2, N, generator=g, dtype=real)
    x0 = torch.randn(batch, 2, N, generator=g, dtype=real)
    if complex_f:
        F = torch.complex(F, torch.randn(batch, L, 2, N, generator=g, dtype=real))
        x0 = torch.complex(x0, torch.randn(batch, 2, N, generator=g, dtype=real))
    return M, F, x0


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("complex_a", [False, True])
def test_diagonal_scan_equals_loop(L, dtype, complex_a):
    a, b, x0 = _diag_system(L, dtype, complex_a, seed=L)
    for init in (None, x0):
        assert _rel(scan_diagonal(a, b, init), scan_loop(a, b, init)) < _tol(dtype)


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("complex_f", [False, True])
def test_block_scan_equals_loop(L, dtype, complex_f):
    M, F, x0 = _block_system(L, dtype, complex_f, seed=L)
    for init in (None, x0):
        assert _rel(scan_block2(M, F, init), scan_loop(M, F, init, block=True)) < _tol(dtype)


@pytest.mark.parametrize("L", [7, 32])
def test_block_scan_per_batch_and_complex_transitions(L):
    M, F, x0 = _block_system(L, torch.float64, True, per_batch_M=True, seed=3)
    assert _rel(scan_block2(M, F, x0), scan_loop(M, F, x0, block=True)) < 1e-12
    Mc = torch.complex(M, torch.randn_like(M) * 0.1)
    assert _rel(scan_block2(Mc, F, x0), scan_loop(Mc, F, x0, block=True)) < 1e-12


def test_block_scan_against_dense_matrices():
    """The 2x2-block layout means x = [x1; x2] with block (i, j) acting on x_j -> x_i."""
    L, N = 9, 3
    M, F, x0 = _block_system(L, torch.float64, False, batch=1, N=N, seed=5)
    X = scan_block2(M, F, x0)[0]
    x = torch.cat([x0[0, 0], x0[0, 1]])
    for n in range(L):
        dense = torch.cat([torch.cat([torch.diag(M[n, 0, 0]), torch.diag(M[n, 0, 1])], 1),
                           torch.cat([torch.diag(M[n, 1, 0]), torch.diag(M[n, 1, 1])], 1)], 0)
        x = dense @ x + torch.cat([F[0, n, 0], F[0, n, 1]])
        assert torch.allclose(X[n].flatten(), x, atol=1e-12)


def test_combine_order_is_later_after_earlier():
    g = torch.Generator().manual_seed(0)
    Mi, Mj = torch.randn(2, 2, 4, generator=g, dtype=torch.float64), torch.randn(2, 2, 4, generator=g, dtype=torch.float64)
    Fi, Fj = torch.randn(2, 4, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
    x = torch.randn(2, 4, generator=g, dtype=torch.float64)

    def apply(M, F, x):
        return torch.stack([M[0, 0] * x[0] + M[0, 1] * x[1], M[1, 0] * x[0] + M[1, 1] * x[1]]) + F

    Mc, Fc = combine_block2((Mi, Fi), (Mj, Fj))
    assert torch.allclose(apply(Mc, Fc, x), apply(Mj, Fj, apply(Mi, Fi, x)))
    Mw, Fw = combine_block2((Mj, Fj), (Mi, Fi))                    # the other order differs
    assert not torch.allclose(apply(Mw, Fw, x), apply(Mc, Fc, x))
    a1, b1, a2, b2 = (torch.randn(4, generator=g, dtype=torch.float64) for _ in range(4))
    a, b = combine_diagonal((a1, b1), (a2, b2))
    assert torch.allclose(a * x[0] + b, a2 * (a1 * x[0] + b1) + b2)


def test_combine_is_associative():
    g = torch.Generator().manual_seed(1)
    e = [(torch.randn(2, 2, 3, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)) for _ in range(3)]
    left = combine_block2(combine_block2(e[0], e[1]), e[2])
    right = combine_block2(e[0], combine_block2(e[1], e[2]))
    assert all(torch.allclose(p, q) for p, q in zip(left, right))


def test_gradcheck_scans():
    g = torch.Generator().manual_seed(2)
    L, N = 7, 2
    a = (torch.rand(L, N, generator=g, dtype=torch.float64) * 0.9).requires_grad_()
    b = torch.randn(2, L, N, generator=g, dtype=torch.complex128).requires_grad_()
    x0 = torch.randn(2, N, generator=g, dtype=torch.complex128).requires_grad_()
    assert torch.autograd.gradcheck(scan_diagonal, (a, b, x0))
    M = ((torch.rand(L, 2, 2, N, generator=g, dtype=torch.float64) - 0.5)).requires_grad_()
    F = torch.randn(2, L, 2, N, generator=g, dtype=torch.float64).requires_grad_()
    y0 = torch.randn(2, 2, N, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(scan_block2, (M, F, y0))
    Fc = torch.randn(1, L, 2, N, generator=g, dtype=torch.complex128).requires_grad_()
    assert torch.autograd.gradcheck(lambda M, F: scan_block2(M, F), (M, Fc))


def test_gradients_equal_loop_gradients():
    M, F, x0 = _block_system(33, torch.float64, True, seed=7)
    grads = []
    for fn in (lambda *a: scan_block2(*a), lambda *a: scan_loop(*a, block=True)):
        Mg, Fg = M.clone().requires_grad_(), F.clone().requires_grad_()
        fn(Mg, Fg, x0).abs().square().sum().backward()
        grads.append((Mg.grad, Fg.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-10)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-10)


def test_bad_shapes():
    with pytest.raises(ValueError):
        scan_diagonal(torch.rand(5, 3), torch.rand(2, 4, 3))
    with pytest.raises(ValueError):
        scan_block2(torch.rand(5, 2, 3), torch.rand(2, 5, 2, 3))
    with pytest.raises(ValueError):
        scan_block2(torch.rand(5, 2, 2, 3), torch.rand(2, 5, 3, 3))


@pytest.mark.parametrize("L", [1, 6, 13, 64])
def test_time_invariant_transitions(L):
    """Length-1 or expanded (stride-0) transitions take the O(N log L) path; same result."""
    M, F, x0 = _block_system(L, torch.float64, True, seed=11)
    M1 = M[:1]
    ref = scan_loop(M1.expand(L, 2, 2, 5).clone(), F, x0, block=True)
    assert _rel(scan_block2(M1, F, x0), ref) < 1e-12
    assert _rel(scan_block2(M1.expand(L, 2, 2, 5), F, x0), ref) < 1e-12
    assert _rel(scan_loop(M1, F, x0, block=True), ref) < 1e-12
    a, b, y0 = _diag_system(L, torch.float64, True, seed=12)
    ref = scan_loop(a[:1].expand(L, 6).clone(), b, y0)
    assert _rel(scan_diagonal(a[:1], b, y0), ref) < 1e-12
    assert _rel(scan_diagonal(a[:1].expand(L, 6), b, y0), ref) < 1e-12
