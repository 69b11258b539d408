"""Mutation audit of the chunked LTI convolution core: gaps the existing tests left open.

Audited modules: ``statespaces.kernels.chunked_conv``, ``statespaces.kernels.chunked_projected`` and
``statespaces.kernels.chunked``. 102 mutants (off-by-one chunk/slice bounds, dropped x0/D/far-field terms, missing
transposes/flips/conjugates, the float64 carry demoted, group offsets in the fused projected node, needs_input_grad
inverted, dispatch and error checks changed); 95 killed by the existing tests, 7 survived: 1 equivalent
(``_step_blocks`` always taking its elementwise form) and 6 gaps pinned below (the Triton size rule's boundary, a C
with three directions, ``ReadoutT``'s dW flag, the last partial batch group, the dense chunk length's rounding, the
dense skip's shape check).
One more test pins the float64 carry of the diagonal route, whose demotion only the LinOSS tests caught (by a dtype
error in the M = 1 path, not by a precision check).

Every check here is against an independent route: a plain float64 loop of the recurrence, explicit dense matrix
powers, or autograd through such a reference; never against the code's own output.
"""
import pytest
import torch

from statespaces.kernels import chunked_conv as cc
from statespaces.kernels import chunked_projected as cp

F64, C128 = torch.float64, torch.complex128


def _diag_system(H, M, seed, re_scale=0.3):
    g = torch.Generator().manual_seed(seed)
    re = -torch.rand(H, M, dtype=F64, generator=g) * re_scale - 1e-3
    log_dA = torch.complex(re, torch.randn(H, M, dtype=F64, generator=g))
    dB = torch.randn(H, M, dtype=C128, generator=g)
    C = torch.randn(1, H, M, dtype=C128, generator=g)
    return log_dA, dB, C


def _diag_loop(u, log_dA, dB, C, x0=None):
    """y_t = Re(C x_t), x_t = a x_{t-1} + dB u_t, in complex128, one step at a time; returns (y, x_L)."""
    Bsz, L, H = u.shape
    a = torch.exp(log_dA.to(C128))
    x = torch.zeros(Bsz, H, a.shape[-1], dtype=C128) if x0 is None else x0.to(C128)
    ys = []
    for t in range(L):
        x = a * x + dB.to(C128) * u[:, t, :, None].to(F64)
        ys.append((C[0].to(C128) * x).real.sum(-1))
    return torch.stack(ys, 1), x


def test_diagonal_path_refuses_a_c_with_three_directions():
    """C must be (1 or 2, H, M): a (3, H, M) C raises instead of silently using C[0] only."""
    log_dA, dB, C = _diag_system(2, 3, seed=0)
    u = torch.randn(1, 5, 2, dtype=F64)
    with pytest.raises(ValueError, match="C"):
        cc.chunked_conv_diagonal(u, log_dA, dB, torch.cat([C, C, C]))


def test_float32_diagonal_state_is_carried_in_float64():
    """The chunk-to-chunk carry runs in the dtype of ``pow_T`` (float64), not of u: with a slow mode (|a| ~ 1) and
    one step per chunk over 8192 steps, the float32 final state stays within a few float32 roundings of the float64
    loop (a float32 carry accumulates ~8192 roundings, an error over ten times larger)."""
    H, M, L = 1, 2, 8192
    log_dA = torch.complex(torch.full((H, M), -1e-6, dtype=F64), torch.tensor([[1e-4, 2e-4]], dtype=F64))
    dB = torch.full((H, M), 0.1 + 0j, dtype=C128)
    C = torch.ones(1, H, M, dtype=C128)
    u = torch.ones(1, L, H, dtype=F64)                       # exactly representable: the loop sees the same input
    _, x_ref = _diag_loop(u, log_dA, dB, C)
    _, s32 = cc.chunked_conv_diagonal(u.float(), log_dA.to(torch.complex64), dB.to(torch.complex64),
                                      C.to(torch.complex64), 1.0, None, None, True, chunk=1)
    err = (s32.to(C128) - x_ref).abs().max() / x_ref.abs().max()
    assert err < 3e-7, err


def test_fits_triton_takes_states_up_to_twice_the_block():
    """The Triton size rule: float32, a chunk length the kernels know, and S <= 2 MAX_BLOCK_M (the boundary
    included); float64 or one block more is refused. Needs no GPU: the rule reads only shapes and dtypes."""
    from statespaces.ops.triton.chunked_conv import CHUNKS, MAX_BLOCK_M

    T = CHUNKS[0]

    def tables(S):
        return cc.ChunkTables(None, torch.empty(1, T, S), None, None, None)

    u32 = torch.zeros(1, 1, 1)
    assert cc._fits_triton(u32, tables(2 * MAX_BLOCK_M))
    assert cc._fits_triton(u32, tables(2))
    assert not cc._fits_triton(u32, tables(2 * MAX_BLOCK_M + 2))
    assert not cc._fits_triton(u32.double(), tables(2))
    assert not cc._fits_triton(u32, cc.ChunkTables(None, torch.empty(1, T + 1, 2), None, None, None))


