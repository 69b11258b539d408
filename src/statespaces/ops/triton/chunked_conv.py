r"""Chunked LTI convolution in Triton (the algorithm of :mod:`statespaces.kernels.chunked_conv`).

One program per (batch row b, channel h) walks the sequence in blocks of ``BC`` chunks of ``T``
steps, reading u and writing y in their (B, L, H) layout (``u[b, l, h]`` at ``(b L + l) H + h``). Per
block, with U the (BC, T) input rows of the BC chunks:

* near field ``U @ Z`` with the (T, T) Toeplitz matrix ``Z[s, t] = k_{t-s}`` (built from the taps);
* chunk sums ``S_j = U @ W_in_j`` (j = 0, 1: the two components of each 2-block of the state);
* states before each chunk ``X[c] = G^c x + sum_{c'<c} G^{c-1-c'} S[c']`` with ``G = A^T`` as 2x2
  blocks, from a table of block powers ``G^k`` (k <= BC, formed in float64 on the host and rounded):
  BC rank-one updates in registers; the carry into the next block is ``G^BC x + sum G^{BC-1-c'} S[c']``;
* far field ``X_0 @ W_out_0 + X_1 @ W_out_1`` added to the near field.

The three products are ``tl.dot`` at ``input_precision="tf32x3"`` (fp32-faithful on tensor cores).
The final state (for ``return_state``) is ``A^r X[last] + sum_t W_last[t] u_t`` over the r steps of the
last chunk. The carry between blocks is fp32 (one rounded ``G^BC`` per BC chunks).

With ``want_carry`` the forward also saves the state before each chunk, X (B, H, n_chunks, 2, M),
for the backward.

Backward (:class:`ChunkedConvFn`): :func:`_chunked_bwd_kernel`, one program per (b, h), walks the
blocks in reverse: it forms ``dX = dY W_out^T`` and the chunk-sum adjoints dS by the transposed carry
(the same block-power table read transposed, BC rank-one updates; the adjoint ``mu`` of the carry passes
to the previous block), writes ``du = dY Z^T + dS_0 W_in0^T + dS_1 W_in1^T`` (the transposed near-field
Toeplitz plus the reverse-chunk carry; ``tl.dot`` in tf32x3) and saves dS (B, H, n_chunks, 2, M).
:func:`_chunked_grad_kernel` then accumulates the per-channel table gradients (``U^T dY``, ``U^T dS``,
``X^T dY``, ``sum dS X^T``) per (b, h) in registers from u, dY, dS and X; PyTorch sums them over b.
The reverse carry, like the forward one, is fp32. If these kernels fail to compile or launch under the fallback
policy, the gradients come from :func:`statespaces.kernels.chunked_conv.chunked_conv_torch` (the twin that module
registers; :func:`statespaces.backend.backward_with_fallback`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple, Union

import torch
import triton
import triton.language as tl

from ... import backend
from ._launch import make, signature, unique

if TYPE_CHECKING:
    from ._launch import Config

Tensor = torch.Tensor

__all__ = ["ChunkedConvFn", "chunked_conv_triton", "configs"]

#: Chunks per block (rows of the tl.dot products) and the chunk lengths the kernel is compiled for.
#: Register budget (ptxas, sm_90, 8 warps, tf32x3): T=32 uses 222 (BM=16) / 240 (BM=32) registers and no
#: spills; T=64 spills (264 bytes at BM=32, 748 at BM=64), so T=64 is not offered. Backward at T=32
#: (sm_80 / sm_90): ``_chunked_bwd_kernel`` 210/203 (BM=16), 238/235 (BM=32); ``_chunked_grad_kernel``
#: 97/98, 166/168; no spills (one fused backward kernel used 255 and spilled 56-1224 bytes).
BLOCK_C = 16
CHUNKS = (32,)
#: State 2-blocks per channel that one program holds: 16 or 32 (M <= 32; S4D with N=64 has M=32).
MAX_BLOCK_M = 32

_PTRS = ["u_ptr", "taps_ptr", "win_ptr", "wout_ptr", "gpow_ptr", "gr_ptr", "wlast_ptr", "x0_ptr", "y_ptr", "xout_ptr",
         "xs_ptr"]
_SIG = signature("*fp32", _PTRS, ["L", "H", "M", "n_chunks", "want_state", "want_carry"])
_BWD_PTRS = ["dy_ptr", "taps_ptr", "win_ptr", "wout_ptr", "gpow_ptr", "gr_ptr", "wlast_ptr", "df_ptr", "du_ptr",
             "ds_ptr", "dx0_ptr"]
_BWD_SIG = signature("*fp32", _BWD_PTRS, ["L", "H", "M", "n_chunks"])
_GRAD_PTRS = ["u_ptr", "dy_ptr", "xs_ptr", "ds_ptr", "dz_ptr", "dwin_ptr", "dwout_ptr", "dg_ptr"]
_GRAD_SIG = signature("*fp32", _GRAD_PTRS, ["L", "H", "M", "n_chunks"])


def _block_m(M: int) -> int:
    return min(MAX_BLOCK_M, max(16, triton.next_power_of_2(M)))


def _config(T: int, M: int):
    return make(__name__, _chunked_fwd_kernel, _SIG, num_warps=8, T=T, BC=BLOCK_C, BM=_block_m(M), PREC="tf32x3")


def _bwd_config(T: int, M: int):
    return make(__name__, _chunked_bwd_kernel, _BWD_SIG, num_warps=8, T=T, BC=BLOCK_C, BM=_block_m(M),
                PREC="tf32x3")


def _grad_config(T: int, M: int):
    return make(__name__, _chunked_grad_kernel, _GRAD_SIG, num_warps=8, T=T, BC=BLOCK_C, BM=_block_m(M),
                PREC="tf32x3")


def configs() -> List["Config"]:
    """Every launch configuration: each chunk length T and state width BM (16 or 32 2-blocks), forward
    and backward."""
    return unique([f(T, M) for f in (_config, _bwd_config, _grad_config) for T in CHUNKS for M in (16, 32)])


@triton.jit
def _load_g(gp, k, kmask, rm, mm, M, i: tl.constexpr, j: tl.constexpr):
    # block-power table (BC+1, 2, 2, M) of one channel: entry (i, j) of G^k for each mode
    return tl.load(gp + (k * 4 + i * 2 + j) * M + rm, mask=kmask & mm, other=0.0)


@triton.jit
def _gmv(gp, k, kmask, rm, mm, M, v0, v1, TRANS: tl.constexpr):
    # (G^k v) per mode for v = (v0, v1), or (G^k)^T v with TRANS (the backward's transposed carry)
    if TRANS:
        a = _load_g(gp, k, kmask, rm, mm, M, 0, 0) * v0 + _load_g(gp, k, kmask, rm, mm, M, 1, 0) * v1
        b = _load_g(gp, k, kmask, rm, mm, M, 0, 1) * v0 + _load_g(gp, k, kmask, rm, mm, M, 1, 1) * v1
    else:
        a = _load_g(gp, k, kmask, rm, mm, M, 0, 0) * v0 + _load_g(gp, k, kmask, rm, mm, M, 0, 1) * v1
        b = _load_g(gp, k, kmask, rm, mm, M, 1, 0) * v0 + _load_g(gp, k, kmask, rm, mm, M, 1, 1) * v1
    return a, b


@triton.jit
def _program(H, M, T: tl.constexpr, BC: tl.constexpr, BM: tl.constexpr):
    # the (batch row b, channel h) of a sequential program, channel fastest: index ranges over the steps of
    # a chunk (rt), the chunks of a block (rc) and the 2-blocks of the state (rm), with the state mask mm
    pid = tl.program_id(0).to(tl.int64)
    rm = tl.arange(0, BM)
    return pid // H, pid % H, tl.arange(0, T), tl.arange(0, BC), rm, rm < M


@triton.jit
def _tables(win_ptr, wout_ptr, gpow_ptr, h, M, T: tl.constexpr, BC: tl.constexpr):
    # channel h's tables: W_in (2, T, M), W_out (2, M, T) and the block powers (BC + 1, 4, M)
    return win_ptr + h * 2 * T * M, wout_ptr + h * 2 * M * T, gpow_ptr + h * (BC + 1) * 4 * M


@triton.jit
def _tile(blk, rc, rt, L, T: tl.constexpr):
    # time indices (BC, T) of the chunks blk .. blk + BC - 1 and their mask (inside the sequence)
    pos = (blk + rc)[:, None] * T + rt[None, :]
    return pos, pos < L


@triton.jit
def _chunked_fwd_kernel(
    u_ptr, taps_ptr, win_ptr, wout_ptr, gpow_ptr, gr_ptr, wlast_ptr, x0_ptr, y_ptr, xout_ptr, xs_ptr,
    L, H, M, n_chunks, want_state, want_carry,
    T: tl.constexpr, BC: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
):
    b, h, rt, rc, rm, mm = _program(H, M, T, BC, BM)
    rm2, mm2 = rm[None, :], mm[None, :]
    lag = rt[None, :] - rt[:, None]                                     # Z[s, t] = taps[t - s], t >= s
    tm = rt[:, None] * M + rm2                                          # (T, BM) offsets in (T, M)
    mt = rm[:, None] * T + rt[None, :]                                  # (BM, T) offsets in (M, T)
    w_in, w_out, gp = _tables(win_ptr, wout_ptr, gpow_ptr, h, M, T, BC)
    xs = x0_ptr + (b * H + h) * 2 * M
    c0 = tl.load(xs + rm, mask=mm, other=0.0)                          # carry into the block
    c1 = tl.load(xs + M + rm, mask=mm, other=0.0)
    kc = rc[:, None]
    full = kc >= 0
    for blk in range(0, n_chunks, BC):
        pos, pmask = _tile(blk, rc, rt, L, T)                            # (BC, T) time indices
        U = tl.load(u_ptr + (b * L + pos) * H + h, mask=pmask, other=0.0)
        Y = tl.dot(U, tl.load(taps_ptr + h * T + lag, mask=lag >= 0, other=0.0), input_precision=PREC)
        S0 = tl.dot(U, tl.load(w_in + tm, mask=mm2, other=0.0), input_precision=PREC)
        S1 = tl.dot(U, tl.load(w_in + T * M + tm, mask=mm2, other=0.0), input_precision=PREC)
        # X[c] = G^c carry + sum_{c' < c} G^{c-1-c'} S[c'];   next carry = G^BC carry + sum G^{BC-1-c'} S[c']
        X0, X1 = _gmv(gp, kc, full, rm2, mm2, M, c0[None, :], c1[None, :], False)
        n0, n1 = _gmv(gp, BC, True, rm, mm, M, c0, c1, False)
        for cp in range(BC):
            sel = kc == cp
            s0 = tl.sum(tl.where(sel, S0, 0.0), axis=0)
            s1 = tl.sum(tl.where(sel, S1, 0.0), axis=0)
            kk = kc - 1 - cp
            ok = kk >= 0
            x0, x1 = _gmv(gp, kk, ok, rm2, mm2, M, s0[None, :], s1[None, :], False)
            X0 += x0
            X1 += x1
            x0, x1 = _gmv(gp, BC - 1 - cp, True, rm, mm, M, s0, s1, False)
            n0 += x0
            n1 += x1
        if want_carry != 0:                                             # the chunk states, for the backward
            xc = xs_ptr + (((b * H + h) * n_chunks + blk + kc) * 2) * M + rm2
            cm = ((blk + kc) < n_chunks) & mm2
            tl.store(xc, X0, mask=cm)
            tl.store(xc + M, X1, mask=cm)
        Y += tl.dot(X0, tl.load(w_out + mt, mask=mm[:, None], other=0.0), input_precision=PREC)
        Y += tl.dot(X1, tl.load(w_out + M * T + mt, mask=mm[:, None], other=0.0), input_precision=PREC)
        tl.store(y_ptr + (b * L + pos) * H + h, Y, mask=pmask)
        last = n_chunks - 1 - blk                                       # row of the last chunk, if in this block
        if want_state != 0 and last < BC:
            # final state A^r X[last] + sum_t W_last[t] u_t over the r steps of the last chunk
            sel = kc == last
            xl0 = tl.sum(tl.where(sel, X0, 0.0), axis=0)
            xl1 = tl.sum(tl.where(sel, X1, 0.0), axis=0)
            ul = tl.sum(tl.where(sel, U, 0.0), axis=0)[:, None]         # (T, 1)
            grp = gr_ptr + h * 4 * M
            wl = wlast_ptr + h * 2 * T * M
            f0 = (tl.load(grp + rm, mask=mm, other=0.0) * xl0 + tl.load(grp + M + rm, mask=mm, other=0.0) * xl1
                  + tl.sum(ul * tl.load(wl + tm, mask=mm2, other=0.0), axis=0))
            f1 = (tl.load(grp + 2 * M + rm, mask=mm, other=0.0) * xl0
                  + tl.load(grp + 3 * M + rm, mask=mm, other=0.0) * xl1
                  + tl.sum(ul * tl.load(wl + T * M + tm, mask=mm2, other=0.0), axis=0))
            xo = xout_ptr + (b * H + h) * 2 * M
            tl.store(xo + rm, f0, mask=mm)
            tl.store(xo + M + rm, f1, mask=mm)
        c0 = n0
        c1 = n1


@triton.jit
def _chunked_bwd_kernel(
    dy_ptr, taps_ptr, win_ptr, wout_ptr, gpow_ptr, gr_ptr, wlast_ptr, df_ptr, du_ptr, ds_ptr, dx0_ptr,
    L, H, M, n_chunks,
    T: tl.constexpr, BC: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
):
    # Reverse pass over the blocks of one (b, h): du, the chunk-sum adjoints dS (B, H, n, 2, M) and dx0.
    b, h, rt, rc, rm, mm = _program(H, M, T, BC, BM)
    rm2, mm2 = rm[None, :], mm[None, :]
    lag_t = rt[:, None] - rt[None, :]                                   # Z^T[t, s] = taps[t - s], t >= s
    tm = rt[:, None] * M + rm2                                          # (T, BM): W[t, m] in (T, M)
    mt_in = rm[:, None] + rt[None, :] * M                               # (BM, T): W_in^T[m, t] = W_in[t, m]
    tm_out = rt[:, None] + rm2 * T                                      # (T, BM): W_out^T[t, m] = W_out[m, t]
    w_in, w_out, gp = _tables(win_ptr, wout_ptr, gpow_ptr, h, M, T, BC)
    bh = b * H + h
    kc = rc[:, None]
    full = kc >= 0
    # final-state gradient dF: (A^r)^T dF reaches the state before the last chunk, W_last dF its inputs
    f0 = tl.load(df_ptr + bh * 2 * M + rm, mask=mm, other=0.0)
    f1 = tl.load(df_ptr + bh * 2 * M + M + rm, mask=mm, other=0.0)
    grp = gr_ptr + h * 4 * M
    e0 = tl.load(grp + rm, mask=mm, other=0.0) * f0 + tl.load(grp + 2 * M + rm, mask=mm, other=0.0) * f1
    e1 = tl.load(grp + M + rm, mask=mm, other=0.0) * f0 + tl.load(grp + 3 * M + rm, mask=mm, other=0.0) * f1
    wl = wlast_ptr + h * 2 * T * M
    v = (tl.sum(tl.load(wl + tm, mask=mm2, other=0.0) * f0[None, :], axis=1)
         + tl.sum(tl.load(wl + T * M + tm, mask=mm2, other=0.0) * f1[None, :], axis=1))      # (T,)
    mu0 = tl.zeros([BM], dtype=tl.float32)                              # adjoint of the carry out of the block
    mu1 = tl.zeros([BM], dtype=tl.float32)
    n_blk = tl.cdiv(n_chunks, BC)
    for i in range(0, n_blk):
        blk = (n_blk - 1 - i) * BC
        pos, pmask = _tile(blk, rc, rt, L, T)                            # (BC, T) time indices
        dY = tl.load(dy_ptr + (b * L + pos) * H + h, mask=pmask, other=0.0)
        # dX = dY W_out^T, plus (A^r)^T dF on the row of the last chunk
        on_last = kc == n_chunks - 1 - blk
        dX0 = tl.dot(dY, tl.load(w_out + tm_out, mask=mm2, other=0.0), input_precision=PREC)
        dX1 = tl.dot(dY, tl.load(w_out + M * T + tm_out, mask=mm2, other=0.0), input_precision=PREC)
        dX0 += tl.where(on_last, e0[None, :], 0.0)
        dX1 += tl.where(on_last, e1[None, :], 0.0)
        # transposed carry: dS[c] = sum_{c' > c} (G^{c'-1-c})^T dX[c'] + (G^{BC-1-c})^T mu,
        # adjoint of the carry into the block = sum_{c'} (G^{c'})^T dX[c'] + (G^BC)^T mu
        kb = BC - 1 - kc
        dS0, dS1 = _gmv(gp, kb, full, rm2, mm2, M, mu0[None, :], mu1[None, :], True)
        n0, n1 = _gmv(gp, BC, True, rm, mm, M, mu0, mu1, True)
        for cp in range(BC):
            sel = kc == cp
            d0 = tl.sum(tl.where(sel, dX0, 0.0), axis=0)
            d1 = tl.sum(tl.where(sel, dX1, 0.0), axis=0)
            kk = cp - 1 - kc
            x0, x1 = _gmv(gp, kk, kk >= 0, rm2, mm2, M, d0[None, :], d1[None, :], True)
            dS0 += x0
            dS1 += x1
            x0, x1 = _gmv(gp, cp, True, rm, mm, M, d0, d1, True)
            n0 += x0
            n1 += x1
        xc = ds_ptr + (bh * n_chunks + blk + kc) * 2 * M + rm2
        cm = ((blk + kc) < n_chunks) & mm2
        tl.store(xc, dS0, mask=cm)
        tl.store(xc + M, dS1, mask=cm)
        # du = dY Z^T + dS W_in^T (+ W_last dF on the last chunk)
        dU = tl.dot(dY, tl.load(taps_ptr + h * T + lag_t, mask=lag_t >= 0, other=0.0), input_precision=PREC)
        dU += tl.dot(dS0, tl.load(w_in + mt_in, mask=mm[:, None], other=0.0), input_precision=PREC)
        dU += tl.dot(dS1, tl.load(w_in + T * M + mt_in, mask=mm[:, None], other=0.0), input_precision=PREC)
        dU += tl.where(on_last, v[None, :], 0.0)
        tl.store(du_ptr + (b * L + pos) * H + h, dU, mask=pmask)
        mu0 = n0
        mu1 = n1
    tl.store(dx0_ptr + bh * 2 * M + rm, mu0, mask=mm)
    tl.store(dx0_ptr + bh * 2 * M + M + rm, mu1, mask=mm)


@triton.jit
def _chunked_grad_kernel(
    u_ptr, dy_ptr, xs_ptr, ds_ptr, dz_ptr, dwin_ptr, dwout_ptr, dg_ptr,
    L, H, M, n_chunks,
    T: tl.constexpr, BC: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
):
    # Table gradients of one (b, h), summed over its chunks; program (bh, j): j = 0, 1 the state component
    # (U^T dS_j, X_j^T dY and row j of sum_c dS[c] X[c]^T), j = 2 the near field U^T dY.
    b, h, rt, rc, rm, mm = _program(H, M, T, BC, BM)
    j = tl.program_id(1)
    rm2, mm2 = rm[None, :], mm[None, :]
    bh = b * H + h
    kc = rc[:, None]
    if j == 2:
        dZ = tl.zeros([T, T], dtype=tl.float32)
        for blk in range(0, n_chunks, BC):
            pos, pmask = _tile(blk, rc, rt, L, T)                            # (BC, T) time indices
            Ut = tl.trans(tl.load(u_ptr + (b * L + pos) * H + h, mask=pmask, other=0.0))
            dY = tl.load(dy_ptr + (b * L + pos) * H + h, mask=pmask, other=0.0)
            dZ += tl.dot(Ut, dY, input_precision=PREC)
        tl.store(dz_ptr + bh * T * T + rt[:, None] * T + rt[None, :], dZ)
    else:
        dWi = tl.zeros([T, BM], dtype=tl.float32)
        dWo = tl.zeros([BM, T], dtype=tl.float32)
        g0 = tl.zeros([BM], dtype=tl.float32)
        g1 = tl.zeros([BM], dtype=tl.float32)
        for blk in range(0, n_chunks, BC):
            pos, pmask = _tile(blk, rc, rt, L, T)                            # (BC, T) time indices
            Ut = tl.trans(tl.load(u_ptr + (b * L + pos) * H + h, mask=pmask, other=0.0))
            dY = tl.load(dy_ptr + (b * L + pos) * H + h, mask=pmask, other=0.0)
            off = (bh * n_chunks + blk + kc) * 2 * M + rm2
            cm = ((blk + kc) < n_chunks) & mm2
            X0 = tl.load(xs_ptr + off, mask=cm, other=0.0)
            X1 = tl.load(xs_ptr + off + M, mask=cm, other=0.0)
            Xj = tl.where(j == 0, X0, X1)
            dSj = tl.load(ds_ptr + off + j * M, mask=cm, other=0.0)
            dWi += tl.dot(Ut, dSj, input_precision=PREC)
            dWo += tl.dot(tl.trans(Xj), dY, input_precision=PREC)
            g0 += tl.sum(dSj * X0, axis=0)                               # row j of dG = sum_c dS[c] X[c]^T
            g1 += tl.sum(dSj * X1, axis=0)
        tl.store(dwin_ptr + (bh * 2 + j) * T * M + rt[:, None] * M + rm2, dWi, mask=mm2)
        tl.store(dwout_ptr + (bh * 2 + j) * M * T + rm[:, None] * T + rt[None, :], dWo, mask=mm[:, None])
        dg = dg_ptr + (bh * 2 + j) * 2 * M
        tl.store(dg + rm, g0, mask=mm)
        tl.store(dg + M + rm, g1, mask=mm)


def _block_powers(G: Tensor, count: int) -> Tensor:
    """``G^k`` for k = 0..count of 2x2 blocks G (H, M, 2, 2), as (H, count+1, 2, 2, M) (in G's dtype)."""
    eye = torch.eye(2, dtype=G.dtype, device=G.device).expand_as(G)
    out, P = [eye], eye
    for _ in range(count):
        P = G @ P
        out.append(P)
    return torch.stack(out, 1).permute(0, 1, 3, 4, 2)


def kernel_layouts(taps: Tensor, w_in: Tensor, w_out: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The layouts the kernels read, from the :class:`~statespaces.kernels.chunked_conv.ChunkTables` entries
    (differentiable PyTorch ops; fp32): taps (H, T), W_in (H, 2, T, M), W_out (H, 2, M, T)."""
    H, T, S = w_in.shape
    M = S // 2
    f = torch.float32
    win = w_in.reshape(H, T, M, 2).permute(0, 3, 1, 2)
    wout = w_out.reshape(H, T, M, 2).permute(0, 3, 2, 1)
    return taps.to(f).contiguous(), win.to(f).contiguous(), wout.to(f).contiguous()


def _fixed_tables(win: Tensor, pow_T: Tensor, pow_r: Tensor, r: int) -> Tuple[Tensor, Tensor, Tensor]:
    """G^k (H, BC+1, 2, 2, M) (formed in the dtype of ``pow_T``, then rounded), A^r (H, 2, 2, M) and
    W_last (H, 2, T, M) (the last r rows of W_in, zero-padded), fp32."""
    T = win.shape[2]
    f = torch.float32
    wlast = torch.nn.functional.pad(win[:, :, T - r:], (0, 0, 0, T - r))
    return (_block_powers(pow_T, BLOCK_C).to(f).contiguous(), pow_r.permute(0, 2, 3, 1).to(f).contiguous(),
            wlast.contiguous())


def _last_chunk(L: int, T: int) -> Tuple[int, int]:
    """(number of chunks n, steps r of the last one)."""
    n = -(-L // T)
    return n, L - (n - 1) * T


def table_layouts(win: Tensor, wout: Tensor, x0: Optional[Tensor]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The inverse of :func:`kernel_layouts` (views, differentiable): W_in, W_out (H, T, S) of the
    :class:`~statespaces.kernels.chunked_conv.ChunkTables` from W_in (H, 2, T, M), W_out (H, 2, M, T), and a
    state (B, H, S) from x0 (B, H, 2, M) (None stays None)."""
    H, _, T, M = win.shape
    state = None if x0 is None else x0.transpose(-1, -2).reshape(x0.shape[0], H, 2 * M)
    return win.permute(0, 2, 3, 1).reshape(H, T, 2 * M), wout.permute(0, 3, 2, 1).reshape(H, T, 2 * M), state


def _forward_inputs(ctx):
    """This call's forward arguments (the fallback of :class:`ChunkedConvFn`'s backward)."""
    u, taps, win, wout, *_, pow_T, pow_r, x0 = ctx.saved_tensors
    return u, taps, win, wout, pow_T, pow_r, x0, ctx.want_state


class ChunkedConvFn(torch.autograd.Function):
    r"""``y, x_L = chunked_conv(u, taps, W_in, W_out, A^T, A^r, x0)``, forward and backward in Triton.

    Inputs in the kernels' layouts (:func:`kernel_layouts`): u (B, L, H) fp32, taps (H, T), W_in (H, 2, T, M),
    W_out (H, 2, M, T) fp32; ``pow_T``, ``pow_r`` (H, M, 2, 2) in any float dtype (the carry table is formed
    in it); x0 (B, H, 2, M) fp32 or None. Outputs y (B, L, H) and, if ``want_state``, x_L (B, H, 2, M) fp32.

    Backward, two kernels: :func:`_chunked_bwd_kernel` (one program per (b, h)) walks the blocks in reverse
    and writes ``du = dY Z^T + dS W_in^T`` with ``dX = dY W_out^T`` and the chunk-sum adjoints
    ``dS[c] = sum_{c'>c} (G^{c'-1-c})^T dX[c']`` (the transpose of the forward's carry, passed backwards between
    blocks), saving dS; :func:`_chunked_grad_kernel` (three programs per (b, h): the two state components
    and the near field) then forms the per-(b, h) table gradients from u, dY,
    the chunk states X the forward saved, and dS: ``dZ = U^T dY`` (folded onto the taps by lag),
    ``dW_in = U^T dS``, ``dW_out = X^T dY``, ``dG = sum_c dS[c] X[c]^T``; they are summed over b here, with
    ``dA^r = dF X_last^T`` and ``dW_last = u_last dF^T`` (onto the last r rows of W_in). Two kernels, not
    one: together they exceed 255 registers and spill. Extra memory: X and dS, (B, H, L/T, 2, M) each
    (2 M / T times the size of u), and (B, H) copies of the (T, T + 4 M) gradient tiles.
    """

    @staticmethod
    def forward(ctx, u, taps, win, wout, pow_T, pow_r, x0, want_state):
        Bsz, L, H = u.shape
        T, M = win.shape[2], win.shape[3]
        n, r = _last_chunk(L, T)
        gpow, gr, wlast = _fixed_tables(win, pow_T, pow_r, r)
        train = any(ctx.needs_input_grad)
        xs = torch.empty(Bsz, H, n, 2, M, dtype=u.dtype, device=u.device) if train else u
        y = torch.empty_like(u)
        x0_ = torch.zeros(Bsz, H, 2, M, dtype=u.dtype, device=u.device) if x0 is None else x0.contiguous()
        xout = torch.empty(Bsz, H, 2, M, dtype=u.dtype, device=u.device) if want_state else x0_
        _config(T, M).launch((Bsz * H,), u, taps, win, wout, gpow, gr, wlast, x0_, y, xout, xs,
                             L, H, M, n, int(want_state), int(train))
        ctx.save_for_backward(u, taps, win, wout, gpow, gr, wlast, xs, pow_T, pow_r, x0)
        ctx.block_c, ctx.want_state, ctx.has_x0 = BLOCK_C, want_state, x0 is not None
        ctx.fallback_op = backend.fallback_op()
        return y, (xout if want_state else None)

    @staticmethod
    @backend.first_order
    @backend.backward_with_fallback("ChunkedConvFn", _forward_inputs)
    def backward(ctx, dy, dstate):
        u, taps, win, wout, gpow, gr, wlast, xs, pow_T, pow_r, _ = ctx.saved_tensors
        Bsz, L, H = u.shape
        T, M = win.shape[2], win.shape[3]
        n, r = _last_chunk(L, T)
        f, dev = torch.float32, u.device
        df = (torch.zeros(Bsz, H, 2, M, dtype=f, device=dev) if dstate is None
              else dstate.to(f).contiguous())
        if ctx.block_c != BLOCK_C:
            raise RuntimeError(f"chunked_conv_triton: BLOCK_C changed from {ctx.block_c} to {BLOCK_C} between "
                               "forward and backward")
        dy = dy.contiguous()
        du = torch.empty_like(u)
        ds = torch.empty_like(xs)
        dx0 = torch.empty(Bsz, H, 2, M, dtype=f, device=dev)
        _bwd_config(T, M).launch((Bsz * H,), dy, taps, win, wout, gpow, gr, wlast, df, du, ds, dx0, L, H, M, n)
        if not any(ctx.needs_input_grad[1:6]):
            return (du, None, None, None, None, None, dx0 if ctx.has_x0 else None, None)
        dz = torch.empty(Bsz, H, T, T, dtype=f, device=dev)
        dwin = torch.empty(Bsz, H, 2, T, M, dtype=f, device=dev)
        dwout = torch.empty(Bsz, H, 2, M, T, dtype=f, device=dev)
        dg = torch.empty(Bsz, H, 2, 2, M, dtype=f, device=dev)
        _grad_config(T, M).launch((Bsz * H, 3), u, dy, xs, ds, dz, dwin, dwout, dg, L, H, M, n)
        lag = torch.arange(T, device=dev)
        lag = lag[None, :] - lag[:, None]
        # entries above the diagonal (negative lags) go to a discarded bin T: a boolean-mask gather
        # (``lag[lag >= 0]``) has a data-dependent size and would synchronise with the host on CUDA
        bins = torch.where(lag >= 0, lag, T).flatten()
        dtaps = torch.zeros(H, T + 1, dtype=f, device=dev).index_add_(1, bins, dz.sum(0).reshape(H, T * T))[:, :T]
        dwin = dwin.sum(0)
        u_last = u[:, (n - 1) * T:]                                          # (B, r, H)
        dwin[:, :, T - r:] += torch.einsum("brh,bhjm->hjrm", u_last, df)     # W_last = the last r rows of W_in
        dpow_T = dg.sum(0).permute(0, 3, 1, 2).to(pow_T.dtype)               # (H, M, 2, 2)
        dpow_r = torch.einsum("bhim,bhkm->hmik", df, xs[:, :, -1]).to(pow_r.dtype) if dstate is not None else None
        return (du, dtaps, dwin, dwout.sum(0), dpow_T, dpow_r, dx0 if ctx.has_x0 else None, None)


def chunked_conv_triton(u: Tensor, tables, state: Optional[Tensor] = None,
                        return_state: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""The Triton path of :func:`statespaces.kernels.chunked_conv.chunked_conv`: same arguments
    (u (B, L, H) float32 on CUDA, or on CPU under ``TRITON_INTERPRET=1``; tables with T in
    :data:`CHUNKS` and at most :data:`MAX_BLOCK_M` 2-blocks) and results; differentiable (Triton backward)."""
    T, S = tables.w_in.shape[-2], tables.w_in.shape[-1]
    if T not in CHUNKS or S // 2 > MAX_BLOCK_M or u.dtype != torch.float32:
        raise ValueError(f"chunked_conv_triton: needs float32 u, T in {CHUNKS} and S <= {2 * MAX_BLOCK_M}; "
                         f"got {u.dtype}, T={T}, S={S}")
    Bsz, L, H = u.shape
    M = S // 2
    taps, win, wout = kernel_layouts(tables.taps, tables.w_in, tables.w_out)
    x0 = None if state is None else state.reshape(Bsz, H, M, 2).transpose(-1, -2).to(torch.float32).contiguous()
    y, xs = ChunkedConvFn.apply(u.contiguous(), taps, win, wout, tables.pow_T, tables.pow_r, x0, return_state)
    if not return_state:
        return y
    return y, xs.transpose(-1, -2).reshape(Bsz, H, S).to(tables.pow_T.dtype)
