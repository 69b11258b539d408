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

Backward (:class:`ChunkedConvFn`): not yet a Triton kernel. It recomputes the PyTorch implementation
(:func:`statespaces.kernels.chunked_conv.chunked_conv_torch`, the same algorithm in batched matmuls)
on the saved inputs and differentiates it: ``du``, the initial-state gradient and the gradients of the
small per-channel tables, which autograd maps onto the SSM parameters.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._launch import make, signature, unique

Tensor = torch.Tensor

__all__ = ["ChunkedConvFn", "chunked_conv_triton", "configs"]

#: Chunks per block (rows of the tl.dot products) and the chunk lengths the kernel is compiled for.
#: Register budget (ptxas, sm_90, 8 warps, tf32x3): T=32 uses 214 (BM=16) / 233 (BM=32) registers and no
#: spills; T=64 spills (264 bytes at BM=32, 748 at BM=64), so T=64 is not offered.
BLOCK_C = 16
CHUNKS = (32,)
#: State 2-blocks per channel that one program holds: 16 or 32 (M <= 32; S4D with N=64 has M=32).
MAX_BLOCK_M = 32

_PTRS = ["u_ptr", "taps_ptr", "win_ptr", "wout_ptr", "gpow_ptr", "gr_ptr", "wlast_ptr", "x0_ptr", "y_ptr", "xout_ptr"]
_SIG = signature("*fp32", _PTRS, ["L", "H", "M", "n_chunks", "want_state"])


def _block_m(M: int) -> int:
    return min(MAX_BLOCK_M, max(16, triton.next_power_of_2(M)))


def _config(T: int, M: int):
    return make(__name__, _chunked_fwd_kernel, _SIG, num_warps=8, T=T, BC=BLOCK_C, BM=_block_m(M), PREC="tf32x3")


def configs():
    """Every launch configuration: each chunk length T and state width BM (16 or 32 2-blocks)."""
    return unique([_config(T, M) for T in CHUNKS for M in (16, 32)])


@triton.jit
def _load_g(gp, k, kmask, rm, mm, M, i: tl.constexpr, j: tl.constexpr):
    # block-power table (BC+1, 2, 2, M) of one channel: entry (i, j) of G^k for each mode
    return tl.load(gp + (k * 4 + i * 2 + j) * M + rm, mask=kmask & mm, other=0.0)


