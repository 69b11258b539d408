"""The blocked chunk-to-chunk carry (:func:`statespaces.kernels.chunked_conv.scan_rows`, :func:`carry_rows` and its
adjoint) against a plain float64 loop of the recurrence and against the chunk-first carry it replaces for one 2x2
block per channel; and the fused LinOSS node's backward with a gradient that is not contiguous (the expanded
gradient of ``y.sum()``) against the same gradient made contiguous, over several batch groups."""
import pytest
import torch

import statespaces.kernels.chunked_conv as cc
import statespaces.kernels.chunked_projected as cp
import statespaces.layers.linoss as linoss_mod
from statespaces import LinOSS
from statespaces.kernels.chunked_conv import carry_adjoint, carry_rows, carry_rows_adjoint, carry_states, scan_rows

f64 = torch.float64


def _loop(A, s, reverse=False):
    """Z_j = A Z_{j-1} + s_j (or from the end), one step at a time, column vectors: (H, 2, 2), (H, B, n, 2)."""
    Z = torch.zeros_like(s)
    z = torch.zeros_like(s[:, :, 0])
    order = range(s.shape[2] - 1, -1, -1) if reverse else range(s.shape[2])
    for j in order:
        z = torch.einsum("hab,hxb->hxa", A, z) + s[:, :, j]
        Z[:, :, j] = z
    return Z


def _system(H=4, B=3, n=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(H, 2, 2, generator=g, dtype=f64) * 0.7           # not symmetric: transposes matter
    s = torch.randn(H, B, n, 2, generator=g, dtype=f64)
    return A, s


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 24, 37])
@pytest.mark.parametrize("block", [1, 3, 8, 64])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_rows_equals_the_loop(n, block, reverse):
    A, s = _system(n=n)
    Z = scan_rows(A, s, reverse=reverse, block=block)
    assert Z.shape == s.shape and Z.dtype == f64 and Z.is_contiguous()
    torch.testing.assert_close(Z, _loop(A, s, reverse), rtol=1e-12, atol=1e-12)


def test_scan_rows_keeps_its_input_and_the_default_block():
    A, s = _system(n=3 * cc.CARRY_BLOCK + 1)
    s0 = s.clone()
    torch.testing.assert_close(scan_rows(A, s), _loop(A, s), rtol=1e-12, atol=1e-12)
    assert torch.equal(s, s0)


