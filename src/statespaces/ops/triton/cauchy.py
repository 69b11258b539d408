r"""Cauchy kernel for DPLR (S4) in Triton: ``out[r, j, k] = sum_n v[r, j, n] / (z[r, k] - w[r, n])``.

The grouped form of :func:`statespaces.kernels.cauchy.cauchy`, which does the argument handling
(promotion, ``conj=True`` mirrored poles, and the grouping of broadcast dims into (R, J, N) with
shared reciprocals, :mod:`statespaces.ops._cauchy_args`) and calls :func:`cauchy_grouped_triton`;
:func:`cauchy_triton` is the same with that argument handling. This module imports nothing from
:mod:`statespaces.kernels` (which registers the PyTorch twin that the backward falls back to if its kernels
fail: :func:`statespaces.backend.backward_with_fallback`). One generic kernel computes, per row and tile of
outer points x_m,

    P1[m] = sum_s u_s / (x_m - y_s),        P2[m] = sum_s u_s / (x_m - y_s)^2,

with the reciprocals in registers only (never an (R, K, N) matrix), complex as (re, im) fp32.
Forward: u = v, x = z, y = w (P1). Backward, with a_kn = 1/(z_k - w_n) and PyTorch's convention
(grad = sum g * conj(d out / d input)), two more calls of the same kernel:

* u = v, x = z, y = w, P2 = sum_n v a^2:        grad_z = -sum_j g conj(P2);
* u = conj(g), x = w, y = z (so 1/(x - y) = -a): grad_v = -conj(P1), grad_w = sum_j conj(v P2).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import backend
from .._amp import amp_backward, fp32_forward
from .._cauchy_args import _grouped, _prepare
from ._launch import make, signature, unique

Tensor = torch.Tensor

__all__ = ["cauchy_triton", "cauchy_grouped_triton", "CauchyFn"]

BLOCK_M = 64
BLOCK_S = 32


@triton.jit
def _cauchy_kernel(
    u_ptr, x_ptr, y_ptr, o1_ptr, o2_ptr, J, M, S,
    WANT1: tl.constexpr, WANT2: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)                    # (r, j) flattened; x, y depend on r only
    pid_m = tl.program_id(1)
    r = row // J
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mm = offs_m < M
    xr = tl.load(x_ptr + (r * M + offs_m) * 2, mask=mm, other=0.0)
    xi = tl.load(x_ptr + (r * M + offs_m) * 2 + 1, mask=mm, other=0.0)
    a1r = tl.zeros([BLOCK_M], dtype=tl.float32)
    a1i = tl.zeros([BLOCK_M], dtype=tl.float32)
    a2r = tl.zeros([BLOCK_M], dtype=tl.float32)
    a2i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        ms = offs_s < S
        ur = tl.load(u_ptr + (row * S + offs_s) * 2, mask=ms, other=0.0)
        ui = tl.load(u_ptr + (row * S + offs_s) * 2 + 1, mask=ms, other=0.0)
        yr = tl.load(y_ptr + (r * S + offs_s) * 2, mask=ms, other=0.0)
        yi = tl.load(y_ptr + (r * S + offs_s) * 2 + 1, mask=ms, other=0.0)
        dr = xr[:, None] - yr[None, :]
        di = xi[:, None] - yi[None, :]
        valid = mm[:, None] & ms[None, :]
        inv = tl.where(valid, 1.0 / tl.where(valid, dr * dr + di * di, 1.0), 0.0)
        cr = dr * inv                                      # 1/(x - y) = conj(d) / |d|^2
        ci = -di * inv
        if WANT1:
            a1r += tl.sum(ur[None, :] * cr - ui[None, :] * ci, axis=1)
            a1i += tl.sum(ur[None, :] * ci + ui[None, :] * cr, axis=1)
        if WANT2:
            qr = cr * cr - ci * ci
            qi = 2.0 * cr * ci
            a2r += tl.sum(ur[None, :] * qr - ui[None, :] * qi, axis=1)
            a2i += tl.sum(ur[None, :] * qi + ui[None, :] * qr, axis=1)
    base = (row * M + offs_m) * 2
    if WANT1:
        tl.store(o1_ptr + base, a1r, mask=mm)
        tl.store(o1_ptr + base + 1, a1i, mask=mm)
    if WANT2:
        tl.store(o2_ptr + base, a2r, mask=mm)
        tl.store(o2_ptr + base + 1, a2i, mask=mm)


_SIG = signature("*fp32", ["u_ptr", "x_ptr", "y_ptr", "o1_ptr", "o2_ptr"], ["J", "M", "S"])


def _config(want1: bool, want2: bool):
    return make(__name__, _cauchy_kernel, _SIG, WANT1=want1, WANT2=want2, BLOCK_M=BLOCK_M, BLOCK_S=BLOCK_S)


def configs():
    """Every launch configuration: the forward (P1), the grad_z call (P2) and the grad_v / grad_w
    call (P1 and/or P2)."""
    return unique([_config(True, False), _config(False, True), _config(True, True)])


def _sums(u: Tensor, x: Tensor, y: Tensor, want1: bool, want2: bool):
    """u (R, J, S), x (R, M), y (R, S), complex64 contiguous -> (P1, P2) (R, J, M) or None."""
    R, J, S = u.shape
    M = x.shape[-1]
    o1 = torch.empty(R, J, M, dtype=torch.complex64, device=u.device) if want1 else None
    o2 = torch.empty(R, J, M, dtype=torch.complex64, device=u.device) if want2 else None
    some = o1 if o1 is not None else o2
    assert some is not None, "_sums needs want1 or want2"
    dummy = torch.view_as_real(some)
    cfg = _config(want1, want2)
    grid = (R * J, triton.cdiv(M, BLOCK_M))
    cfg.launch(
        grid,
        torch.view_as_real(u), torch.view_as_real(x), torch.view_as_real(y),
        torch.view_as_real(o1) if o1 is not None else dummy, torch.view_as_real(o2) if o2 is not None else dummy,
        J, M, S,
    )
    return o1, o2


def _c64(t: Tensor) -> Tensor:
    return t.to(torch.complex64).resolve_conj().contiguous()


class CauchyFn(torch.autograd.Function):
    """Autograd wrapper on the grouped form v (R, J, N), z (R, K), w (R, N), complex64."""

    @staticmethod
    @fp32_forward
    def forward(ctx, v: Tensor, z: Tensor, w: Tensor) -> Tensor:
        v, z, w = _c64(v), _c64(z), _c64(w)
        out, _ = _sums(v, z, w, True, False)
        ctx.save_for_backward(v, z, w)
        ctx.fallback_op = backend.fallback_op()
        return out

    @staticmethod
    @backend.first_order
    @amp_backward
    @backend.backward_with_fallback("CauchyFn", lambda ctx: ctx.saved_tensors)
    def backward(ctx, g: Tensor):
        v, z, w = ctx.saved_tensors
        need_v, need_z, need_w = ctx.needs_input_grad
        gv = gz = gw = None
        if need_z:
            _, T = _sums(v, z, w, False, True)
            gz = -(g * T.conj()).sum(1)
        if need_v or need_w:
            P1, P2 = _sums(_c64(g.conj()), w, z, need_v, need_w)
            if need_v:
                gv = -P1.conj()
            if need_w:
                gw = (v * P2).sum(1).conj()
        return gv, gz, gw


def cauchy_grouped_triton(v: Tensor, z: Tensor, w: Tensor) -> Tensor:
    r"""``out[r, j, k] = sum_n v[r, j, n] / (z[r, k] - w[r, n])`` on the grouped form v (R, J, N),
    z (R, K), w (R, N) (complex64 result). :func:`statespaces.kernels.cauchy.cauchy` does the
    argument handling (promotion, ``conj=True``, grouping of broadcast dims) and calls this."""
    if v.dim() != 3 or z.dim() != 2 or w.dim() != 2 or v.shape[-1] != w.shape[-1] or not (
            v.shape[0] == z.shape[0] == w.shape[0]):
        raise ValueError(f"cauchy_grouped_triton: expected v (R, J, N), z (R, K), w (R, N), got "
                         f"{tuple(v.shape)}, {tuple(z.shape)}, {tuple(w.shape)}")
    return CauchyFn.apply(v, z, w)


def cauchy_triton(v: Tensor, z: Tensor, w: Tensor, conj: bool = False, chunk_elems: Optional[int] = None) -> Tensor:
    r"""``out_k = sum_n v_n / (z_k - w_n)`` (+ mirrored poles with ``conj``), as
    :func:`statespaces.kernels.cauchy.cauchy`; complex64 result. ``chunk_elems`` is accepted for
    signature compatibility and ignored (nothing is materialized)."""
    v, z, w = _prepare(v, z, w, conj)
    vg, zg, wg, unshape = _grouped(v, z, w)
    return unshape(cauchy_grouped_triton(vg, zg, wg))
