r"""Chunked diagonal linear-recurrence scan in Triton: ``x_l = a_l * x_{l-1} + b_l``.

Layout as :func:`statespaces.ops.scan.scan_diagonal`: a, b (..., L, N) (a may broadcast: fewer
batch dims, length 1 along L for a time-invariant system, or stride 0), x0 (..., N). Each
program owns one batch row and BLOCK_N channels and walks L in BLOCK_L chunks: a chunk is scanned
in registers with ``tl.associative_scan`` over the affine maps (a, b) (combine ``later o earlier =
(a_j a_i, a_j b_i + b_j)``), then the state carried in from the previous chunk is applied,
``x = B + A * carry``. Complex numbers are (re, im) fp32 pairs; fp32 accumulation throughout.
Padding rows past L are identity maps (a = 1, b = 0), so the last row of a chunk is the carry.

Backward (:class:`ScanDiagonalFn`): the adjoint ``lam_l = dLoss/dx_l`` (total) obeys the reversed
recurrence ``lam_l = conj(a_{l+1}) lam_{l+1} + g_l`` (``lam_{L-1} = g_{L-1}``): the same scan run
from the end with transitions conj(a) shifted by one. Then ``grad_b = lam``,
``grad_a_l = lam_l conj(x_{l-1})`` (``x_{-1} = x0``) and ``grad_x0 = conj(a_0) lam_0``, each summed
over the dims along which its input was broadcast. If these kernels fail to compile or launch under the
fallback policy, the gradients come from the PyTorch scan instead (its twin, registered by
:mod:`statespaces.ops.scan`; :func:`statespaces.backend.backward_with_fallback`).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import backend
from .._amp import amp_backward, fp32_forward
from .._grad import reduce_to as _reduce_to
from ._launch import make, pow2_domain, signature, unique

Tensor = torch.Tensor

__all__ = ["scan_diagonal_triton", "ScanDiagonalFn"]


@triton.jit
def _combine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    # element 1 is the earlier step, 2 the later: (a2 a1, a2 b1 + b2)
    ar = ar2 * ar1 - ai2 * ai1
    ai = ar2 * ai1 + ai2 * ar1
    br = ar2 * br1 - ai2 * bi1 + br2
    bi = ar2 * bi1 + ai2 * br1 + bi2
    return ar, ai, br, bi


@triton.jit
def _combine_real(a1, b1, a2, b2):
    return a2 * a1, a2 * b1 + b2


@triton.jit
def _last_row(x, rows, BLOCK_L: tl.constexpr):
    return tl.sum(tl.where(rows[:, None] == BLOCK_L - 1, x, 0.0), axis=0)


@triton.jit
def _scan_fwd_kernel(
    a_ptr, b_ptr, x0_ptr, out_ptr,
    L, N, D1, D2,
    sa0, sa1, sa2, sal, san,
    sb0, sb1, sb2, sbl, sbn,
    sx0, sx1, sx2, sxn,
    IS_COMPLEX: tl.constexpr, A_COMPLEX: tl.constexpr, HAS_X0: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_r = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    i2 = pid_r % D2
    i1 = (pid_r // D2) % D1
    i0 = pid_r // (D1 * D2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mn = offs_n < N
    rows = tl.arange(0, BLOCK_L)
    a_row = a_ptr + i0 * sa0 + i1 * sa1 + i2 * sa2 + offs_n * san
    b_row = b_ptr + i0 * sb0 + i1 * sb1 + i2 * sb2 + offs_n * sbn
    C: tl.constexpr = 2 if IS_COMPLEX else 1
    o_row = out_ptr + pid_r * L * N * C + offs_n * C
    cr = tl.zeros([BLOCK_N], dtype=tl.float32)
    ci = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_X0:
        x_row = x0_ptr + i0 * sx0 + i1 * sx1 + i2 * sx2 + offs_n * sxn
        cr = tl.load(x_row, mask=mn, other=0.0).to(tl.float32)
        if IS_COMPLEX:
            ci = tl.load(x_row + 1, mask=mn, other=0.0).to(tl.float32)
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + rows
        m2 = (offs_l < L)[:, None] & mn[None, :]
        pa = a_row[None, :] + offs_l[:, None] * sal
        pb = b_row[None, :] + offs_l[:, None] * sbl
        po = o_row[None, :] + offs_l[:, None] * (N * C)
        ar = tl.load(pa, mask=m2, other=1.0).to(tl.float32)
        br = tl.load(pb, mask=m2, other=0.0).to(tl.float32)
        if IS_COMPLEX:
            if A_COMPLEX:
                ai = tl.load(pa + 1, mask=m2, other=0.0).to(tl.float32)
            else:
                ai = tl.zeros_like(ar)
            bi = tl.load(pb + 1, mask=m2, other=0.0).to(tl.float32)
            Ar, Ai, Br, Bi = tl.associative_scan((ar, ai, br, bi), 0, _combine_complex)
            xr = Br + Ar * cr[None, :] - Ai * ci[None, :]
            xi = Bi + Ar * ci[None, :] + Ai * cr[None, :]
            tl.store(po, xr, mask=m2)
            tl.store(po + 1, xi, mask=m2)
            cr = _last_row(xr, rows, BLOCK_L)
            ci = _last_row(xi, rows, BLOCK_L)
        else:
            Ar, Br = tl.associative_scan((ar, br), 0, _combine_real)
            xr = Br + Ar * cr[None, :]
            tl.store(po, xr, mask=m2)
            cr = _last_row(xr, rows, BLOCK_L)


@triton.jit
def _scan_bwd_kernel(
    a_ptr, g_ptr, x_ptr, x0_ptr, gb_ptr, ga_ptr,
    L, N, D1, D2,
    sa0, sa1, sa2, sal, san,
    sx0, sx1, sx2, sxn,
    IS_COMPLEX: tl.constexpr, A_COMPLEX: tl.constexpr, HAS_X0: tl.constexpr, NEED_GA: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # g, x, gb, ga: contiguous (R, L, N[, 2]); walks the chunks from the end, rows reversed
    pid_r = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    i2 = pid_r % D2
    i1 = (pid_r // D2) % D1
    i0 = pid_r // (D1 * D2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mn = offs_n < N
    rows = tl.arange(0, BLOCK_L)
    C: tl.constexpr = 2 if IS_COMPLEX else 1
    a_row = a_ptr + i0 * sa0 + i1 * sa1 + i2 * sa2 + offs_n * san
    base = pid_r * L * N * C + offs_n * C
    x0r = tl.zeros([BLOCK_N], dtype=tl.float32)
    x0i = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_X0:
        x_row0 = x0_ptr + i0 * sx0 + i1 * sx1 + i2 * sx2 + offs_n * sxn
        x0r = tl.load(x_row0, mask=mn, other=0.0).to(tl.float32)
        if IS_COMPLEX:
            x0i = tl.load(x_row0 + 1, mask=mn, other=0.0).to(tl.float32)
    cr = tl.zeros([BLOCK_N], dtype=tl.float32)
    ci = tl.zeros([BLOCK_N], dtype=tl.float32)
    n_chunks = tl.cdiv(L, BLOCK_L)
    for t in range(0, n_chunks):
        offs_l = (n_chunks - 1 - t) * BLOCK_L + (BLOCK_L - 1 - rows)      # descending positions
        ml = offs_l < L
        m2 = ml[:, None] & mn[None, :]
        mnext = (offs_l + 1 < L)[:, None] & mn[None, :]
        pa = a_row[None, :] + (offs_l + 1)[:, None] * sal                  # transition a_{l+1}
        pg = g_ptr + base[None, :] + offs_l[:, None] * (N * C)
        ar = tl.load(pa, mask=mnext, other=0.0).to(tl.float32)
        gr = tl.load(pg, mask=m2, other=0.0).to(tl.float32)
        pxp = x_ptr + base[None, :] + (offs_l - 1)[:, None] * (N * C)      # x_{l-1}
        mprev = ((offs_l >= 1) & ml)[:, None] & mn[None, :]
        first = (offs_l == 0)[:, None]
        if IS_COMPLEX:
            if A_COMPLEX:
                ai = -tl.load(pa + 1, mask=mnext, other=0.0).to(tl.float32)  # conj(a_{l+1})
            else:
                ai = tl.zeros_like(ar)
            gi = tl.load(pg + 1, mask=m2, other=0.0).to(tl.float32)
            Ar, Ai, Br, Bi = tl.associative_scan((ar, ai, gr, gi), 0, _combine_complex)
            lr = Br + Ar * cr[None, :] - Ai * ci[None, :]
            li = Bi + Ar * ci[None, :] + Ai * cr[None, :]
            pgb = gb_ptr + base[None, :] + offs_l[:, None] * (N * C)
            tl.store(pgb, lr, mask=m2)
            tl.store(pgb + 1, li, mask=m2)
            if NEED_GA:
                xr = tl.load(pxp, mask=mprev, other=0.0).to(tl.float32)
                xi = tl.load(pxp + 1, mask=mprev, other=0.0).to(tl.float32)
                xr = tl.where(first, x0r[None, :], xr)
                xi = tl.where(first, x0i[None, :], xi)
                pga = ga_ptr + base[None, :] + offs_l[:, None] * (N * C)
                tl.store(pga, lr * xr + li * xi, mask=m2)                   # lam * conj(x_{l-1})
                tl.store(pga + 1, li * xr - lr * xi, mask=m2)
            cr = _last_row(lr, rows, BLOCK_L)
            ci = _last_row(li, rows, BLOCK_L)
        else:
            Ar, Br = tl.associative_scan((ar, gr), 0, _combine_real)
            lr = Br + Ar * cr[None, :]
            tl.store(gb_ptr + base[None, :] + offs_l[:, None] * N, lr, mask=m2)
            if NEED_GA:
                xr = tl.load(pxp, mask=mprev, other=0.0).to(tl.float32)
                xr = tl.where(first, x0r[None, :], xr)
                tl.store(ga_ptr + base[None, :] + offs_l[:, None] * N, lr * xr, mask=m2)
            cr = _last_row(lr, rows, BLOCK_L)


# ---- host side ---------------------------------------------------------------------------------
def _real_view(t: Tensor) -> Tensor:
    return torch.view_as_real(t.resolve_conj()) if t.is_complex() else t


def _batch_strides(tensors: List[Tensor], batch: Tuple[int, ...]) -> Tuple[List[int], List[List[int]]]:
    """Collapse the batch dims shared by ``tensors`` (already expanded to ``batch``) into 3 dims
    (sizes, per-tensor strides), merging dims that are contiguous with each other in every tensor."""
    dims = [(s, [t.stride(i) for t in tensors]) for i, s in enumerate(batch) if s != 1]
    merged: List[Tuple[int, List[int]]] = []
    for size, st in dims:
        if merged:
            psize, pst = merged[-1]
            if all(p == q * size for p, q in zip(pst, st)):
                merged[-1] = (psize * size, st)
                continue
        merged.append((size, st))
    if len(merged) > 3:
        raise _TooManyDims
    while len(merged) < 3:
        merged.insert(0, (1, [0] * len(tensors)))
    sizes = [m[0] for m in merged]
    strides = [[m[1][j] for m in merged] for j in range(len(tensors))]
    return sizes, strides


class _TooManyDims(Exception):
    pass


#: Tile sizes (tests lower MAX_BLOCK_L to exercise the carry between chunks on tiny shapes).
#: A chunk of BLOCK_L = 64 steps keeps the complex backward (8 live (BLOCK_L, BLOCK_N) tiles plus
#: the scan's temporaries) within the register file on sm_80 / sm_90: at 128 it spilled 136-296
#: bytes (tests/test_triton_resources.py).
MAX_BLOCK_L = 64
MAX_BLOCK_N = 32
#: A complex scan holds twice the tiles of a real one: at BLOCK_N = 32 Triton 3.6 (the version on the
#: H100/H200 image) used all 255 registers and spilled (backward on sm_90: 24-528 bytes; forward on sm_80:
#: 72 bytes; Triton 3.9 did not), so complex scans take 16-channel tiles both ways.
MAX_BLOCK_N_COMPLEX = 16

_STRIDES_A = ["sa0", "sa1", "sa2", "sal", "san"]
_STRIDES_X = ["sx0", "sx1", "sx2", "sxn"]
_FWD_SIG = signature("*fp32", ["a_ptr", "b_ptr", "x0_ptr", "out_ptr"],
                     ["L", "N", "D1", "D2", *_STRIDES_A, "sb0", "sb1", "sb2", "sbl", "sbn", *_STRIDES_X])
_BWD_SIG = signature("*fp32", ["a_ptr", "g_ptr", "x_ptr", "x0_ptr", "gb_ptr", "ga_ptr"],
                     ["L", "N", "D1", "D2", *_STRIDES_A, *_STRIDES_X])


def _block_sizes(L: int, N: int, is_complex: bool = False) -> Tuple[int, int]:
    """(BLOCK_L, BLOCK_N): fixed chunk length (padding rows are identity maps), N tile by N."""
    return MAX_BLOCK_L, max(16, min(MAX_BLOCK_N_COMPLEX if is_complex else MAX_BLOCK_N, triton.next_power_of_2(N)))


def _fwd_config(N: int, is_complex: bool, a_complex: bool, has_x0: bool):
    BLOCK_L, BLOCK_N = _block_sizes(0, N, is_complex)
    return make(__name__, _scan_fwd_kernel, _FWD_SIG, IS_COMPLEX=is_complex, A_COMPLEX=a_complex,
                HAS_X0=has_x0, BLOCK_L=BLOCK_L, BLOCK_N=BLOCK_N)


def _bwd_config(N: int, is_complex: bool, a_complex: bool, has_x0: bool, need_ga: bool):
    BLOCK_L, BLOCK_N = _block_sizes(0, N, is_complex)
    return make(__name__, _scan_bwd_kernel, _BWD_SIG, IS_COMPLEX=is_complex, A_COMPLEX=a_complex,
                HAS_X0=has_x0, NEED_GA=need_ga, BLOCK_L=BLOCK_L, BLOCK_N=BLOCK_N)


def configs():
    """Every launch configuration the forward and backward can choose (a complex a implies a
    complex scan; see :func:`_prepare`)."""
    kinds = [(False, False), (True, False), (True, True)]          # (is_complex, a_complex)
    out = []
    for N in pow2_domain(MAX_BLOCK_N):
        for cplx, acplx in kinds:
            for x0 in (False, True):
                out.append(_fwd_config(N, cplx, acplx, x0))
                out += [_bwd_config(N, cplx, acplx, x0, ga) for ga in (False, True)]
    return unique(out)


def _prepare(a: Tensor, b: Tensor, x0: Optional[Tensor]):
    is_complex = a.is_complex() or b.is_complex() or (x0 is not None and x0.is_complex())
    a_complex = a.is_complex()
    cdt = torch.complex64 if is_complex else torch.float32
    a_k = a.to(torch.complex64 if a_complex else torch.float32)     # before expanding: no copy of a broadcast a
    b_k = b.to(cdt)
    x0_k = None if x0 is None else x0.to(cdt)
    L, N = b.shape[-2], b.shape[-1]
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2], () if x0 is None else x0.shape[:-1])
    a_k = a_k.expand(*batch, L, N)
    b_k = b_k.expand(*batch, L, N)
    x0_k = None if x0_k is None else x0_k.expand(*batch, N)
    return a_k, b_k, x0_k, batch, is_complex, a_complex


def _launch_args(a_k, b_k, x0_k, batch):
    """Real views and (sizes, strides) of the batch dims for the kernels, copying only if needed."""
    views = [_real_view(a_k), _real_view(b_k)] + ([] if x0_k is None else [_real_view(x0_k)])
    nb = len(batch)
    try:
        sizes, strides = _batch_strides([v for v in views], batch)
    except _TooManyDims:
        views = [v.contiguous() for v in views]
        sizes, strides = _batch_strides(views, batch)
    return views, sizes, strides, nb


def _scan_forward(a_k, b_k, x0_k, batch, is_complex, a_complex) -> Tensor:
    L, N = b_k.shape[-2], b_k.shape[-1]
    views, sizes, strides, nb = _launch_args(a_k, b_k, x0_k, batch)
    R = sizes[0] * sizes[1] * sizes[2]
    out = torch.empty(*batch, L, N, dtype=torch.complex64 if is_complex else torch.float32, device=b_k.device)
    av, bv = views[0], views[1]
    xv = views[2] if x0_k is not None else bv
    sx = strides[2] if x0_k is not None else [0, 0, 0]
    sxn = xv.stride(nb) if x0_k is not None else 0
    cfg = _fwd_config(N, is_complex, a_complex, x0_k is not None)
    grid = (R, triton.cdiv(N, cfg.consts["BLOCK_N"]))
    cfg.launch(
        grid,
        av, bv, xv, _real_view(out),
        L, N, sizes[1], sizes[2],
        *strides[0], av.stride(nb), av.stride(nb + 1),
        *strides[1], bv.stride(nb), bv.stride(nb + 1),
        *sx, sxn,
    )
    return out


def _scan_backward(a_k, g, x, x0_k, batch, is_complex, a_complex, need_ga):
    L, N = x.shape[-2], x.shape[-1]
    views = [_real_view(a_k)] + ([] if x0_k is None else [_real_view(x0_k)])
    nb = len(batch)
    try:
        sizes, strides = _batch_strides(views, batch)
    except _TooManyDims:
        views = [v.contiguous() for v in views]
        sizes, strides = _batch_strides(views, batch)
    R = sizes[0] * sizes[1] * sizes[2]
    av = views[0]
    xv = views[1] if x0_k is not None else av
    sx = strides[1] if x0_k is not None else [0, 0, 0]
    sxn = xv.stride(nb) if x0_k is not None else 0
    gb = torch.empty_like(x)
    ga = torch.empty_like(x) if need_ga else gb
    cfg = _bwd_config(N, is_complex, a_complex, x0_k is not None, need_ga)
    grid = (R, triton.cdiv(N, cfg.consts["BLOCK_N"]))
    cfg.launch(
        grid,
        av, _real_view(g), _real_view(x), xv, _real_view(gb), _real_view(ga),
        L, N, sizes[1], sizes[2],
        *strides[0], av.stride(nb), av.stride(nb + 1),
        *sx, sxn,
    )
    return gb, (ga if need_ga else None)


def _forward_inputs(ctx):
    """``(a, b, x0)`` of this call, for the fallback of the backward
    (:func:`statespaces.backend.backward_with_fallback`). b is not saved (it would keep a (..., L, N) tensor
    alive for a path that almost never runs): it is rebuilt from the states, ``b_l = x_l - a_l x_{l-1}`` (in
    the states' precision), real if it was, one slice along the dims it was broadcast along."""
    a, x0, out = ctx.saved_tensors
    batch, _, _, b_shape, b_dtype = ctx.meta
    L, N = out.shape[-2], out.shape[-1]
    first = out.new_zeros(*batch, N) if x0 is None else x0.to(out.dtype).expand(*batch, N)
    b = out - a.to(out.dtype).expand(*batch, L, N) * torch.cat([first.unsqueeze(-2), out[..., :-1, :]], -2)
    b = (b if b_dtype.is_complex else b.real).to(b_dtype)
    lead = b.dim() - len(b_shape)
    b = b[(0,) * lead + tuple(slice(0, 1) if s == 1 else slice(None) for s in b_shape)]
    return a, b, x0


class ScanDiagonalFn(torch.autograd.Function):
    """Autograd wrapper of the chunked scan kernels (fp32 / complex64)."""

    @staticmethod
    @fp32_forward
    def forward(ctx, a: Tensor, b: Tensor, x0: Optional[Tensor]) -> Tensor:
        a_k, b_k, x0_k, batch, is_complex, a_complex = _prepare(a, b, x0)
        out = _scan_forward(a_k, b_k, x0_k, batch, is_complex, a_complex)
        ctx.meta = (batch, is_complex, a_complex, b.shape, b.dtype)
        ctx.save_for_backward(a, x0, out)
        ctx.fallback_op = backend.fallback_op()
        return out

    @staticmethod
    @backend.first_order
    @amp_backward
    @backend.backward_with_fallback("ScanDiagonalFn", _forward_inputs)
    def backward(ctx, g: Tensor):
        a, x0, out = ctx.saved_tensors
        batch, is_complex, a_complex, b_shape, b_dtype = ctx.meta
        need_a, need_b, need_x0 = ctx.needs_input_grad
        L, N = out.shape[-2], out.shape[-1]
        a_k = a.to(torch.complex64 if a_complex else torch.float32).expand(*batch, L, N)
        x0_k = None if x0 is None else x0.to(out.dtype).expand(*batch, N)
        g = g.to(out.dtype).contiguous()
        lam, ga = _scan_backward(a_k, g, out, x0_k, batch, is_complex, a_complex, need_a)
        grad_a = _reduce_to(ga, a.shape, a.dtype) if need_a else None
        grad_b = _reduce_to(lam, b_shape, b_dtype) if need_b else None
        grad_x0 = None
        if x0 is not None and need_x0:
            a0 = a_k[..., 0, :]
            grad_x0 = _reduce_to((a0.conj() if a_complex else a0) * lam[..., 0, :], x0.shape, x0.dtype)
        return grad_a, grad_b, grad_x0


def scan_diagonal_triton(a: Tensor, b: Tensor, x0: Optional[Tensor] = None) -> Tensor:
    r"""All states of ``x_l = a_l * x_{l-1} + b_l`` (l = 0..L-1, ``x_{-1} = x0`` or 0).

    Same contract as :func:`statespaces.ops.scan.scan_diagonal` for fp32 / complex64 inputs:
    a (..., L or 1, N), b (..., L, N), x0 (..., N) or None; returns (..., L, N), complex64 if
    any input is complex, else fp32.
    """
    if b.dim() < 2 or a.dim() < 2 or a.shape[-1] != b.shape[-1] or a.shape[-2] not in (1, b.shape[-2]):
        raise ValueError(
            "scan_diagonal_triton: a must be (..., L or 1, N) and b (..., L, N), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return ScanDiagonalFn.apply(a, b, x0)
