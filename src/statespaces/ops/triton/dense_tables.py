r"""The per-channel tables of S4's dense chunked convolution in one Triton launch, and their backward in two.

:mod:`.chunked_dense` convolves with a real dense discrete system ``(dA, dB, c, D)`` per channel (S4's real
form, thesis app. C.1.1) through tables for chunks of T steps (§2.3.2, Prop. 2.8):

* ``Z`` (T, T): the near-field Toeplitz matrix ``Z[s, t] = k_{t-s}`` (t >= s, else 0) of the taps
  ``k_j = c^T dA^j dB`` (``D`` added at lag 0);
* ``W_in`` (T, N): ``W_in[t] = dA^{T-1-t} dB``; ``W_out`` (T, N): ``W_out[t] = c^T dA^{t+1}``;
* ``G = dA^T`` (N, N). (``dA^r`` for a short last chunk, needed only for the final state, is left to the caller.)

In PyTorch they are about 40 small ops forward and 50 backward (:func:`statespaces.kernels.chunked.dense_tables`:
the doubling of :func:`~statespaces.kernels.chunked.near_powers`, the taps, the Toeplitz gather); on a GPU bound
by dispatch (``benchmarks/host_census.py``) the launches are the cost, not the O(T N^2 + N^3 log T) arithmetic.
Here, one program per channel, in float64 (the tables leave in float32, as the convolution reads them):

* the columns ``k_{j+1} = dA k_j`` (k_0 = dB) and the rows ``r_{j+1} = r_j dA`` (r_0 = c^T dA) by T sequential
  matrix-vector products, the taps ``c . k_j`` written onto Z's diagonals on the way;
* ``dA^T`` by K = log2 T squarings (``tl.dot``).

The backward is two launches of one program per channel. :func:`_tables_bwd_kernel` runs the adjoints of both
recurrences in reverse, reading the saved ``W_in`` / ``W_out`` for the states, and folds ``dZ`` onto the taps by
lag. :func:`_powers_bwd_kernel` adds the gradient of ``dA^T`` down the squaring chain (``d(S S) = dS S + S dS``:
``g_i = g_{i+1} S_i^T + S_i^T g_{i+1}``): the squares are recomputed and parked, with g, in a float32 scratch
(H, K + 1, N, N), and each product is summed over 16-wide slices read from it (whole 64 x 64 x 64 products held
their operands in registers and spilled). If they fail to compile or launch under the fallback policy, the
gradients come from the PyTorch tables (:func:`statespaces.kernels.chunked.dense_tables`, the twin that module
registers; :func:`statespaces.backend.backward_with_fallback`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import backend
from ._launch import contiguous, make, signature, unique
from .chunked_dense import CHUNK, MAX_N, _tile

if TYPE_CHECKING:
    from ._launch import Config

Tensor = torch.Tensor

__all__ = ["DenseTablesFn", "dense_tables_triton", "configs"]

#: log2 of the chunk length: the squarings from dA to dA^T.
K = CHUNK.bit_length() - 1

_FWD_SIG = signature("*fp32", ["a_ptr", "b_ptr", "c_ptr", "d_ptr", "z_ptr", "win_ptr", "wout_ptr", "g_ptr"], ["N"])
_BWD_SIG = signature("*fp32", ["a_ptr", "c_ptr", "win_ptr", "wout_ptr", "gz_ptr", "gwin_ptr", "gwout_ptr", "ga_ptr",
                               "gb_ptr", "gc_ptr", "gd_ptr"], ["N"])
_POW_SIG = signature("*fp32", ["a_ptr", "gg_ptr", "scr_ptr", "ga_ptr"], ["N"])


POW_WARPS = 8


def _block_n(N: int) -> int:
    return max(16, triton.next_power_of_2(N))


def _warps(N: int) -> int:
    return 4 if _block_n(N) <= 32 else 8


def _fwd_config(N: int, has_d: bool):
    return make(__name__, _tables_fwd_kernel, _FWD_SIG, num_warps=_warps(N), T=CHUNK, K=K, BN=_block_n(N),
                HAS_D=has_d)


def _bwd_config(N: int, has_d: bool):
    return make(__name__, _tables_bwd_kernel, _BWD_SIG, num_warps=_warps(N), T=CHUNK, BN=_block_n(N), HAS_D=has_d)


def _pow_config(N: int):
    return make(__name__, _powers_bwd_kernel, _POW_SIG, num_warps=POW_WARPS, K=K, BN=_block_n(N), BK=16)


def configs() -> List["Config"]:
    """Every launch configuration: BN = 16 .. :data:`MAX_N`, with and without D."""
    out = []
    n = 16
    while n <= MAX_N:
        out += [f(n, d) for f in (_fwd_config, _bwd_config) for d in (False, True)] + [_pow_config(n)]
        n *= 2
    return unique(out)


@triton.jit
def _square(ptr, ri, nm, N):
    # an (BN, BN) fp32 tile of a row-major N x N matrix, zero outside, as fp64
    return _tile(ptr, ri, ri, N, 1, nm, nm).to(tl.float64)


@triton.jit
def _put(ptr, X, ri, nm, N):
    tl.store(ptr + ri[:, None] * N + ri[None, :], X.to(tl.float32), mask=nm[:, None] & nm[None, :])


@triton.jit
def _tables_fwd_kernel(
    a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, win_ptr, wout_ptr, g_ptr,
    N,
    T: tl.constexpr, K: tl.constexpr, BN: tl.constexpr, HAS_D: tl.constexpr,
):
    h = tl.program_id(0).to(tl.int64)
    ri = tl.arange(0, BN)
    nm = ri < N
    rt = tl.arange(0, T)
    S = _square(a_ptr + h * N * N, ri, nm, N)                           # dA^(2^i), i = 0 .. K
    for _ in tl.static_range(K):
        S = tl.dot(S, S)
    _put(g_ptr + h * N * N, S, ri, nm, N)
    z = z_ptr + h * T * T
    tl.store(z + rt[:, None] * T + rt[None, :], tl.zeros([T, T], tl.float32))
    tl.debug_barrier()                                                   # the zeros land before the diagonals
    A = _square(a_ptr + h * N * N, ri, nm, N)
    c = tl.load(c_ptr + h * N + ri, mask=nm, other=0.0).to(tl.float64)
    k = tl.load(b_ptr + h * N + ri, mask=nm, other=0.0).to(tl.float64)  # k_0 = dB
    r = tl.sum(c[:, None] * A, 0)                                        # r_0 = c^T dA
    win = win_ptr + h * T * N
    wout = wout_ptr + h * T * N
    for j in range(T):
        tap = tl.sum(c * k, 0)
        if HAS_D:
            tap += tl.where(j == 0, tl.load(d_ptr + h).to(tl.float64), 0.0)
        tl.store(z + rt * (T + 1) + j, tl.zeros([T], tl.float32) + tap.to(tl.float32), mask=rt < T - j)
        tl.store(win + (T - 1 - j) * N + ri, k.to(tl.float32), mask=nm)
        tl.store(wout + j * N + ri, r.to(tl.float32), mask=nm)
        k = tl.sum(A * k[None, :], 1)                                    # dA k_j
        r = tl.sum(r[:, None] * A, 0)                                    # r_j dA


@triton.jit
def _tables_bwd_kernel(
    a_ptr, c_ptr, win_ptr, wout_ptr, gz_ptr, gwin_ptr, gwout_ptr,
    ga_ptr, gb_ptr, gc_ptr, gd_ptr,
    N,
    T: tl.constexpr, BN: tl.constexpr, HAS_D: tl.constexpr,
):
    h = tl.program_id(0).to(tl.int64)
    ri = tl.arange(0, BN)
    nm = ri < N
    rt = tl.arange(0, T)
    gz = gz_ptr + h * T * T
    A = _square(a_ptr + h * N * N, ri, nm, N)
    c = tl.load(c_ptr + h * N + ri, mask=nm, other=0.0).to(tl.float64)
    gA = tl.zeros([BN, BN], tl.float64)
    gc = tl.zeros([BN], tl.float64)
    # columns k_{j+1} = dA k_j, k_0 = dB: the adjoint kap of k_j, in reverse; k_j read back from W_in
    kap = tl.zeros([BN], tl.float64)
    for jj in range(T):
        j = T - 1 - jj
        kj = tl.load(win_ptr + (h * T + T - 1 - j) * N + ri, mask=nm, other=0.0).to(tl.float64)
        gtap = tl.sum(tl.load(gz + rt * (T + 1) + j, mask=rt < T - j, other=0.0).to(tl.float64), 0)  # lag j of dZ
        gA += kap[:, None] * kj[None, :]                                 # kap = adjoint of k_{j+1} (0 at j = T-1)
        kap = tl.sum(A * kap[:, None], 0)                                # dA^T kap
        kap += tl.load(gwin_ptr + (h * T + T - 1 - j) * N + ri, mask=nm, other=0.0).to(tl.float64) + gtap * c
        gc += gtap * kj
    tl.store(gb_ptr + h * N + ri, kap.to(tl.float32), mask=nm)
    if HAS_D:
        tl.store(gd_ptr + h, tl.sum(tl.load(gz + rt * (T + 1)), 0))
    # rows r_{j+1} = r_j dA, r_0 = c^T dA: the adjoint rho of r_j, in reverse; r_j read back from W_out
    rho = tl.zeros([BN], tl.float64)
    for jj in range(T):
        j = T - 1 - jj
        rj = tl.load(wout_ptr + (h * T + j) * N + ri, mask=nm, other=0.0).to(tl.float64)
        gA += rj[:, None] * rho[None, :]
        rho = tl.sum(A * rho[None, :], 1)                                # dA rho
        rho += tl.load(gwout_ptr + (h * T + j) * N + ri, mask=nm, other=0.0).to(tl.float64)
    gc += tl.sum(A * rho[None, :], 1)
    gA += c[:, None] * rho[None, :]
    tl.store(gc_ptr + h * N + ri, gc.to(tl.float32), mask=nm)
    _put(ga_ptr + h * N * N, gA, ri, nm, N)                              # completed by _powers_bwd_kernel


@triton.jit
def _powers_bwd_kernel(
    a_ptr, gg_ptr, scr_ptr, ga_ptr,
    N,
    K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    # the gradient of dA^T = S_K down the squaring chain, added to ga. The squares S_i = dA^(2^i) go forward
    # into the scratch (slots 0 .. K-1), then g_i = g_{i+1} S_i^T + S_i^T g_{i+1} back down, g parked in slot K
    # between levels: each product is summed over BK-wide slices of its inner dimension, read from the scratch
    # (whole 64 x 64 x 64 products held the operands in registers and spilled), exact fp32 products
    h = tl.program_id(0).to(tl.int64)
    ri = tl.arange(0, BN)
    nm = ri < N
    mm = nm[:, None] & nm[None, :]
    sq = ri[:, None] * N + ri[None, :]
    scr = scr_ptr + h * (K + 1) * N * N
    S = _square(a_ptr + h * N * N, ri, nm, N)
    for i in tl.static_range(K):
        _put(scr + i * N * N, S, ri, nm, N)
        if i < K - 1:
            S = tl.dot(S, S)
    tl.store(scr + K * N * N + sq, tl.load(gg_ptr + h * N * N + sq, mask=mm, other=0.0), mask=mm)
    gk = scr + K * N * N                                                 # g of the current level, (N, N)
    rk = tl.arange(0, BK)
    for ii in range(K):
        tl.debug_barrier()
        si = scr + (K - 1 - ii) * N * N
        acc = tl.zeros([BN, BN], tl.float32)
        for k0 in range(0, BN, BK):
            kk = k0 + rk
            km = kk < N
            g_cols = tl.load(gk + ri[:, None] * N + kk[None, :], mask=nm[:, None] & km[None, :], other=0.0)
            st_rows = tl.load(si + kk[:, None] + ri[None, :] * N, mask=km[:, None] & nm[None, :], other=0.0)
            acc = tl.dot(g_cols, st_rows, acc, input_precision="ieee")   # g S^T
            st_cols = tl.load(si + ri[:, None] + kk[None, :] * N, mask=nm[:, None] & km[None, :], other=0.0)
            g_rows = tl.load(gk + kk[:, None] * N + ri[None, :], mask=km[:, None] & nm[None, :], other=0.0)
            acc = tl.dot(st_cols, g_rows, acc, input_precision="ieee")   # + S^T g
        tl.debug_barrier()
        tl.store(gk + sq, acc, mask=mm)
    tl.debug_barrier()
    tl.store(ga_ptr + h * N * N + sq, tl.load(gk + sq, mask=mm, other=0.0) + tl.load(ga_ptr + h * N * N + sq,
                                                                                       mask=mm, other=0.0), mask=mm)


def _forward_inputs(ctx):
    """``(dA, dB, c, D)`` of this call (the fallback of :class:`DenseTablesFn`'s backward)."""
    dA, c, _, _, dB, D = ctx.saved_tensors
    return dA, dB, c, D


class DenseTablesFn(torch.autograd.Function):
    """``(dA, dB, c, D) -> (Z, W_in, W_out, dA^T)``: one launch forward, two backward (module notes).

    Inputs fp32 contiguous: dA (H, N, N), dB, c (H, N), D (H,) or None."""

    @staticmethod
    def forward(ctx, dA: Tensor, dB: Tensor, c: Tensor, D: Optional[Tensor]):
        H, N = dB.shape
        T = CHUNK
        Z = torch.empty(H, T, T, dtype=dA.dtype, device=dA.device)
        win = torch.empty(H, T, N, dtype=dA.dtype, device=dA.device)
        wout = torch.empty_like(win)
        G = torch.empty_like(dA)
        _fwd_config(N, D is not None).launch((H,), dA, dB, c, dB if D is None else D, Z, win, wout, G, N)
        ctx.save_for_backward(dA, c, win, wout, dB, D)           # (dB, D: for the fallback only)
        ctx.has_d = D is not None
        ctx.fallback_op = backend.fallback_op()
        return Z, win, wout, G

    @staticmethod
    @backend.first_order
    @backend.backward_with_fallback("DenseTablesFn", _forward_inputs)
    def backward(ctx, gZ, gwin, gwout, gG):
        dA, c, win, wout, _, _ = ctx.saved_tensors
        H, N = c.shape
        shapes = ((H, CHUNK, CHUNK), win.shape, wout.shape, dA.shape)
        gZ, gwin, gwout, gG = (dA.new_zeros(shape) if g is None else contiguous(g if g.dtype == dA.dtype
                                                                                 else g.to(dA.dtype))
                               for g, shape in zip((gZ, gwin, gwout, gG), shapes))
        scr = torch.empty(H, K + 1, N, N, dtype=dA.dtype, device=dA.device)
        ga, gb, gc = torch.empty_like(dA), torch.empty_like(c), torch.empty_like(c)
        gd = torch.empty(H, dtype=dA.dtype, device=dA.device) if ctx.has_d else gb
        _bwd_config(N, ctx.has_d).launch((H,), dA, c, win, wout, gZ, gwin, gwout, ga, gb, gc, gd, N)
        _pow_config(N).launch((H,), dA, gG, scr, ga, N)
        return ga, gb, gc, (gd if ctx.has_d else None)


def dense_tables_triton(dA: Tensor, dB: Tensor, c: Tensor, D: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor,
                                                                                       Tensor]:
    r"""The tables of :func:`statespaces.kernels.chunked.dense_tables` for T = :data:`CHUNK`, with the Toeplitz
    matrix in place of the taps and without ``dA^r``: ``(Z (H, T, T), W_in, W_out (H, T, N), dA^T (H, N, N))``,
    float32, differentiable in dA, dB, c and D.

    Args:
        dA: (H, N, N) float32, N <= :data:`MAX_N`. dB, c: (H, N) float32. D: (H,) float32 or None.
    """
    if dA.dim() != 3 or dA.shape[-1] != dA.shape[-2] or dB.shape != dA.shape[:2] or c.shape != dB.shape \
            or (D is not None and D.shape != dA.shape[:1]):
        raise ValueError(f"dense_tables_triton: needs dA (H, N, N), dB and c (H, N), D (H,) or None; got dA "
                         f"{tuple(dA.shape)}, dB {tuple(dB.shape)}, c {tuple(c.shape)}, "
                         f"D {None if D is None else tuple(D.shape)}")
    ins = (dA, dB, c) + (() if D is None else (D,))
    if dA.shape[-1] > MAX_N or any(t.dtype != torch.float32 for t in ins):
        raise ValueError(f"dense_tables_triton: needs float32 tensors and N <= {MAX_N}; got {dA.dtype}, "
                         f"N={dA.shape[-1]}")
    return DenseTablesFn.apply(contiguous(dA), contiguous(dB), contiguous(c), None if D is None else contiguous(D))