@pytest.mark.parametrize("n", [1, 5, 17])
@pytest.mark.parametrize("with_x0", [False, True])
def test_carry_rows_and_adjoint_equal_the_chunk_first_carry(n, with_x0):
    A, s = _system(n=n, seed=1)
    H, B = s.shape[:2]
    G = A.view(H, 1, 2, 2)
    x0 = torch.randn(H, B, 2, dtype=f64) if with_x0 else None
    X = carry_rows(G, s.unsqueeze(-2), None if x0 is None else x0.unsqueeze(-2)).squeeze(-2)   # (H, B, n, 1, 2)
    Xc = carry_states(G, s.permute(2, 0, 1, 3).unsqueeze(-2).contiguous(),
                      None if x0 is None else x0.unsqueeze(-2))                      # (n, H, B, 1, 2)
    torch.testing.assert_close(X, Xc.squeeze(-2).permute(1, 2, 0, 3), rtol=1e-12, atol=1e-12)
    dX = torch.randn_like(X)
    ds, dG, dx0 = carry_rows_adjoint(G, X.unsqueeze(-2), dX.unsqueeze(-2))
    ds, dx0 = ds.squeeze(-2), dx0.squeeze(-2)
    ds_c, dG_c, dx0_c = carry_adjoint(G, Xc, dX.permute(2, 0, 1, 3).unsqueeze(-2).contiguous())
    torch.testing.assert_close(ds, ds_c.squeeze(-2).permute(1, 2, 0, 3), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dG, dG_c, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(dx0, dx0_c.squeeze(-2), rtol=1e-12, atol=1e-12)


def test_carry_rows_adjoint_is_the_vector_jacobian_product():
    """Against autograd through the plain loop: X_0 = x0, X_j = G X_{j-1} + s_{j-1}."""
    A, s = _system(n=10, seed=2)
    H, B = s.shape[:2]
    G = A.view(H, 1, 2, 2).clone().requires_grad_()
    s_ = s.clone().requires_grad_()
    x0 = torch.randn(H, B, 2, dtype=f64, requires_grad=True)
    states = [x0]
    for j in range(1, s.shape[2]):
        states.append(torch.einsum("hab,hxb->hxa", G.view(H, 2, 2), states[-1]) + s_[:, :, j - 1])
    X = torch.stack(states, 2)
    dX = torch.randn_like(X)
    gG, gs, gx0 = torch.autograd.grad(X, (G, s_, x0), dX)
    torch.testing.assert_close(carry_rows(G.detach(), s.unsqueeze(-2), x0.detach().unsqueeze(-2)).squeeze(-2),
                               X.detach(), rtol=1e-12, atol=1e-12)
    ds, dG, dx0 = carry_rows_adjoint(G.detach(), X.detach().unsqueeze(-2), dX.unsqueeze(-2))
    ds, dx0 = ds.squeeze(-2), dx0.squeeze(-2)
    torch.testing.assert_close(ds, gs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dG, gG, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(dx0, gx0, rtol=1e-12, atol=1e-12)
    assert carry_rows_adjoint(G.detach(), X.detach().unsqueeze(-2), dX.unsqueeze(-2), need_dG=False)[1] is None


def test_carry_rows_converts_to_the_carry_dtype():
    A, s = _system(n=6)
    X = carry_rows(A.view(-1, 1, 2, 2), s.float().unsqueeze(-2), dtype=f64)
    assert X.dtype == f64
    torch.testing.assert_close(X, carry_rows(A.view(-1, 1, 2, 2), s.float().double().unsqueeze(-2)), rtol=0, atol=0)


@pytest.mark.parametrize("disc", ["IM", "IMEX"])
def test_fused_backward_with_an_expanded_gradient(disc, monkeypatch):
    """y.sum()'s gradient is an expanded scalar: copied group by group into one buffer (three groups, the last
    partial), the gradients equal those of the same gradient passed contiguous."""
    monkeypatch.setattr(cp, "GROUP_ELEMENTS", 2 * 6 * 16)                   # groups of 2 items: (0, 2), (2, 4), (4, 5)
    fused = []
    monkeypatch.setattr(linoss_mod, "chunked_conv_projected",
                        lambda *a, **k: fused.append(1) or cp.chunked_conv_projected(*a, **k))
    layer = LinOSS(5, 3, discretization=disc, seed=0, mode="chunked").double()
    x = torch.randn(5, 16, 5, dtype=f64)
    outs = []
    for make_grad in (lambda y: torch.ones_like(y), None):
        layer.zero_grad()
        xg = x.clone().requires_grad_()
        y = layer(xg)
        if make_grad is None:
            y.sum().backward()
        else:
            y.backward(make_grad(y))
        outs.append([xg.grad] + [p.grad.clone() for p in layer.parameters()])
    assert len(fused) == 2
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("M", [1, 2])
def test_carry_scan_function_gradcheck(M):
    """The autograd node of the stateful chunked path: rows for one block per channel, chunk-first otherwise."""
    H, B, n = 3, 2, 11
    G = (torch.randn(H, M, 2, 2, dtype=f64) * 0.7).requires_grad_()
    sums = torch.randn(H, B, n, M, 2, dtype=f64, requires_grad=True)
    x0 = torch.randn(H, B, M, 2, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(cc._CarryScan.apply, (G, sums, x0))
    torch.testing.assert_close(cc._CarryScan.apply(G, sums, x0), cc.carry_states_ref(G, sums, x0), rtol=1e-12,
                               atol=1e-12)


def test_scan_rows_long_rotation_does_not_drift():
    """|eigenvalue| = 1 (an IMEX oscillator is a rotation in a scaled basis) over 4,000 chunks: the blocked scan
    (powers A^8 carried between blocks) stays at the loop's rounding level."""
    H, B, n = 3, 2, 4000
    th = torch.tensor([0.3, 1.1, 2.9], dtype=f64)
    A = torch.stack([torch.stack([th.cos(), -th.sin()], -1), torch.stack([th.sin(), th.cos()], -1)], -2)
    s = torch.randn(H, B, n, 2, dtype=f64)
    Z, ref = scan_rows(A, s), _loop(A, s)
    assert (Z - ref).abs().max() <= 1e-9 * ref.abs().max()


def test_bad_shapes_are_refused():
    A, s = _system(n=4)
    H, B = s.shape[:2]
    with pytest.raises(ValueError, match="scan_rows: expected A"):
        scan_rows(A[:-1], s)                                                  # another H
    with pytest.raises(ValueError, match="scan_rows: expected A"):
        scan_rows(A, s[..., :1])                                              # not 2-vectors
    with pytest.raises(ValueError, match="scan_rows: block must be a positive integer"):
        scan_rows(A, s, block=0)
    G = A.view(H, 1, 2, 2)
    with pytest.raises(ValueError, match="carry_rows: expected G"):
        carry_rows(G, s)                                                      # no block axis
    with pytest.raises(ValueError, match="carry_rows: expected G"):
        carry_rows(G, s.unsqueeze(-2), torch.zeros(H, B + 1, 1, 2, dtype=f64))
    X = carry_rows(G, s.unsqueeze(-2))
    with pytest.raises(ValueError, match="carry_rows_adjoint: expected G"):
        carry_rows_adjoint(G, X, X[:, :, :-1])