def _block_system(Cn, T, r, seed):
    """Cn real 2x2 systems x_t = G x_{t-1} + b v_t, y_t = c^T x_t (spectral radius < 1), their tables by
    ``block_tables`` from explicit matrix powers, and the raw (G, b, c) for the loop."""
    g = torch.Generator().manual_seed(seed)
    G = 0.6 * torch.randn(Cn, 2, 2, dtype=F64, generator=g) / 2 ** 0.5
    b = torch.randn(Cn, 2, dtype=F64, generator=g)
    c = torch.randn(Cn, 2, dtype=F64, generator=g)
    powers = torch.stack([torch.linalg.matrix_power(G, j) for j in range(T + 1)], 1)     # (Cn, T+1, 2, 2)
    return cc.block_tables(powers, b, c, r), (G, b, c)


def _projected_loop(u, W_in, W_out, D, G, b, c):
    """out = (k * (u W_in^T)) W_out^T + D u by the explicit real recurrence of each column (differentiable)."""
    v = u @ W_in.t()                                                          # (B, L, C)
    x = torch.zeros(u.shape[0], G.shape[0], 2, dtype=u.dtype)
    ys = []
    for t in range(u.shape[1]):
        x = (G @ x.unsqueeze(-1)).squeeze(-1) + b * v[:, t, :, None]
        ys.append((c * x).sum(-1))
    out = torch.stack(ys, 1) @ W_out.t()
    return out if D is None else out + D * u


def _projected_inputs(B, L, H, Cn, seed):
    """Random float64 input u (B, L, H), maps W_in (Cn, H) and W_out (H, Cn), skip D (H,) and output gradient."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, L, H, dtype=F64, generator=g), torch.randn(Cn, H, dtype=F64, generator=g),
            torch.randn(H, Cn, dtype=F64, generator=g), torch.randn(H, dtype=F64, generator=g),
            torch.randn(B, L, H, dtype=F64, generator=g))


def test_projected_ref_gives_the_output_weight_its_gradient_alone():
    """``ReadoutT``'s backward computes dW from its own ``needs_input_grad[1]``: with a frozen input, input map and
    SSM (only W_out trainable) W_out still gets the gradient of autograd through the plain recurrence."""
    B, L, H, Cn, T = 2, 8, 3, 4, 4
    tab, (G, b, c) = _block_system(Cn, T, T, seed=1)
    u, W_in, W_out, D, gout = _projected_inputs(B, L, H, Cn, seed=2)
    w1 = W_out.clone().requires_grad_()
    (cp.chunked_conv_projected_ref(u, W_in, w1, D, tab) * gout).sum().backward()
    w2 = W_out.clone().requires_grad_()
    (_projected_loop(u, W_in, w2, D, G, b, c) * gout).sum().backward()
    assert w1.grad is not None
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-10, atol=1e-10)


def test_batch_groups_end_at_the_batch_when_the_size_does_not_divide_it():
    """``batch_groups`` covers 0..B by consecutive ranges of at most budget // per_item items; the last range is
    cut at B (not a full group past it)."""
    groups = cp.batch_groups(5, 10, budget=20)
    assert groups[-1][1] == 5
    assert [g for a, b in groups for g in range(a, b)] == list(range(5))
    assert all(b - a <= 2 for a, b in groups)


def test_fused_projected_with_a_partial_last_group(monkeypatch):
    """The fused forward and backward with batch groups that do not divide B (groups of 2 over B = 3): output and
    every gradient equal autograd through the plain recurrence."""
    B, L, H, Cn, T = 3, 8, 3, 4, 4
    monkeypatch.setattr(cp, "GROUP_ELEMENTS", 2 * Cn * L)                 # two items per group: (0, 2), (2, 3)
    tab, (G, b, c) = _block_system(Cn, T, T, seed=3)
    u, W_in, W_out, D, gout = _projected_inputs(B, L, H, Cn, seed=4)
    a1 = [t.clone().requires_grad_() for t in (u, W_in, W_out, D)]
    out = cp.chunked_conv_projected(*a1, tab)
    (out * gout).sum().backward()
    a2 = [t.clone().requires_grad_() for t in (u, W_in, W_out, D)]
    ref = _projected_loop(*a2, G, b, c)
    (ref * gout).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for x, y in zip(a1, a2):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-10)


def test_dense_chunk_length_is_rounded_down_to_a_power_of_two():
    """The dense route's chunk length is the largest power of two <= min(chunk, L) (never rounded up: a longer
    chunk than asked costs T x T Toeplitz tables and padding that the caller did not ask for)."""
    from statespaces.kernels.chunked import _chunk

    for L in (1, 5, 64, 100, 1000):
        for T in (1, 3, 48, 64, 65):
            got = _chunk(L, T)
            assert got & (got - 1) == 0 and got <= min(T, L) < 2 * got, (L, T, got)


def test_dense_route_refuses_a_skip_of_the_wrong_shape():
    """``chunked_conv_dense`` checks D is (H,): a (1,) D (which would broadcast silently over the channels) and an
    (H + 1,) D raise the op's ValueError."""
    from statespaces.kernels.chunked import chunked_conv_dense

    H, N = 3, 2
    u, dA = torch.randn(1, 5, H, dtype=F64), 0.5 * torch.eye(N, dtype=F64).expand(H, N, N)
    dB, c = torch.ones(H, N, dtype=F64), torch.ones(H, N, dtype=F64)
    for bad in (torch.ones(1, dtype=F64), torch.ones(H + 1, dtype=F64)):
        with pytest.raises(ValueError, match="chunked_conv_dense"):
            chunked_conv_dense(u, dA, dB, c, bad)
