r"""Chunked LTI convolution with a DENSE per-channel transition in Triton (S4's real N x N form).

The algorithm of :func:`statespaces.kernels.chunked.chunked_conv_dense` (thesis §2.3.2-2.3.3, Prop. 2.8;
app. C.1.1 for S4's real dense discrete system): per channel h, ``xi_t = dA xi_{t-1} + dB u_t``,
``y_t = c^T xi_t (+ D u_t)``, cut into chunks of T steps. With the per-channel tables

* ``Z`` (T, T): the near-field Toeplitz matrix of the taps ``k_l = c^T dA^l dB`` (``Z[s, t] = k_{t-s}``);
* ``W_in`` (T, N): ``dA^{T-1-t} dB`` (the chunk's input sums), ``W_out`` (T, N): ``c^T dA^{t+1}``;
* ``G = dA^T`` (N, N) (the carry between chunks), ``G_r = dA^r`` (the r steps of the last chunk),

per chunk j of a batch row (U_j: (T,) inputs, X_j: (N,) state before the chunk)

    Y_j = U_j Z + X_j W_out^T,      X_{j+1} = X_j G^T + U_j W_in,

and the final state is ``dA^r X_{n-1} + U_{n-1} W_last`` (``W_last[t] = W_in[T - r + t]``, t < r), formed in
PyTorch from the state before the last chunk. Every product is a ``tl.dot`` at ``input_precision="tf32x3"``
(fp32-faithful on tensor cores); u and y (and du, dy) are read and written in their (B, L, H) layout
(``u[b, l, h]`` at ``(b L + l) H + h``). Four kernels (five launches), so that no program holds more than
two tables (one kernel holding all four spilled at N = 64, also at 8 warps):

* :func:`_dense_carry_kernel`, sequential, one program per (block of BB batch rows, channel): the states
  ``X_{j+1} = X_j G^T + U_j W_in`` (two products per chunk, the carry fp32 in registers), saved as
  X (B, H, n_chunks, N) (for the output and the backward);
* :func:`_dense_rows_kernel`, parallel, one program per (block of BR chunk rows (b, j), channel):
  ``Y = U Z + X W_out^T`` (``Z_T`` false);
* backward :func:`_dense_adj_kernel`, sequential in reverse: the adjoint ``mu`` of the state after each
  chunk, ``dS_j = mu``, ``mu <- dY_j W_out + mu G`` (dS = 0 on the last chunk, where mu starts from the
  gradient of X_{n-1}); ``dx0`` is the last mu;
* :func:`_dense_rows_kernel` again, with ``Z_T`` true: ``du = dY Z^T + dS W_in^T``;
* with few (batch block, channel) programs (small batches, long sequences: :func:`segments`), the two sequential
  kernels are cut into S segments of KS chunks on a second grid axis, each launched twice: a LOCAL pass gives
  each segment's own end state (adjoint), then each segment chains those of the segments before (after) it by
  Horner with ``G^KS`` and runs its chunks. Sequential depth about ``3 sqrt(n)`` instead of n chunks (the H200
  profile of S4 at B = 1, L = 65,536: the two loops over 2,048 chunks took 12.2 of 15.3 ms of GPU time);
* :func:`_dense_grad_kernel`, parallel over (a few programs, channel, table): the table gradients
  ``U^T dY`` (folded onto the taps by lag in torch), ``U^T dS``, ``dY^T X``, ``dS^T X`` summed over chunk
  rows in registers; PyTorch sums the few per-program tiles.

If the backward kernels fail to compile or launch under the fallback policy, the gradients come from the PyTorch
path on the same tables (the twin that :mod:`statespaces.kernels.chunked` registers;
:func:`statespaces.backend.backward_with_fallback`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple, Union

import torch
import triton
import triton.language as tl

from ... import backend
from ._launch import contiguous, make, signature, unique

if TYPE_CHECKING:
    from ._launch import Config

Tensor = torch.Tensor

__all__ = ["ChunkedDenseFn", "chunked_conv_dense_triton", "configs", "CHUNK", "MAX_N", "BLOCK_B"]

#: Chunk length T of the Triton dense path, batch rows per program of the sequential kernels (the rows of
#: their tl.dot products) and the largest state size N (padded to a power of two >= 16). N = 128 spills
#: 400-800 bytes in four of the five kernels even at 8 warps (ptxas, sm_90), so it is not offered.
CHUNK = 32
BLOCK_B = 16
MAX_N = 64
#: Segments of the sequential kernels (:func:`segments`): taken below this many (batch block, channel) programs
#: (an H100 has 132 SMs, and these programs hold ~230 registers x 8 warps: one or two per SM), at least this
#: many chunks each.
SEGMENT_PROGRAMS = 1024
MIN_SEGMENT = 8
#: Chunk rows (b, j) per program of the parallel kernels, and the most programs per channel of the gradients.
BLOCK_R = 32
GRAD_PROGRAMS = 8
#: The most programs per channel of the parallel output / du kernels (each loops over its blocks of chunk rows;
#: one program per block took 0.6 ms per launch on the H200 at B = 16, L = 4096, H = 256: 16,384 tiny programs,
#: each reading both tables).
ROW_PROGRAMS = 8


def _row_programs(rows: int) -> int:
    return min(ROW_PROGRAMS, triton.cdiv(rows, BLOCK_R))

_CARRY_SIG = signature("*fp32", ["u_ptr", "win_ptr", "g_ptr", "gk_ptr", "x0_ptr", "e_ptr", "xs_ptr"],
                       ["B", "L", "H", "N", "n_chunks", "KS"])
_ROWS_SIG = signature("*fp32", ["a_ptr", "z_ptr", "w_ptr", "s_ptr", "o_ptr"], ["B", "L", "H", "N", "n_chunks"])
_ADJ_SIG = signature("*fp32", ["dy_ptr", "wout_ptr", "g_ptr", "gk_ptr", "dlast_ptr", "r_ptr", "ds_ptr", "dx0_ptr"],
                     ["B", "L", "H", "N", "n_chunks", "KS"])
_GRAD_SIG = signature("*fp32", ["u_ptr", "dy_ptr", "xs_ptr", "ds_ptr", "dz_ptr", "dwin_ptr", "dwout_ptr", "dg_ptr"],
                      ["B", "L", "H", "N", "n_chunks"])


def _block_n(N: int) -> int:
    return max(16, triton.next_power_of_2(N))


def _warps(N: int) -> int:
    """4 warps up to BN = 32; 8 at BN = 64, where 4 spill (ptxas: 120-200 bytes, sm_80/sm_90)."""
    return 4 if _block_n(N) <= 32 else 8


def _carry_config(N: int, local: bool = False):
    return make(__name__, _dense_carry_kernel, _CARRY_SIG, num_warps=_warps(N), T=CHUNK, BB=BLOCK_B,
                BN=_block_n(N), PREC="tf32x3", LOCAL=local)


def _out_config(N: int):
    return make(__name__, _dense_rows_kernel, _ROWS_SIG, num_warps=4, T=CHUNK, BR=BLOCK_R, BN=_block_n(N),
                PREC="tf32x3", Z_T=False)


def _adj_config(N: int, local: bool = False):
    return make(__name__, _dense_adj_kernel, _ADJ_SIG, num_warps=_warps(N), T=CHUNK, BB=BLOCK_B,
                BN=_block_n(N), PREC="tf32x3", LOCAL=local)


def _du_config(N: int):
    return make(__name__, _dense_rows_kernel, _ROWS_SIG, num_warps=_warps(N), T=CHUNK, BR=BLOCK_R,
                BN=_block_n(N), PREC="tf32x3", Z_T=True)


def _grad_config(N: int):
    return make(__name__, _dense_grad_kernel, _GRAD_SIG, num_warps=4, T=CHUNK, BR=BLOCK_R, BN=_block_n(N),
                PREC="tf32x3")


_CHOOSERS = (_carry_config, _out_config, _adj_config, _du_config, _grad_config,
             lambda N: _carry_config(N, True), lambda N: _adj_config(N, True))


def configs() -> List["Config"]:
    """Every launch configuration: state widths BN = 16 .. :data:`MAX_N` (powers of two), five launch sites (the
    sequential two also in their segment-local variant)."""
    widths = []
    n = 16
    while n <= MAX_N:
        widths.append(n)
        n *= 2
    return unique([f(N) for f in _CHOOSERS for N in widths])


@triton.jit
def _tile(ptr, r0, c0, rs, cs, rmask, cmask):
    # a 2-D tile ptr[r * rs + c * cs] for row indices r0 (R,) and column indices c0 (C,), zero outside
    return tl.load(ptr + r0[:, None] * rs + c0[None, :] * cs, mask=rmask[:, None] & cmask[None, :], other=0.0)


@triton.jit
def _chunk_rows(q, B, L, H, N, n_chunks, h, rt, rn, T: tl.constexpr):
    # rows q = b n + j (one chunk of one batch row each): offsets and masks of their (T,) steps in the
    # (B, L, H) layout and of their (N,) states in a (B, H, n, N) table
    b = q // n_chunks
    j = q % n_chunks
    qm = q < B * n_chunks
    pos = j[:, None] * T + rt[None, :]
    io = (b[:, None] * L + pos) * H + h
    iom = qm[:, None] & (pos < L)
    so = ((b * H + h) * n_chunks + j)[:, None] * N + rn[None, :]
    som = qm[:, None] & (rn < N)[None, :]
    return io, iom, so, som


@triton.jit
def _batch_block(B, H, N, BB: tl.constexpr, BN: tl.constexpr):
    # the (block of BB batch rows, channel h) of a sequential program; channel fastest: neighbouring
    # programs share the sectors of u. Returns h, the rows rb (BB,), the state indices rn (BN,) and masks
    pid = tl.program_id(0).to(tl.int64)
    h = pid % H
    rb = (pid // H) * BB + tl.arange(0, BB)
    rn = tl.arange(0, BN)
    bm = rb < B
    nm = rn < N
    return h, rb, rn, bm, nm, bm[:, None] & nm[None, :]


@triton.jit
def _load_chunk(ptr, rb, bm, j, rt, L, H, h, T: tl.constexpr):
    # chunk j of channel h for the batch rows rb: a (BB, T) tile of a (B, L, H) tensor, zero past L
    pos = j * T + rt
    return tl.load(ptr + (rb[:, None] * L + pos[None, :]) * H + h, mask=bm[:, None] & (pos < L)[None, :],
                   other=0.0)


@triton.jit
def _dense_carry_kernel(
    u_ptr, win_ptr, g_ptr, gk_ptr, x0_ptr, e_ptr, xs_ptr,
    B, L, H, N, n_chunks, KS,
    T: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr, LOCAL: tl.constexpr,
):
    # the sequential part of the forward, one program per (block of BB batch rows, channel h; segment s of KS
    # chunks on axis 1): the states before each chunk, X_{j+1} = X_j G^T + U_j W_in, saved to xs (B, H, n, N).
    # LOCAL: the segment's own end E_s (from a zero state; segments 0 .. S-2) to e (B, H, S, N). Else: the
    # segment's start state x0 (G^KS)^s + sum_{s' < s} E_s' (G^KS)^(s-1-s') by Horner (gk = G^KS), then its
    # chunks. One segment (KS >= n) is the plain sequential pass.
    h, rb, rn, bm, nm, bn = _batch_block(B, H, N, BB, BN)
    s = tl.program_id(1)
    S = tl.cdiv(n_chunks, KS)
    rt = tl.arange(0, T)
    win = win_ptr + h * T * N
    g = g_ptr + h * N * N
    j0 = s * KS
    j1 = tl.minimum(j0 + KS, n_chunks)
    eo = ((rb[:, None] * H + h) * S) * N + rn[None, :]                  # + s' N: E_s' of these rows
    if LOCAL:
        X = tl.zeros([BB, BN], tl.float32)
    else:
        X = _tile(x0_ptr + h * N, rb, rn, H * N, 1, bm, nm)              # (BB, BN): state before chunk 0
        for sp in range(0, s):
            X = tl.dot(X, _tile(gk_ptr + h * N * N, rn, rn, 1, N, nm, nm), input_precision=PREC) + \
                tl.load(e_ptr + eo + sp * N, mask=bn, other=0.0)
    for j in range(j0, j1):
        if not LOCAL:
            tl.store(xs_ptr + ((rb[:, None] * H + h) * n_chunks + j) * N + rn[None, :], X, mask=bn)
        if j < n_chunks - 1:
            U = _load_chunk(u_ptr, rb, bm, j, rt, L, H, h, T)                # (BB, T)
            X = tl.dot(X, _tile(g, rn, rn, 1, N, nm, nm), input_precision=PREC) + \
                tl.dot(U, _tile(win, rt, rn, N, 1, rt >= 0, nm), input_precision=PREC)     # X G^T + U W_in
    if LOCAL:
        tl.store(e_ptr + eo + s * N, X, mask=bn)


@triton.jit
def _dense_rows_kernel(
    a_ptr, z_ptr, w_ptr, s_ptr, o_ptr,
    B, L, H, N, n_chunks,
    T: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr, Z_T: tl.constexpr,
):
    # the parallel parts: O = A Z + S W^T with the (T, N) table W transposed; forward (Z_T false):
    # Y = U Z + X W_out^T, backward (Z_T true, Z read transposed): du = dY Z^T + dS W_in^T. Program p of
    # channel h (channel fastest: neighbouring programs share the sectors of u) loops over the blocks of BR chunk
    # rows (b, j) p, p + P, p + 2P, ...: its two tables are read once, and the loop lets the compiler prefetch
    # the next block's rows while the current one is multiplied
    pid = tl.program_id(0).to(tl.int64)
    h = pid % H
    p = pid // H
    P = tl.num_programs(0) // H
    rt = tl.arange(0, T)
    rn = tl.arange(0, BN)
    tt = rt >= 0
    nm = rn < N
    if Z_T:
        Zt = _tile(z_ptr + h * T * T, rt, rt, 1, T, tt, tt)
    else:
        Zt = _tile(z_ptr + h * T * T, rt, rt, T, 1, tt, tt)
    Wt = _tile(w_ptr + h * T * N, rn, rt, 1, N, nm, tt)
    for q0 in range(p * BR, B * n_chunks, P * BR):
        io, iom, so, som = _chunk_rows(q0 + tl.arange(0, BR).to(tl.int64), B, L, H, N, n_chunks, h, rt, rn, T)
        A = tl.load(a_ptr + io, mask=iom, other=0.0)
        S = tl.load(s_ptr + so, mask=som, other=0.0)
        O = tl.dot(A, Zt, input_precision=PREC)
        O += tl.dot(S, Wt, input_precision=PREC)
        tl.store(o_ptr + io, O, mask=iom)


@triton.jit
def _dense_adj_kernel(
    dy_ptr, wout_ptr, g_ptr, gk_ptr, dlast_ptr, r_ptr, ds_ptr, dx0_ptr,
    B, L, H, N, n_chunks, KS,
    T: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr, LOCAL: tl.constexpr,
):
    # the sequential part of the backward, chunks in reverse: mu = adjoint of the state after chunk j,
    # dS_j = mu, mu <- mu G + dY_j W_out (+ the gradient of X_{n-1} from the final state at j = n - 1, where
    # dS = 0: its S feeds no state); dx0 = mu at the end. Segments of KS chunks (axis 1) as in the carry:
    # LOCAL: the adjoint R_s that segment s (1 .. S-1) alone hands to the state before it, to r (B, H, S, N);
    # else: the adjoint entering segment s from above, sum_{s'' > s} R_s'' (G^KS)^(s''-1-s) by Horner
    # (gk = G^KS), then its chunks; segment 0 writes dx0
    h, rb, rn, bm, nm, bn = _batch_block(B, H, N, BB, BN)
    s = tl.program_id(1) + LOCAL                                         # LOCAL: segments 1 .. S-1
    S = tl.cdiv(n_chunks, KS)
    rt = tl.arange(0, T)
    wout = wout_ptr + h * T * N
    g = g_ptr + h * N * N
    j0 = s * KS
    j1 = tl.minimum(j0 + KS, n_chunks)
    ro = ((rb[:, None] * H + h) * S) * N + rn[None, :]                  # + s'' N: R_s'' of these rows
    mu = tl.zeros([BB, BN], tl.float32)
    if not LOCAL:
        for i in range(0, S - 1 - s):
            mu = tl.dot(mu, _tile(gk_ptr + h * N * N, rn, rn, N, 1, nm, nm), input_precision=PREC) + \
                tl.load(r_ptr + ro + (S - 1 - i) * N, mask=bn, other=0.0)
    for i in range(0, j1 - j0):
        j = j1 - 1 - i
        if not LOCAL:
            tl.store(ds_ptr + ((rb[:, None] * H + h) * n_chunks + j) * N + rn[None, :], mu, mask=bn)
        dY = _load_chunk(dy_ptr, rb, bm, j, rt, L, H, h, T)
        mu = tl.dot(mu, _tile(g, rn, rn, N, 1, nm, nm), input_precision=PREC) + \
            tl.dot(dY, _tile(wout, rt, rn, N, 1, rt >= 0, nm), input_precision=PREC)
        if j == n_chunks - 1:
            mu += _tile(dlast_ptr + h * N, rb, rn, H * N, 1, bm, nm)
    if LOCAL:
        tl.store(r_ptr + ro + s * N, mu, mask=bn)
    elif s == 0:
        tl.store(dx0_ptr + (rb[:, None] * H + h) * N + rn[None, :], mu, mask=bn)


@triton.jit
def _dense_grad_kernel(
    u_ptr, dy_ptr, xs_ptr, ds_ptr, dz_ptr, dwin_ptr, dwout_ptr, dg_ptr,
    B, L, H, N, n_chunks,
    T: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr,
):
    # table gradients of channel h over the chunk rows p, p + P, p + 2P, ... (P programs on axis 1), summed
    # in registers; axis 2 picks the table: 0: U^T dY (T, T), 1: U^T dS (T, N), 2: dY^T X (T, N), 3: dS^T X
    h = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    P = tl.num_programs(1)
    part = tl.program_id(2)
    rt = tl.arange(0, T)
    rn = tl.arange(0, BN)
    nm = rn < N
    out = p * H + h
    rows = B * n_chunks
    if part == 0:
        acc = tl.zeros([T, T], dtype=tl.float32)
        for q0 in range(p * BR, rows, P * BR):
            io, iom, so, som = _chunk_rows(q0 + tl.arange(0, BR).to(tl.int64), B, L, H, N, n_chunks, h,
                                                    rt, rn, T)
            U = tl.load(u_ptr + io, mask=iom, other=0.0)
            dY = tl.load(dy_ptr + io, mask=iom, other=0.0)
            acc += tl.dot(tl.trans(U), dY, input_precision=PREC)
        tl.store(dz_ptr + out * T * T + rt[:, None] * T + rt[None, :], acc)
    elif part == 3:
        accg = tl.zeros([BN, BN], dtype=tl.float32)
        for q0 in range(p * BR, rows, P * BR):
            io, iom, so, som = _chunk_rows(q0 + tl.arange(0, BR).to(tl.int64), B, L, H, N, n_chunks, h,
                                                    rt, rn, T)
            X = tl.load(xs_ptr + so, mask=som, other=0.0)
            dS = tl.load(ds_ptr + so, mask=som, other=0.0)
            accg += tl.dot(tl.trans(dS), X, input_precision=PREC)
        tl.store(dg_ptr + out * N * N + rn[:, None] * N + rn[None, :], accg, mask=nm[:, None] & nm[None, :])
    else:
        accw = tl.zeros([T, BN], dtype=tl.float32)
        for q0 in range(p * BR, rows, P * BR):
            io, iom, so, som = _chunk_rows(q0 + tl.arange(0, BR).to(tl.int64), B, L, H, N, n_chunks, h,
                                                    rt, rn, T)
            if part == 1:
                A = tl.load(u_ptr + io, mask=iom, other=0.0)
                V = tl.load(ds_ptr + so, mask=som, other=0.0)
            else:
                A = tl.load(dy_ptr + io, mask=iom, other=0.0)
                V = tl.load(xs_ptr + so, mask=som, other=0.0)
            accw += tl.dot(tl.trans(A), V, input_precision=PREC)
        dst = out * T * N + rt[:, None] * N + rn[None, :]
        wm = (rt >= 0)[:, None] & nm[None, :]
        if part == 1:
            tl.store(dwin_ptr + dst, accw, mask=wm)
        else:
            tl.store(dwout_ptr + dst, accw, mask=wm)


def segments(n_chunks: int, programs: int) -> Tuple[int, int]:
    """``(KS, S)``: chunks per segment and segments of the sequential kernels for ``n_chunks`` chunks and
    ``programs`` (batch block, channel) programs. With few programs (fewer than :data:`SEGMENT_PROGRAMS`: small
    batches) a long sequence is cut into S segments of KS ~ sqrt(n) chunks (a power of two), so that the
    sequential depth is about 3 sqrt(n) instead of n (local ends, a Horner chain over the segments before,
    the segment itself); else one segment, the plain sequential pass."""
    if programs >= SEGMENT_PROGRAMS or n_chunks < 4 * MIN_SEGMENT:
        return n_chunks, 1
    KS = max(MIN_SEGMENT, triton.next_power_of_2(math.isqrt(n_chunks - 1) + 1))
    return KS, -(-n_chunks // KS)


def _segment_power(G: Tensor, KS: int) -> Tensor:
    """``G^KS`` (H, N, N) for the chains between segments, formed in float64."""
    return torch.linalg.matrix_power(G.double(), KS).float()


def _forward_inputs(ctx):
    """``(u, Z, W_in, W_out, G, x0)`` of this call (the fallback of :class:`ChunkedDenseFn`'s backward)."""
    u, Z, win, wout, G, _, _, x0 = ctx.saved_tensors
    return u, Z, win, wout, G, x0


class ChunkedDenseFn(torch.autograd.Function):
    r"""``y, X_{n-1} = chunked_conv_dense(u; taps, W_in, W_out, G = dA^T, x0)``: the output and the state before
    the last chunk, forward and backward in Triton (module notes for the algorithm; the final state is formed
    from X_{n-1} in PyTorch, :func:`chunked_conv_dense_triton`).

    Inputs: u (B, L, H) fp32; Z (H, T, T) (the taps' Toeplitz matrix), W_in, W_out (H, T, N), G (H, N, N) fp32
    contiguous; x0 (B, H, N) fp32 or None. Outputs y (B, L, H) and X_{n-1} (B, H, N). Extra memory: the chunk
    states X (B, H, L/T, N) (N/T times the size of u; kept for the backward), and in the backward their adjoints
    dS (same size) and the per-program gradient tiles.
    """

    @staticmethod
    def forward(ctx, u, Z, win, wout, G, x0):
        Bsz, L, H = u.shape
        T, N = win.shape[1], win.shape[2]
        n = -(-L // T)
        xs = torch.empty(Bsz, H, n, N, dtype=u.dtype, device=u.device)
        y = torch.empty_like(u)
        x0_ = torch.zeros(Bsz, H, N, dtype=u.dtype, device=u.device) if x0 is None else x0
        rows = H * triton.cdiv(Bsz, BLOCK_B)
        KS, S = segments(n, rows)
        GK = _segment_power(G, KS) if S > 1 else G
        ends = torch.empty(Bsz, H, S, N, dtype=u.dtype, device=u.device) if S > 1 else xs
        if S > 1:
            _carry_config(N, True).launch((rows, S - 1), u, win, G, GK, x0_, ends, xs, Bsz, L, H, N, n, KS)
        _carry_config(N).launch((rows, S), u, win, G, GK, x0_, ends, xs, Bsz, L, H, N, n, KS)
        _out_config(N).launch((H * _row_programs(Bsz * n),), u, Z, wout, xs, y, Bsz, L, H, N, n)
        ctx.save_for_backward(u, Z, win, wout, G, GK, xs, x0)
        ctx.has_x0, ctx.KS = x0 is not None, KS
        ctx.fallback_op = backend.fallback_op()
        return y, xs[:, :, -1].clone()

    @staticmethod
    @backend.first_order
    @backend.backward_with_fallback("ChunkedDenseFn", _forward_inputs)
    def backward(ctx, dy, dlast):
        u, Z, win, wout, G, GK, xs, _ = ctx.saved_tensors
        Bsz, L, H = u.shape
        T, N = win.shape[1], win.shape[2]
        n = -(-L // T)
        f, dev = torch.float32, u.device
        dlast = torch.zeros(Bsz, H, N, dtype=f, device=dev) if dlast is None else contiguous(dlast.to(f))
        dy = torch.zeros_like(u) if dy is None else contiguous(dy.to(f))
        du = torch.empty_like(u)
        ds = torch.empty(Bsz, H, n, N, dtype=f, device=dev)
        dx0 = torch.empty(Bsz, H, N, dtype=f, device=dev)
        rows, KS = H * triton.cdiv(Bsz, BLOCK_B), ctx.KS
        S = -(-n // KS)
        adj = torch.empty(Bsz, H, S, N, dtype=f, device=dev) if S > 1 else ds
        if S > 1:
            _adj_config(N, True).launch((rows, S - 1), dy, wout, G, GK, dlast, adj, ds, dx0, Bsz, L, H, N, n, KS)
        _adj_config(N).launch((rows, S), dy, wout, G, GK, dlast, adj, ds, dx0, Bsz, L, H, N, n, KS)
        _du_config(N).launch((H * _row_programs(Bsz * n),), dy, Z, win, ds, du, Bsz, L, H, N, n)
        if not any(ctx.needs_input_grad[1:5]):
            return du, None, None, None, None, (dx0 if ctx.has_x0 else None)
        P = min(GRAD_PROGRAMS, triton.cdiv(Bsz * n, BLOCK_R))
        dz = torch.empty(P, H, T, T, dtype=f, device=dev)
        dwin = torch.empty(P, H, T, N, dtype=f, device=dev)
        dwout = torch.empty(P, H, T, N, dtype=f, device=dev)
        dg = torch.empty(P, H, N, N, dtype=f, device=dev)
        _grad_config(N).launch((H, P, 4), u, dy, xs, ds, dz, dwin, dwout, dg, Bsz, L, H, N, n)
        return du, dz.sum(0), dwin.sum(0), dwout.sum(0), dg.sum(0), (dx0 if ctx.has_x0 else None)


def chunked_conv_dense_triton(u: Tensor, Z: Tensor, w_in: Tensor, w_out: Tensor, G: Tensor,
                              last_power: Optional[Callable[[], Tensor]] = None,
                              x0: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""The Triton path of :func:`statespaces.kernels.chunked.chunked_conv_dense` from its tables.

    Args:
        u: (B, L, H) float32 (CUDA, or CPU under ``TRITON_INTERPRET=1``). Z (H, T, T) the Toeplitz matrix of
            the taps (``kernels.chunked_conv._toeplitz``; skip folded into lag 0), w_in (H, T, N)
            ``dA^{T-1-t} dB``, w_out (H, T, N) ``c^T dA^{t+1}``, G ``dA^T`` (H, N, N); T = :data:`CHUNK`,
            N <= :data:`MAX_N` (the tables kernel of :mod:`.dense_tables` writes them all).
        last_power: None, or a function returning ``dA^r`` (H, N, N), r the steps of the last chunk: then the
            final state x_L (B, H, N) is returned too (called only then: for r < T it costs a few products).
        x0: (B, H, N) state before the first step, or None.

    Returns:
        y (B, L, H) float32, and x_L if ``last_power`` is given: ``dA^r X_{n-1} + sum_{t<r} W_in[T-r+t] u_t`` over
        the r steps of the last chunk (two small PyTorch products). Differentiable in u, the tables and x0.
    """
    T, N = w_in.shape[-2], w_in.shape[-1]
    if u.dtype != torch.float32 or T != CHUNK or N > MAX_N or Z.shape[-2:] != (T, T):
        raise ValueError(f"chunked_conv_dense_triton: needs float32 u, T = {CHUNK}, Z (H, T, T) and N <= {MAX_N}; "
                         f"got {u.dtype}, T={T}, Z {tuple(Z.shape)}, N={N}")
    f = torch.float32
    Z, w_in, w_out, G = (contiguous(t if t.dtype == f else t.to(f)) for t in (Z, w_in, w_out, G))
    x0_ = None if x0 is None else contiguous(x0.to(f))
    y, x_last = ChunkedDenseFn.apply(contiguous(u), Z, w_in, w_out, G, x0_)
    if last_power is None:
        return y
    L = u.shape[1]
    r = L - (-(-L // T) - 1) * T
    fin = torch.einsum("hnm,bhm->bhn", last_power().to(f), x_last) + \
        torch.einsum("brh,hrn->bhn", u[:, L - r:], w_in[:, T - r:])
    return y, fin
