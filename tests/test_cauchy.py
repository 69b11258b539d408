"""Cauchy kernel op (thesis Def. C.5): chunked custom-autograd version vs the materializing twin."""
import pytest
import torch

from statespaces.kernels.cauchy import cauchy, cauchy_naive

C128 = torch.complex128


def _rand(*shape, gen):
    return torch.complex(torch.randn(*shape, dtype=torch.float64, generator=gen),
                         torch.randn(*shape, dtype=torch.float64, generator=gen))


@pytest.mark.parametrize("conj", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 37, 264, 10**7])   # 264: blocks of 2 of the 3 channels
def test_matches_naive(conj, chunk):
    g = torch.Generator().manual_seed(0)
    v, z, w = _rand(3, 4, 6, gen=g), _rand(3, 1, 11, gen=g), _rand(3, 1, 6, gen=g)
    out = cauchy(v, z, w, conj=conj, chunk_elems=chunk)
    ref = cauchy_naive(v, z, w, conj=conj)
    assert out.shape == (3, 4, 11)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    # definition, literally
    k, n = 2, 3
    lit = sum(v[1, 2, m] / (z[1, 0, k] - w[1, 0, m]) for m in range(6))
    if conj:
        lit = lit + sum(v[1, 2, m].conj() / (z[1, 0, k] - w[1, 0, m].conj()) for m in range(6))
    assert abs(out[1, 2, k] - lit) < 1e-12


@pytest.mark.parametrize("shapes", [((6,), (9,), (6,)), ((2, 6), (9,), (6,)), ((2, 3, 6), (2, 1, 9), (3, 6)),
                                    ((5, 1, 6), (1, 4, 9), (5, 4, 6))])
def test_broadcasting(shapes):
    g = torch.Generator().manual_seed(1)
    v, z, w = (_rand(*s, gen=g) for s in shapes)
    torch.testing.assert_close(cauchy(v, z, w, chunk_elems=7), cauchy_naive(v, z, w), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("conj", [False, True])
def test_gradcheck_complex_fp64(conj):
    g = torch.Generator().manual_seed(2)
    v = _rand(2, 3, 4, gen=g).requires_grad_()
    z = _rand(2, 1, 5, gen=g).requires_grad_()
    w = _rand(2, 1, 4, gen=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: cauchy(a, b, c, conj=conj, chunk_elems=6), (v, z, w))


def test_gradients_match_naive_and_real_inputs():
    g = torch.Generator().manual_seed(3)
    v = _rand(4, 8, gen=g).requires_grad_()
    z = torch.randn(4, 13, dtype=torch.float64, generator=g).requires_grad_()  # real nodes are promoted
    w = _rand(4, 8, gen=g).requires_grad_()
    wt = _rand(4, 13, gen=g)
    grads = []
    for fn in (lambda: cauchy(v, z, w, conj=True, chunk_elems=9), lambda: cauchy_naive(v, z, w, conj=True)):
        loss = (fn() * wt).real.sum()
        grads.append(torch.autograd.grad(loss, (v, z, w)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_saved_memory_is_linear():
    """Autograd keeps O(R (J N + K)) numbers, never the (R, K, N) Cauchy matrix."""
    R, J, N, K = 4, 2, 64, 4096
    v = torch.randn(R, J, N, dtype=torch.complex64, requires_grad=True)
    z = torch.randn(R, 1, K, dtype=torch.complex64)
    w = torch.randn(R, 1, N, dtype=torch.complex64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = cauchy(v, z, w, conj=True)
    assert max(saved) <= R * max(K, J * 2 * N)
    out.abs().sum().backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(w.grad).all()


def test_bad_input():
    with pytest.raises(ValueError, match="disagree on N"):
        cauchy(torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 6))
    with pytest.raises(TypeError):
        cauchy([1.0], torch.randn(2), torch.randn(1))
    with pytest.raises(TypeError):
        cauchy(torch.ones(3, dtype=torch.int64), torch.randn(2), torch.randn(3))