@triton.jit
def _chunked_fwd_kernel(
    u_ptr, taps_ptr, win_ptr, wout_ptr, gpow_ptr, gr_ptr, wlast_ptr, x0_ptr, y_ptr, xout_ptr,
    L, H, M, n_chunks, want_state,
    T: tl.constexpr, BC: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    b = pid // H
    h = pid % H
    rt = tl.arange(0, T)
    rc = tl.arange(0, BC)
    rm = tl.arange(0, BM)
    mm = rm < M
    rm2, mm2 = rm[None, :], mm[None, :]
    lag = rt[None, :] - rt[:, None]                                     # Z[s, t] = taps[t - s], t >= s
    tm = rt[:, None] * M + rm2                                          # (T, BM) offsets in (T, M)
    mt = rm[:, None] * T + rt[None, :]                                  # (BM, T) offsets in (M, T)
    w_in = win_ptr + h * 2 * T * M
    w_out = wout_ptr + h * 2 * M * T
    gp = gpow_ptr + h * (BC + 1) * 4 * M
    xs = x0_ptr + (b * H + h) * 2 * M
    c0 = tl.load(xs + rm, mask=mm, other=0.0)                          # carry into the block
    c1 = tl.load(xs + M + rm, mask=mm, other=0.0)
    kc = rc[:, None]
    full = kc >= 0
    for blk in range(0, n_chunks, BC):
        pos = (blk + rc)[:, None] * T + rt[None, :]                     # (BC, T) time index
        pmask = pos < L
        U = tl.load(u_ptr + (b * L + pos) * H + h, mask=pmask, other=0.0)
        Y = tl.dot(U, tl.load(taps_ptr + h * T + lag, mask=lag >= 0, other=0.0), input_precision=PREC)
        S0 = tl.dot(U, tl.load(w_in + tm, mask=mm2, other=0.0), input_precision=PREC)
        S1 = tl.dot(U, tl.load(w_in + T * M + tm, mask=mm2, other=0.0), input_precision=PREC)
        # X[c] = G^c carry + sum_{c' < c} G^{c-1-c'} S[c'];   next carry = G^BC carry + sum G^{BC-1-c'} S[c']
        X0 = (_load_g(gp, kc, full, rm2, mm2, M, 0, 0) * c0[None, :]
              + _load_g(gp, kc, full, rm2, mm2, M, 0, 1) * c1[None, :])
        X1 = (_load_g(gp, kc, full, rm2, mm2, M, 1, 0) * c0[None, :]
              + _load_g(gp, kc, full, rm2, mm2, M, 1, 1) * c1[None, :])
        n0 = _load_g(gp, BC, True, rm, mm, M, 0, 0) * c0 + _load_g(gp, BC, True, rm, mm, M, 0, 1) * c1
        n1 = _load_g(gp, BC, True, rm, mm, M, 1, 0) * c0 + _load_g(gp, BC, True, rm, mm, M, 1, 1) * c1
        for cp in range(BC):
            sel = kc == cp
            s0 = tl.sum(tl.where(sel, S0, 0.0), axis=0)
            s1 = tl.sum(tl.where(sel, S1, 0.0), axis=0)
            kk = kc - 1 - cp
            ok = kk >= 0
            X0 += (_load_g(gp, kk, ok, rm2, mm2, M, 0, 0) * s0[None, :]
                   + _load_g(gp, kk, ok, rm2, mm2, M, 0, 1) * s1[None, :])
            X1 += (_load_g(gp, kk, ok, rm2, mm2, M, 1, 0) * s0[None, :]
                   + _load_g(gp, kk, ok, rm2, mm2, M, 1, 1) * s1[None, :])
            kn = BC - 1 - cp
            n0 += _load_g(gp, kn, True, rm, mm, M, 0, 0) * s0 + _load_g(gp, kn, True, rm, mm, M, 0, 1) * s1
            n1 += _load_g(gp, kn, True, rm, mm, M, 1, 0) * s0 + _load_g(gp, kn, True, rm, mm, M, 1, 1) * s1
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


def _block_powers(G: Tensor, count: int) -> Tensor:
    """``G^k`` for k = 0..count of 2x2 blocks G (H, M, 2, 2), as (H, count+1, 2, 2, M) (in G's dtype)."""
    eye = torch.eye(2, dtype=G.dtype, device=G.device).expand_as(G)
    out, P = [eye], eye
    for _ in range(count):
        P = G @ P
        out.append(P)
    return torch.stack(out, 1).permute(0, 1, 3, 4, 2)


def kernel_tables(taps: Tensor, w_in: Tensor, w_out: Tensor, pow_T: Tensor, pow_r: Tensor, r: int):
    """The layouts the kernel reads, from :class:`~statespaces.kernels.chunked_conv.ChunkTables`
    (differentiable PyTorch ops; fp32): taps (H, T), W_in (H, 2, T, M), W_out (H, 2, M, T),
    G^k (H, BC+1, 2, 2, M), A^r (H, 2, 2, M), W_last (H, 2, T, M)."""
    H, T, S = w_in.shape
    M = S // 2
    f = torch.float32
    win = w_in.reshape(H, T, M, 2).permute(0, 3, 1, 2)
    wout = w_out.reshape(H, T, M, 2).permute(0, 3, 2, 1)
    wlast = torch.nn.functional.pad(win[:, :, T - r:], (0, 0, 0, T - r))
    return (taps.to(f).contiguous(), win.to(f).contiguous(), wout.to(f).contiguous(),
            _block_powers(pow_T, BLOCK_C).to(f).contiguous(), pow_r.permute(0, 2, 3, 1).to(f).contiguous(),
            wlast.to(f).contiguous())


def _launch(u: Tensor, tabs, x0: Optional[Tensor], want_state: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """y (B, L, H) and, if ``want_state``, the final state (B, H, 2, M) from the kernel tables ``tabs``."""
    taps, win, wout, gpow, gr, wlast = tabs
    Bsz, L, H = u.shape
    T, M = win.shape[2], win.shape[3]
    n = -(-L // T)
    y = torch.empty_like(u)
    if x0 is None:
        x0 = torch.zeros(Bsz, H, 2, M, dtype=u.dtype, device=u.device)
    xout = torch.empty(Bsz, H, 2, M, dtype=u.dtype, device=u.device) if want_state else x0
    _config(T, M).launch((Bsz * H,), u, taps, win, wout, gpow, gr, wlast, x0, y, xout, L, H, M, n, int(want_state))
    return y, (xout if want_state else None)


class ChunkedConvFn(torch.autograd.Function):
    r"""``y, x_L = chunked_conv(u, tables, x0)`` with the forward in Triton.

    Backward: recomputes the PyTorch forward (``recompute``:
    :func:`statespaces.kernels.chunked_conv.chunked_conv_torch`, passed in so this module does not import the
    kernels above it) on the saved inputs and differentiates it (exact; the same algorithm in batched matmuls),
    which gives
    ``du``, the initial-state gradient and the table gradients (tiny per-channel tensors that autograd
    then maps onto the SSM parameters).
    """

    @staticmethod
    def forward(ctx, u, taps, w_in, w_out, pow_T, pow_r, x0, want_state, recompute):
        Bsz, L, H = u.shape
        T = w_in.shape[1]
        r = L - (-(-L // T) - 1) * T
        tabs = kernel_tables(taps, w_in, w_out, pow_T, pow_r, r)
        M = w_in.shape[-1] // 2
        s0 = None if x0 is None else x0.reshape(Bsz, H, M, 2).transpose(-1, -2).to(torch.float32).contiguous()
        y, xs = _launch(u.contiguous(), tabs, s0, want_state)
        ctx.save_for_backward(u, taps, w_in, w_out, pow_T, pow_r, x0)
        ctx.want_state, ctx.recompute = want_state, recompute
        state = None if xs is None else xs.transpose(-1, -2).reshape(Bsz, H, 2 * M).to(pow_T.dtype)
        return y, state

    @staticmethod
    def backward(ctx, dy, dstate):
        saved = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(t.requires_grad) if t is not None else None for t in saved]
            u, taps, w_in, w_out, pow_T, pow_r, x0 = inputs
            out = ctx.recompute(u, (taps, w_in, w_out, pow_T, pow_r), x0, ctx.want_state)
            outs, grads = ([out[0], out[1]], [dy, dstate]) if ctx.want_state else ([out], [dy])
            pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
            wrt = [t for t in inputs if t is not None and t.requires_grad]
            got = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
        it = iter(got)
        res = [next(it) if (t is not None and t.requires_grad) else None for t in inputs]
        return (*res, None, None)


def chunked_conv_triton(u: Tensor, tables, state: Optional[Tensor] = None, return_state: bool = False,
                        recompute=None):
    r"""The Triton path of :func:`statespaces.kernels.chunked_conv.chunked_conv`: same arguments
    (u (B, L, H) float32 on CUDA, or on CPU under ``TRITON_INTERPRET=1``; tables with T in
    :data:`CHUNKS` and at most :data:`MAX_BLOCK_M` 2-blocks) and results."""
    T, S = tables.w_in.shape[-2], tables.w_in.shape[-1]
    if T not in CHUNKS or S // 2 > MAX_BLOCK_M or u.dtype != torch.float32:
        raise ValueError(f"chunked_conv_triton: needs float32 u, T in {CHUNKS} and S <= {2 * MAX_BLOCK_M}; "
                         f"got {u.dtype}, T={T}, S={S}")
    if recompute is None:
        raise ValueError("chunked_conv_triton: give recompute, the PyTorch forward its backward differentiates "
                         "(statespaces.kernels.chunked_conv passes chunked_conv_torch)")
    y, s = ChunkedConvFn.apply(u, *tables, state, return_state, recompute)
    return (y, s) if return_state else y
