r"""Projected chunked convolution: input projection -> chunked LTI convolution -> output projection (+ skip)
as one autograd node (LinOSS's stateless CPU path; thesis §2.3.3 with the MIMO projections of seed 001).

For u (B, L, H), an input map ``W_in`` (C, H), C real columns each a small LTI system described by
:class:`~statespaces.kernels.chunked_conv.ChunkTables` (chunks of T steps), an output map ``W_out`` (H, C) and
a skip D (H,):

    v = u W_in^T  (B, L, C),    y = k * v  (each column by its own kernel),    out = y W_out^T + D u.

:func:`chunked_conv_projected_ref` is the twin built from the unfused ops (:class:`ProjectT`,
:func:`~statespaces.kernels.chunked_conv.chunked_conv` in the channels-first layout, :class:`ReadoutT`, each its
own autograd node). :func:`chunked_conv_projected` is one :class:`torch.autograd.Function` with a hand-written
backward, for stateless calls with L a multiple of T:

* the products run batch group by batch group (:func:`batch_groups`, each group's (C, B_g L) buffers at most
  :data:`GROUP_ELEMENTS` entries), as matmuls on contiguous buffers: projection ``W_in u_g^T`` (C, B_g L), Toeplitz
  product and chunk sums (batched over C), then -- after the float64 carry over the whole batch
  (:func:`~statespaces.kernels.chunked_conv.carry_rows`: blocked, in the chunk-row layout, for one 2x2 block per
  column as LinOSS has) -- the far field added in place and the readout written straight into the output rows of
  the group (skip added in place);
* the backward mirrors it: per group ``dy_g = W_out^T g_g^T`` (g copied into one group-sized buffer when it is not
  contiguous), the far-field and Toeplitz adjoints, then the carry adjoint
  (:func:`~statespaces.kernels.chunked_conv.carry_rows_adjoint`) and per group the chunk-sum adjoint, ``du_g``
  written into its rows and the weight gradients accumulated in place.

No (B, L, C) projected input or its gradient is made as one tensor, and no buffer larger than a group is
allocated besides the output and the saved groups. Why groups: a fresh tensor above glibc's largest mmap
threshold (32 MiB) is mapped and faulted in page by page on every call; at B=8, L=8192, C=128 each (C, B L)
float32 buffer is 33.5 MB, and those page faults took about as long as the products (measured, one CPU thread).
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union, cast

import torch

from .. import backend
from ..ops._amp import autocast_off
from .chunked_conv import (
    ChunkTables,
    _toeplitz,
    _toeplitz_adjoint,
    carry_rows,
    carry_rows_adjoint,
    chunked_conv,
)

Tensor = torch.Tensor

__all__ = ["GROUP_ELEMENTS", "ProjectT", "ReadoutT", "batch_groups", "chunked_conv_projected",
           "chunked_conv_projected_ref", "fits_projected"]

#: Most entries of one group's (C, B_g L) buffer (4 MiB in float32): well under glibc's 32 MiB mmap threshold,
#: and small enough that a group's projection, Toeplitz product and readout share the cache better.
GROUP_ELEMENTS = 1 << 20


class ProjectT(torch.autograd.Function):
    r"""``W x^T``: x (R, H), W (O, H) -> (O, R), in the layout that the chunk products read; backward
    ``dx = g^T W`` (R, H) and ``dW = g x``, each one GEMM with a transposed operand (no copy)."""

    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor) -> Tensor:
        ctx.save_for_backward(x, W)
        return torch.mm(W, x.t())

    @staticmethod
    @backend.first_order
    def backward(ctx, g: Tensor):
        x, W = ctx.saved_tensors
        dx = torch.mm(g.t(), W) if ctx.needs_input_grad[0] else None
        dW = torch.mm(g, x) if ctx.needs_input_grad[1] else None
        return dx, dW


class ReadoutT(torch.autograd.Function):
    r"""``y^T W^T``: y (O, R) in the chunk layout, W (H, O) -> (R, H); backward ``dy = W^T g^T`` (O, R), in
    the chunk layout again (the chunk products' backward then reads it without a copy), and ``dW = g^T y^T``."""

    @staticmethod
    def forward(ctx, y: Tensor, W: Tensor) -> Tensor:
        ctx.save_for_backward(y, W)
        return torch.mm(y.t(), W.t())

    @staticmethod
    @backend.first_order
    def backward(ctx, g: Tensor):
        y, W = ctx.saved_tensors
        g = g.contiguous()                                  # e.g. the expanded gradient of a sum: copied once
        dy = torch.mm(W.t(), g.t()) if ctx.needs_input_grad[0] else None
        dW = torch.mm(g.t(), y.t()) if ctx.needs_input_grad[1] else None
        return dy, dW


def chunked_conv_projected_ref(u: Tensor, W_in: Tensor, W_out: Tensor, D: Optional[Tensor], tables: ChunkTables,
                               state: Optional[Tensor] = None,
                               return_state: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""``(u W_in^T) * k`` read out by ``W_out`` plus ``D u`` from the unfused ops (plain autograd between them).

    Args:
        u: (B, L, H) real, any L >= 1. W_in: (C, H). W_out: (H, C). D: (H,) or None.
        tables: :class:`~statespaces.kernels.chunked_conv.ChunkTables` of the C columns (S = 2 M state entries each).
        state: (B, C, S) before the first step, or None. return_state: also return the final state (B, C, S).

    Returns:
        out (B, L, H), and the final state if ``return_state``.
    """
    Bsz, L, H = u.shape
    ref = backend.get_backend() == "ref"           # plain autograd: derivatives of any order
    x = u.reshape(Bsz * L, H)
    vT = torch.mm(W_in, x.t()) if ref else ProjectT.apply(x, W_in)                          # (C, B L)
    res = chunked_conv(vT.view(-1, Bsz, L), tables, state, return_state, channels_first=True)
    yT, last = cast(Tuple[Tensor, Tensor], res) if return_state else (cast(Tensor, res), None)
    y = yT.reshape(yT.shape[0], Bsz * L)
    out = (torch.mm(y.t(), W_out.t()) if ref else ReadoutT.apply(y, W_out)).view(Bsz, L, H)
    if D is not None:
        out = out + D * u
    if last is None:
        return out
    return out, last


def fits_projected(u: Tensor, tables: ChunkTables) -> bool:
    """Whether :func:`chunked_conv_projected` takes u: L a multiple of the tables' chunk length T."""
    return u.dim() == 3 and u.shape[1] % tables.w_in.shape[-2] == 0


def batch_groups(B: int, per_item: int, budget: Optional[int] = None) -> List[Tuple[int, int]]:
    """Consecutive batch ranges ``[(b0, b1), ...]`` covering 0..B, each with ``(b1 - b0) per_item <= budget``
    (default :data:`GROUP_ELEMENTS`; at least one item per group)."""
    budget = GROUP_ELEMENTS if budget is None else budget
    size = max(1, min(B, budget // max(per_item, 1)))
    return [(b0, min(B, b0 + size)) for b0 in range(0, B, size)]


#: Rows per block of :func:`_add_rowwise_dot`: a (rows, H) product that stays in cache (256 KB at H = 128).
DOT_ROWS = 512


def _add_rowwise_dot(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out += (a * b).sum(0)`` for a, b (R, H), block of rows by block of rows through one cache-sized buffer:
    the product of whole (B L, H) tensors allocated and page-faulted a fresh buffer per call (2.1 ms of a LinOSS
    backward at B=8, L=1024, H=128, one thread, where the blocks take about 0.5)."""
    rows = min(DOT_ROWS, a.shape[0])
    buf = torch.empty(rows, a.shape[1], dtype=a.dtype, device=a.device)
    for r in range(0, a.shape[0], rows):
        n = min(rows, a.shape[0] - r)
        out += torch.mul(a[r:r + n], b[r:r + n], out=buf[:n]).sum(0)


#: Chunk rows per block of :func:`_bmm_in_place` (a 512 KB scratch at C = 128, T = 32).
INPLACE_ROWS = 32


def _bmm_in_place(a: Tensor, b: Tensor, scratch: Tensor) -> Tensor:
    """``a = a @ b`` for a (C, R, T), b (C, T, T), row block by row block through ``scratch`` (C, rows, T): no
    second (C, R, T) buffer, which a fresh allocation would page-fault in on every call (the backward's largest
    temporaries are these (C, B L) products). Returns a."""
    C, R, T = a.shape
    rows = scratch.shape[1]
    for r in range(0, R, rows):
        blk = a[:, r:r + rows]
        out = scratch.view(-1)[:blk.numel()].view(blk.shape)     # contiguous, of the block's own size
        torch.bmm(blk, b, out=out)
        blk.copy_(out)
    return a


class _ChunkedProjected(torch.autograd.Function):
    r"""The fused forward and its adjoint (see the module docstring). Inputs u (B, L, H), W_in (C, H), W_out (H, C),
    D (H,) or None, taps (C, T), w_in, w_out (C, T, S), pow_T (C, M, 2, 2) (float64: the carry's precision)."""

    @staticmethod
    def forward(ctx, u: Tensor, W_in: Tensor, W_out: Tensor, D: Optional[Tensor], taps: Tensor, w_in: Tensor,
                w_out: Tensor, pow_T: Tensor) -> Tensor:
        Bsz, L, H = u.shape
        C, T, S = w_in.shape
        n = L // T
        U = u.reshape(Bsz * L, H)
        Z = _toeplitz(taps)
        groups = batch_groups(Bsz, C * L)
        Vs, Ys, sums = [], [], []
        for b0, b1 in groups:                                     # projection, near field, local chunk sums
            V = torch.mm(W_in, U[b0 * L:b1 * L].t()).view(C, (b1 - b0) * n, T)
            Vs.append(V)
            Ys.append(torch.bmm(V, Z))
            sums.append(torch.bmm(V, w_in))
        X = carry_rows(pow_T, torch.cat(sums, 1).view(C, Bsz, n, S // 2, 2), dtype=pow_T.dtype)   # (C, B, n, M, 2)
        Xr = X.to(u.dtype).reshape(C, Bsz * n, S)                 # (C, B n, S): state before each chunk
        out = torch.empty(Bsz, L, H, dtype=u.dtype, device=u.device)   # returned itself: a view of it could not
        out_rows = out.view(Bsz * L, H)                                  # be modified in place by the caller
        w_out_t = w_out.transpose(-1, -2)
        for (b0, b1), Y in zip(groups, Ys):                       # far field, readout into the group's rows
            Y.baddbmm_(Xr[:, b0 * n:b1 * n], w_out_t)
            rows = out_rows[b0 * L:b1 * L]
            torch.mm(Y.view(C, -1).t(), W_out.t(), out=rows)
            if D is not None:
                rows.addcmul_(U[b0 * L:b1 * L], D)
        ctx.save_for_backward(u, W_in, W_out, D, taps, w_in, w_out, pow_T)
        ctx.groups, ctx.Vs, ctx.Ys, ctx.X, ctx.Xr = groups, Vs, Ys, X, Xr
        return out

    @staticmethod
    @backend.first_order
    def backward(ctx, g: Tensor):
        u, W_in, W_out, D, taps, w_in, w_out, pow_T = ctx.saved_tensors
        groups, Vs, Ys, X, Xr = ctx.groups, ctx.Vs, ctx.Ys, ctx.X, ctx.Xr
        need = ctx.needs_input_grad
        Bsz, L, H = u.shape
        C, T, S = w_in.shape
        n = L // T
        # g as it comes; a non-contiguous one (the gradient of y.sum() is an expanded scalar) is copied group by
        # group into one group-sized buffer below, not as a whole (B L, H) copy, whose fresh pages are faulted in
        # on every call (7 ms of 33.5 MB at B=8, L=8192, H=128 on one CPU thread; 0.14 ms per 4 MB group)
        U, G = u.reshape(Bsz * L, H), g.reshape(Bsz * L, H)
        G_buf = None if G.is_contiguous() else G.new_empty((groups[0][1] - groups[0][0]) * L, H)
        Zt = _toeplitz(taps).transpose(-1, -2)
        # dW_out accumulated transposed, (C, H) += Y G: a plain product of the two row-major operands, 1.5x
        # faster on one CPU thread than writing G^T Y^T into (H, C) (MKL, B L = 8192, H = C = 128)
        dW_out_t = W_out.new_zeros(C, H) if need[2] else None
        dZ = torch.zeros(C, T, T, dtype=u.dtype, device=u.device) if need[4] else None
        # the tap-weight gradients accumulated as (C, S, T) += X^T dY: 2.3x faster than (C, T, S) += dY^T X
        # (one CPU thread, S = 2, T = 32, 256 rows per product), whose output has 2 columns
        dw_out_t = w_out.new_zeros(C, S, T) if need[6] else None
        dVs, dXs = [], []
        scratch = u.new_empty(C, min(INPLACE_ROWS, n * (groups[0][1] - groups[0][0])), T)
        for (b0, b1), V, Y in zip(groups, Vs, Ys):               # readout, far-field and Toeplitz adjoints
            Gg = G[b0 * L:b1 * L]
            if G_buf is not None:
                Gg = G_buf[:Gg.shape[0]].copy_(Gg)
            dY = torch.mm(W_out.t(), Gg.t()).view(C, (b1 - b0) * n, T)
            if dW_out_t is not None:
                dW_out_t.addmm_(Y.view(C, -1), Gg)
            if dZ is not None:
                dZ.baddbmm_(V.transpose(-1, -2), dY)
            if dw_out_t is not None:
                dw_out_t.baddbmm_(Xr[:, b0 * n:b1 * n].transpose(-1, -2), dY)
            dXs.append(torch.bmm(dY, w_out))
            dVs.append(_bmm_in_place(dY, Zt, scratch))           # dY is spent: dV takes its memory
        dX = torch.cat(dXs, 1).view(C, Bsz, n, S // 2, 2).to(pow_T.dtype)
        ds, dG, _ = carry_rows_adjoint(pow_T, X, dX, need[7])
        dsr = ds.to(u.dtype).reshape(C, Bsz * n, S)               # (C, B n, S)
        du = torch.empty_like(U) if need[0] else None
        dW_in = torch.zeros_like(W_in) if need[1] else None
        dD = torch.zeros_like(D) if D is not None and need[3] else None
        dw_in_t = w_in.new_zeros(C, S, T) if need[5] else None
        w_in_t = w_in.transpose(-1, -2)
        for (b0, b1), V, dV in zip(groups, Vs, dVs):             # chunk-sum adjoint, then the input projection's
            r0, r1, ds_g = b0 * L, b1 * L, dsr[:, b0 * n:b1 * n]
            dV.baddbmm_(ds_g, w_in_t)
            if dw_in_t is not None:
                dw_in_t.baddbmm_(ds_g.transpose(-1, -2), V)
            dV2 = dV.view(C, -1)
            if du is not None:
                rows = du[r0:r1]
                torch.mm(dV2.t(), W_in, out=rows)
                if D is not None:
                    rows.addcmul_(G[r0:r1], D)
            if dW_in is not None:
                dW_in.addmm_(dV2, U[r0:r1])
            if dD is not None:
                _add_rowwise_dot(dD, G[r0:r1], U[r0:r1])
        dtaps = _toeplitz_adjoint(dZ) if dZ is not None else None
        dW_out = None if dW_out_t is None else dW_out_t.t().contiguous()
        dw_in = None if dw_in_t is None else dw_in_t.transpose(-1, -2).contiguous()
        dw_out = None if dw_out_t is None else dw_out_t.transpose(-1, -2).contiguous()
        return (None if du is None else du.view(Bsz, L, H)), dW_in, dW_out, dD, dtaps, dw_in, dw_out, dG


def chunked_conv_projected(u: Tensor, W_in: Tensor, W_out: Tensor, D: Optional[Tensor],
                           tables: ChunkTables) -> Tensor:
    r"""``out = (u W_in^T) * k`` read out by ``W_out``, plus ``D u``, as one autograd node (stateless).

    Args:
        u: (B, L, H) real, L a multiple of the chunk length T of ``tables`` (:func:`fits_projected`).
        W_in: (C, H). W_out: (H, C). D: (H,) or None. All in the dtype of u.
        tables: :class:`~statespaces.kernels.chunked_conv.ChunkTables` of the C columns in the dtype of u
            (``pow_T`` in the carry's precision, float64 from the builders; ``pow_r`` is unused: no final state).

    Returns:
        out (B, L, H), equal to :func:`chunked_conv_projected_ref` (tested in float64, values and gradients).
        Autocast is off inside: the products run in the precision of u.
    """
    if not fits_projected(u, tables):
        raise ValueError(f"chunked_conv_projected: u must be (B, L, H) with L a multiple of the chunk length "
                         f"{tables.w_in.shape[-2]}; got {tuple(u.shape)}")
    with autocast_off(u):
        out = _ChunkedProjected.apply(u.contiguous(), W_in, W_out, D, tables.taps, tables.w_in, tables.w_out,
                                      tables.pow_T)
    return out
