r"""Fused LinOSS scan in Triton: the 2x2 real block recurrence with the forcing built in-kernel.

LinOSS (seed 001, notes Part 6.1; :mod:`statespaces.layers.linoss`) and D-LinOSS run P discretized
oscillators ``x_n = M x_{n-1} + f (B u_n)`` on ``x = [z; y]`` with a real, time-invariant 2x2 block
``M`` (2, 2, P) and forcing coefficients ``f`` (2, P) (IM, IMEX and the D-LinOSS schemes all have
this form). As M is real, the real and imaginary parts of ``B u`` evolve independently: the kernels
see 2P real channels ``c``, channel ``c`` using oscillator ``c mod P`` and the input projection row
``W[c] = [Re B; Im B][c]`` (W (2P, H)), so ``v = u W^T`` is ``[Re B u, Im B u]``.

Forward (:func:`_fwd_kernel`). One program per (batch row, BLOCK_C channels) walks L in chunks of
BLOCK_L steps, reading u (B, L, H) directly:

* the forcing tile ``v = u[chunk] W[channels]^T`` is one ``tl.dot`` per BLOCK_H slice of H
  (3xTF32 on tensor cores, fp32-faithful);
* the chunk is scanned from a zero state in registers with ``tl.associative_scan`` over the affine
  maps ``(M, F)``, combine ``later o earlier = (M_j M_i, M_j F_i + F_j)`` (2x2 products of the
  per-channel entries); padding rows past L are identity maps;
* the state carried in from the previous chunk is applied, ``x = F~ + M~ carry``; the carry itself
  is kept in **fp64** and advanced with the exact power ``M^BLOCK_L`` (fp64: each program squares the
  layer's fp64 ``M`` log2(BLOCK_L) times, as the layer's chunked scan does): the rounding error then
  stays bounded by the chunk length instead of growing with L (IMEX has ``|lambda| = 1``: nothing is
  forgotten).

It stores the positions y (B, L, 2P), the state before every chunk (B, K, 2, 2P) for the backward,
and the final state (B, 2, 2P). When batch x channel blocks give too few programs to fill a GPU, L is
also cut into segments run side by side (grid axis 2): a first launch (``ENDS_ONLY``) finds each
segment's end state from zero, and the main launch (``CHAIN``) forms each segment's start itself: in fp64,
``s <- T s + end_i`` over the segments before it with the exact ``T = M^(segment length)`` (binary powering of
``M^BLOCK_L``). O(S) extra work per program, and no PyTorch ops between the launches: the chain in PyTorch
was a log-depth scan of about twenty small ops per direction, which a GPU bound by dispatch paid for.

Backward (:func:`_bwd_kernel`). With ``g_n = dLoss/dy_n`` and ``g_fin = dLoss/dx_{L-1}``, the adjoint
``lam_n = dLoss/dx_n`` obeys ``lam_n = M^T lam_{n+1} + e_y g_n`` (``+ g_fin`` at n = L-1). The kernel
scans ``rho_n = lam_{n+1}`` (forcing ``e_y g_{n+1}``, ``g_fin`` at n = L-2; ``rho_{L-1} = 0``) from
the end with ``associative_scan(reverse=True)``, chunk by chunk (fp64 carry, exact ``(M^T)^BLOCK_L``),
and recomputes the chunk's states x from the stored chunk-start state (segments as in the forward:
a scan-only ``RHO_ONLY`` launch, the rho entering each segment chained backwards in fp64 by the main
launch). Then per row ``lam_n = M^T rho_n + e_y g_n`` and

    dLoss/dv_n = f_1 lam^z_n + f_2 lam^y_n,      dLoss/dM += rho_n x_n^T,     dLoss/df_i += lam^i_n v_n,

(``sum_n lam_n x_{n-1}^T = sum_n rho_n x_n^T + lam_0 x0^T``) -- the sums over the rows are taken
per program and added over the batch in PyTorch. ``dLoss/du = (dLoss/dv) W``,
``dLoss/dW = (dLoss/dv)^T u``, ``lam_0`` and ``dLoss/dx0 = M^T lam_0`` are small PyTorch products.

Twins: :meth:`statespaces.layers.linoss.LinOSS._scan_path` (the chunked PyTorch scan) and the
float64 loop :func:`statespaces.ops.scan.scan_loop` (``block=True``). If the backward kernels fail to
compile or launch under the fallback policy, the gradients come from the PyTorch parallel scan
:func:`statespaces.ops.scan.scan_block2` of the same recurrence (:func:`_scan_torch`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import backend
from .._amp import amp_backward, fp32_forward
from ._launch import contiguous, make, pow2_domain, signature, unique

Tensor = torch.Tensor

__all__ = ["linoss_scan_triton", "LinossScanFn"]


@triton.jit
def _combine_block(e11, e12, e21, e22, e1, e2, l11, l12, l21, l22, l1, l2):
    # element e is applied first, l after: (M_l M_e, M_l F_e + F_l), 2x2 per channel
    return (l11 * e11 + l12 * e21, l11 * e12 + l12 * e22, l21 * e11 + l22 * e21, l21 * e12 + l22 * e22,
            l11 * e1 + l12 * e2 + l1, l21 * e1 + l22 * e2 + l2)


@triton.jit
def _row(x, rows, r):
    # row r of a (BLOCK_L, BLOCK_C) tile: (BLOCK_C,)
    return tl.sum(tl.where(rows[:, None] == r, x, 0.0), axis=0)


@triton.jit
def _forcing(u_row, w_ptr, offs_l, ml, offs_c, mc, L, H,
             BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, PRECISION: tl.constexpr):
    # v = u[offs_l, :] @ W[offs_c, :]^T: (BLOCK_L, BLOCK_C), zero on padding rows / channels
    v = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        mh = offs_h < H
        ut = tl.load(u_row + offs_l[:, None] * H + offs_h[None, :], mask=ml[:, None] & mh[None, :], other=0.0)
        wt = tl.load(w_ptr + offs_c[None, :] * H + offs_h[:, None], mask=mh[:, None] & mc[None, :], other=0.0)
        v = tl.dot(ut, wt, v, input_precision=PRECISION)
    return v


@triton.jit
def _rho_scan(a11, a12, a21, a22, pg, offs_l, mc, gfz, gfy, L, C2):
    # rho_n = M^T rho_{n+1} + (0, g_{n+1}) (+ g_fin at n = L-2) of one chunk from zero, scanned from its
    # end (transitions M^T: the transposed entries); returns the composed maps and rho from zero
    gn = tl.load(pg + C2, mask=(offs_l + 1 < L)[:, None] & mc[None, :], other=0.0)
    at_fin = (offs_l == L - 2)[:, None]
    hz = tl.where(at_fin, gfz[None, :], 0.0)
    hy = gn + tl.where(at_fin, gfy[None, :], 0.0)
    return tl.associative_scan((a11, a21, a12, a22, hz, hy), 0, _combine_block, reverse=True)


@triton.jit
def _mat2(a11, a12, a21, a22, b11, b12, b21, b22):
    # the 2x2 product a b, per channel
    return a11 * b11 + a12 * b21, a11 * b12 + a12 * b22, a21 * b11 + a22 * b21, a21 * b12 + a22 * b22


@triton.jit
def _block_pow(k11, k12, k21, k22, n):
    # k^n per channel for a runtime n >= 0, by binary powering (in the precision of k: fp64 here)
    r11 = k11 * 0.0 + 1.0
    r12 = k11 * 0.0
    r21 = k11 * 0.0
    r22 = k11 * 0.0 + 1.0
    while n > 0:
        if n % 2 == 1:
            r11, r12, r21, r22 = _mat2(r11, r12, r21, r22, k11, k12, k21, k22)
        k11, k12, k21, k22 = _mat2(k11, k12, k21, k22, k11, k12, k21, k22)
        n = n // 2
    return r11, r12, r21, r22


@triton.jit
def _load_block2(ptr, p, mask, P):
    # the 2x2 blocks (11, 12, 21, 22) of oscillators p from a (2, 2, P) table; masked lanes get the identity
    return (tl.load(ptr + p, mask=mask, other=1.0), tl.load(ptr + P + p, mask=mask, other=0.0),
            tl.load(ptr + 2 * P + p, mask=mask, other=0.0), tl.load(ptr + 3 * P + p, mask=mask, other=1.0))


@triton.jit
def _fwd_kernel(
    u_ptr, w_ptr, m_ptr, f_ptr, m64_ptr, x0_ptr, ends_ptr, y_ptr, carry_ptr, fin_ptr,
    L, H, P, K, KS,
    HAS_X0: tl.constexpr, ENDS_ONLY: tl.constexpr, CHAIN: tl.constexpr, BLOCK_L: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, PRECISION: tl.constexpr,
):
    # program (b, channel block, segment): chunks [seg KS, (seg + 1) KS) from the segment's start state:
    # x0[b] (HAS_X0) or 0, then (CHAIN) s <- T s + ends[b, i] for the segments i < seg before it, in fp64 with
    # T = M^(KS BLOCK_L); ENDS_ONLY: from zero, storing only the segment's end state (fin[b, seg])
    b = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(2)
    S = tl.num_programs(2)
    rb = b * S + seg
    C2 = 2 * P
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mc = offs_c < C2
    p = offs_c % P
    m11, m12, m21, m22 = _load_block2(m_ptr, p, mc, P)
    f1 = tl.load(f_ptr + p, mask=mc, other=0.0)
    f2 = tl.load(f_ptr + P + p, mask=mc, other=0.0)
    k11, k12, k21, k22 = _load_block2(m64_ptr, p, mc, P)          # M in fp64 ...
    k11, k12, k21, k22 = _block_pow(k11, k12, k21, k22, tl.full([], BLOCK_L, tl.int32))   # ... to M^BLOCK_L
    sz = tl.zeros([BLOCK_C], dtype=tl.float64)                    # carried state (fp64)
    sy = tl.zeros([BLOCK_C], dtype=tl.float64)
    if HAS_X0:
        sz = tl.load(x0_ptr + b * 2 * C2 + offs_c, mask=mc, other=0.0).to(tl.float64)
        sy = tl.load(x0_ptr + b * 2 * C2 + C2 + offs_c, mask=mc, other=0.0).to(tl.float64)
    if CHAIN:
        t11, t12, t21, t22 = _block_pow(k11, k12, k21, k22, KS)
        for i in range(0, seg):
            pe = ends_ptr + (b * S + i) * 2 * C2 + offs_c
            ez = tl.load(pe, mask=mc, other=0.0).to(tl.float64)
            ey = tl.load(pe + C2, mask=mc, other=0.0).to(tl.float64)
            sz, sy = t11 * sz + t12 * sy + ez, t21 * sz + t22 * sy + ey
    rows = tl.arange(0, BLOCK_L)
    u_row = u_ptr + b * L * H
    for k in range(seg * KS, tl.minimum(seg * KS + KS, K)):
        l0 = k * BLOCK_L
        offs_l = l0 + rows
        ml = offs_l < L
        v = _forcing(u_row, w_ptr, offs_l, ml, offs_c, mc, L, H, BLOCK_L, BLOCK_C, BLOCK_H, PRECISION)
        valid = ml[:, None] & (offs_c >= 0)[None, :]
        a11 = tl.where(valid, m11[None, :], 1.0)
        a12 = tl.where(valid, m12[None, :], 0.0)
        a21 = tl.where(valid, m21[None, :], 0.0)
        a22 = tl.where(valid, m22[None, :], 1.0)
        A11, A12, A21, A22, Bz, By = tl.associative_scan(
            (a11, a12, a21, a22, f1[None, :] * v, f2[None, :] * v), 0, _combine_block)
        if not ENDS_ONLY:
            cz = sz.to(tl.float32)
            cy = sy.to(tl.float32)
            pc = carry_ptr + (b * K + k) * 2 * C2 + offs_c
            tl.store(pc, cz, mask=mc)
            tl.store(pc + C2, cy, mask=mc)
            xy = By + A21 * cz[None, :] + A22 * cy[None, :]
            tl.store(y_ptr + (b * L + offs_l[:, None]) * C2 + offs_c[None, :], xy, mask=ml[:, None] & mc[None, :])
            if l0 + BLOCK_L >= L:                                 # last chunk: padding rows are identities
                xz = Bz + A11 * cz[None, :] + A12 * cy[None, :]
                tl.store(fin_ptr + b * 2 * C2 + offs_c, _row(xz, rows, BLOCK_L - 1), mask=mc)
                tl.store(fin_ptr + b * 2 * C2 + C2 + offs_c, _row(xy, rows, BLOCK_L - 1), mask=mc)
        ez = _row(Bz, rows, BLOCK_L - 1).to(tl.float64)
        ey = _row(By, rows, BLOCK_L - 1).to(tl.float64)
        sz, sy = k11 * sz + k12 * sy + ez, k21 * sz + k22 * sy + ey
    if ENDS_ONLY:                                                 # full chunks: the fp64 carry is the end state
        tl.store(fin_ptr + rb * 2 * C2 + offs_c, sz.to(tl.float32), mask=mc)
        tl.store(fin_ptr + rb * 2 * C2 + C2 + offs_c, sy.to(tl.float32), mask=mc)


@triton.jit
def _bwd_kernel(
    u_ptr, w_ptr, m_ptr, f_ptr, m64_ptr, carry_ptr, gy_ptr, gfin_ptr, rin_ptr, dv_ptr, dm_ptr, df_ptr, rho0_ptr,
    L, H, P, K, KS,
    HAS_GFIN: tl.constexpr, RHO_ONLY: tl.constexpr, HAS_RIN: tl.constexpr, BLOCK_L: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, PRECISION: tl.constexpr,
):
    # program (b, channel block, segment): chunks [seg KS, (seg + 1) KS) from the end, with rho carried in
    # from the segments after it (HAS_RIN: rin[b, i] holds each segment's rho at its first row from zero,
    # chained here as r <- T^T r + rin[b, i] for i = S-1 .. seg+1, fp64, T = M^(KS BLOCK_L)); RHO_ONLY: only
    # rho from zero, storing its value at the segment's first row (rho0[b, seg])
    b = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(2)
    S = tl.num_programs(2)
    rb = b * S + seg
    C2 = 2 * P
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mc = offs_c < C2
    p = offs_c % P
    m11, m12, m21, m22 = _load_block2(m_ptr, p, mc, P)
    f1 = tl.load(f_ptr + p, mask=mc, other=0.0)
    f2 = tl.load(f_ptr + P + p, mask=mc, other=0.0)
    k11, k12, k21, k22 = _load_block2(m64_ptr, p, mc, P)          # M in fp64 ...
    k11, k12, k21, k22 = _block_pow(k11, k12, k21, k22, tl.full([], BLOCK_L, tl.int32))   # M^BLOCK_L; ^T acts on rho
    gfz = tl.zeros([BLOCK_C], dtype=tl.float32)
    gfy = tl.zeros([BLOCK_C], dtype=tl.float32)
    if HAS_GFIN:
        gfz = tl.load(gfin_ptr + b * 2 * C2 + offs_c, mask=mc, other=0.0)
        gfy = tl.load(gfin_ptr + b * 2 * C2 + C2 + offs_c, mask=mc, other=0.0)
    rz = tl.zeros([BLOCK_C], dtype=tl.float64)                    # rho carried in from the next chunk
    ry = tl.zeros([BLOCK_C], dtype=tl.float64)
    if HAS_RIN:
        t11, t12, t21, t22 = _block_pow(k11, k12, k21, k22, KS)
        for j in range(0, S - 1 - seg):
            pr = rin_ptr + (b * S + (S - 1 - j)) * 2 * C2 + offs_c
            ez = tl.load(pr, mask=mc, other=0.0).to(tl.float64)
            ey = tl.load(pr + C2, mask=mc, other=0.0).to(tl.float64)
            rz, ry = t11 * rz + t21 * ry + ez, t12 * rz + t22 * ry + ey
    d11 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d12 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d21 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d22 = tl.zeros([BLOCK_C], dtype=tl.float32)
    df1 = tl.zeros([BLOCK_C], dtype=tl.float32)
    df2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    rows = tl.arange(0, BLOCK_L)
    u_row = u_ptr + b * L * H
    k_end = tl.minimum(seg * KS + KS, K)
    for t in range(0, k_end - seg * KS):
        k = k_end - 1 - t
        l0 = k * BLOCK_L
        offs_l = l0 + rows
        ml = offs_l < L
        m2 = ml[:, None] & mc[None, :]
        valid = ml[:, None] & (offs_c >= 0)[None, :]
        a11 = tl.where(valid, m11[None, :], 1.0)
        a12 = tl.where(valid, m12[None, :], 0.0)
        a21 = tl.where(valid, m21[None, :], 0.0)
        a22 = tl.where(valid, m22[None, :], 1.0)
        pg = gy_ptr + (b * L + offs_l[:, None]) * C2 + offs_c[None, :]
        if RHO_ONLY:
            T11, T12, T21, T22, Rz, Ry = _rho_scan(a11, a12, a21, a22, pg, offs_l, mc, gfz, gfy, L, C2)
        else:
            # states of this chunk, recomputed from the stored chunk-start state
            v = _forcing(u_row, w_ptr, offs_l, ml, offs_c, mc, L, H, BLOCK_L, BLOCK_C, BLOCK_H, PRECISION)
            A11, A12, A21, A22, Bz, By = tl.associative_scan(
                (a11, a12, a21, a22, f1[None, :] * v, f2[None, :] * v), 0, _combine_block)
            pc = carry_ptr + (b * K + k) * 2 * C2 + offs_c
            cz = tl.load(pc, mask=mc, other=0.0)
            cy = tl.load(pc + C2, mask=mc, other=0.0)
            xz = Bz + A11 * cz[None, :] + A12 * cy[None, :]
            xy = By + A21 * cz[None, :] + A22 * cy[None, :]
            T11, T12, T21, T22, Rz, Ry = _rho_scan(a11, a12, a21, a22, pg, offs_l, mc, gfz, gfy, L, C2)
            qz = rz.to(tl.float32)
            qy = ry.to(tl.float32)
            rhoz = Rz + T11 * qz[None, :] + T12 * qy[None, :]
            rhoy = Ry + T21 * qz[None, :] + T22 * qy[None, :]
            # lam_n = M^T rho_n + (0, g_n) (+ g_fin at n = L-1)
            g = tl.load(pg, mask=m2, other=0.0)
            at_last = (offs_l == L - 1)[:, None]
            lz = m11[None, :] * rhoz + m21[None, :] * rhoy + tl.where(at_last, gfz[None, :], 0.0)
            ly = m12[None, :] * rhoz + m22[None, :] * rhoy + g + tl.where(at_last, gfy[None, :], 0.0)
            tl.store(dv_ptr + (b * L + offs_l[:, None]) * C2 + offs_c[None, :],
                     f1[None, :] * lz + f2[None, :] * ly, mask=m2)
            d11 += tl.sum(rhoz * xz, axis=0)
            d12 += tl.sum(rhoz * xy, axis=0)
            d21 += tl.sum(rhoy * xz, axis=0)
            d22 += tl.sum(rhoy * xy, axis=0)
            df1 += tl.sum(lz * v, axis=0)
            df2 += tl.sum(ly * v, axis=0)
        # rho at the chunk's first row, in fp64 with the exact (M^T)^BLOCK_L
        ez = _row(Rz, rows, 0).to(tl.float64)
        ey = _row(Ry, rows, 0).to(tl.float64)
        rz, ry = k11 * rz + k21 * ry + ez, k12 * rz + k22 * ry + ey
    if not RHO_ONLY:
        base = rb * 4 * C2 + offs_c
        tl.store(dm_ptr + base, d11, mask=mc)
        tl.store(dm_ptr + base + C2, d12, mask=mc)
        tl.store(dm_ptr + base + 2 * C2, d21, mask=mc)
        tl.store(dm_ptr + base + 3 * C2, d22, mask=mc)
        tl.store(df_ptr + rb * 2 * C2 + offs_c, df1, mask=mc)
        tl.store(df_ptr + rb * 2 * C2 + C2 + offs_c, df2, mask=mc)
    tl.store(rho0_ptr + rb * 2 * C2 + offs_c, rz.to(tl.float32), mask=mc)
    tl.store(rho0_ptr + rb * 2 * C2 + C2 + offs_c, ry.to(tl.float32), mask=mc)


# ---- host side ---------------------------------------------------------------------------------
#: Tile sizes (tests lower them to run several chunks / channel blocks / H slices on tiny shapes). The
#: backward walks the same chunks as the forward (it reads the forward's chunk-start states). Sized so
#: that no variant spills registers on sm_80 / sm_90 (tests/test_triton_resources.py): each
#: (BLOCK_L, BLOCK_C) tile of the 6-tuple 2x2 scans and ~25 per-channel vectors must fit; measured
#: with ptxas: fwd (64, 32) 255 regs + 80-200 B spills, bwd (64, 32) 300-570 B, bwd (32, 32) 316 B,
#: fwd / bwd (32, 16) 214 / 243 regs, no spills; BLOCK_H = 16 spilled 16 B on sm_80 at 168 regs.
BLOCK_L = 32
FWD_MAX_BLOCK_C = 16
BWD_MAX_BLOCK_C = 16
BLOCK_H = 32
#: ``tl.dot`` precision of the forcing ``u W^T``: 3xTF32, fp32-faithful on tensor cores.
PRECISION = "tf32x3"

#: Parallelism along L: when batch x channel blocks give fewer than TARGET_PROGRAMS programs, L is cut
#: into segments of >= MIN_SEGMENT_CHUNKS chunks run side by side. A first pass finds each segment's
#: end state from zero (forward) / its rho at the first row from zero (backward, scan only); the main
#: pass chains those boundary values in fp64 with the exact ``M^(segment length)`` (each program the ones
#: before / after its segment) and runs every segment from its true boundary value.
TARGET_PROGRAMS = 512
MIN_SEGMENT_CHUNKS = 4

_FWD_SIG = signature("*fp32", ["u_ptr", "w_ptr", "m_ptr", "f_ptr"], []) + (("m64_ptr", "*fp64"),) + signature(
    "*fp32", ["x0_ptr", "ends_ptr", "y_ptr", "carry_ptr", "fin_ptr"], ["L", "H", "P", "K", "KS"])
_BWD_SIG = signature("*fp32", ["u_ptr", "w_ptr", "m_ptr", "f_ptr"], []) + (("m64_ptr", "*fp64"),) + signature(
    "*fp32", ["carry_ptr", "gy_ptr", "gfin_ptr", "rin_ptr", "dv_ptr", "dm_ptr", "df_ptr", "rho0_ptr"],
    ["L", "H", "P", "K", "KS"])


def _block_c(P: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(2 * P)))


def _block_h(H: int) -> int:
    return BLOCK_H                                     # a fixed slice of H (masked): smaller ones spill on sm_80


def _fwd_config(P: int, H: int, has_x0: bool, ends_only: bool = False, chain: bool = False):
    return make(__name__, _fwd_kernel, _FWD_SIG, HAS_X0=has_x0 and not ends_only, ENDS_ONLY=ends_only,
                CHAIN=chain and not ends_only, BLOCK_L=BLOCK_L, BLOCK_C=_block_c(P, FWD_MAX_BLOCK_C),
                BLOCK_H=_block_h(H), PRECISION=PRECISION)


def _bwd_config(P: int, H: int, has_gfin: bool, rho_only: bool = False, has_rin: bool = False):
    return make(__name__, _bwd_kernel, _BWD_SIG, HAS_GFIN=has_gfin, RHO_ONLY=rho_only,
                HAS_RIN=has_rin and not rho_only, BLOCK_L=BLOCK_L, BLOCK_C=_block_c(P, BWD_MAX_BLOCK_C),
                BLOCK_H=_block_h(H), PRECISION=PRECISION)


def configs():
    """Every launch configuration the forward and backward can choose."""
    out = []
    for P in pow2_domain(max(FWD_MAX_BLOCK_C, BWD_MAX_BLOCK_C)):
        for H in pow2_domain(BLOCK_H):
            for flag in (False, True):
                out += [_fwd_config(P, H, flag, chain=c) for c in (False, True)]
                out += [_fwd_config(P, H, flag, ends_only=True)]
                out += [_bwd_config(P, H, flag, rho_only=r, has_rin=i) for r in (False, True) for i in (False, True)]
    return unique(out)


def _segments(programs: int, K: int):
    """(S, KS): K chunks cut into S segments of KS chunks (S = 1 when the grid is already full)."""
    S = max(1, min(triton.cdiv(TARGET_PROGRAMS, max(1, programs)), K // MIN_SEGMENT_CHUNKS))
    KS = triton.cdiv(K, S)
    return triton.cdiv(K, KS), KS


def _flat(M: Tensor) -> Tensor:
    return M.reshape(4, M.shape[-1]).contiguous()


def _plan(cfg, u: Tensor, P: int):
    """Geometry of one launch of ``cfg`` over u (B, L, H) and 2P channels: (K chunks of BLOCK_L steps,
    nC channel blocks, S segments of KS chunks) -- the forward and the backward walk the same chunks."""
    Bsz, L, _ = u.shape
    K = triton.cdiv(L, cfg.consts["BLOCK_L"])
    nC = triton.cdiv(2 * P, cfg.consts["BLOCK_C"])
    S, KS = _segments(Bsz * nC, K)
    return K, nC, S, KS


def _forward(u, W, M32, f32, M64, x0):
    Bsz, L, H = u.shape
    P = M32.shape[-1]
    C2 = 2 * P
    cfg = _fwd_config(P, H, x0 is not None)
    K, nC, S, KS = _plan(cfg, u, P)
    y = torch.empty(Bsz, L, C2, device=u.device, dtype=torch.float32)
    carries = torch.empty(Bsz, K, 2, C2, device=u.device, dtype=torch.float32)
    fin = torch.empty(Bsz, 2, C2, device=u.device, dtype=torch.float32)
    args = (u, W, _flat(M32), f32, M64)
    ends = y
    if S > 1:                      # segment ends from zero; the main launch chains them in fp64 (CHAIN)
        ends = torch.empty(Bsz, S, 2, C2, device=u.device, dtype=torch.float32)
        _fwd_config(P, H, False, ends_only=True).launch((Bsz, nC, S), *args, y, y, y, carries, ends, L, H, P, K, KS)
        cfg = _fwd_config(P, H, x0 is not None, chain=True)
    cfg.launch((Bsz, nC, S), *args, y if x0 is None else x0, ends, y, carries, fin, L, H, P, K, KS)
    return y, carries, fin


def _f32(t: Tensor) -> Tensor:
    """``t`` as contiguous float32, without an op when it already is."""
    return contiguous(t if t.dtype == torch.float32 else t.to(torch.float32))


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _scan_torch(u: Tensor, W: Tensor, M: Tensor, f: Tensor, x0: Optional[Tensor], M64=None):
    """What :class:`LinossScanFn` computes, ``(y, x_last)``, by the PyTorch parallel scan (M64 unused): its twin.
    Registered here, as the layer (:mod:`statespaces.layers.linoss`, which dispatches to the kernel) sits above."""
    from ..scan import scan_block2

    v = u @ W.T                                                        # (B, L, 2P)
    M2, f2 = torch.cat([M, M], -1), torch.cat([f, f], -1)              # the same blocks for Re and Im
    X = scan_block2(M2.unsqueeze(0), f2 * v.unsqueeze(-2), x0)         # (B, L, 2, 2P)
    return X[:, :, 1], X[:, -1]


backend.register_twin("LinossScanFn", _scan_torch)


def _forward_inputs(ctx):
    """This call's forward arguments, fp32 as saved (the fallback of :class:`LinossScanFn`'s backward)."""
    u, W, M, f, _, x0 = ctx.saved_tensors
    return u, W, M, f, x0, None


class LinossScanFn(torch.autograd.Function):
    """Autograd wrapper of the fused LinOSS scan kernels (fp32 inside; gradients in the input dtypes)."""

    @staticmethod
    @fp32_forward
    def forward(ctx, u: Tensor, W: Tensor, M: Tensor, f: Tensor, x0: Optional[Tensor], M64: Tensor):
        u32, W32 = _f32(u), _f32(W)
        M32, f32 = _f32(M.detach()), _f32(f.detach())
        x032 = None if x0 is None else _f32(x0.detach())
        ctx.M64 = _flat(M64.detach())
        y, carries, fin = _forward(u32, W32, M32, f32, ctx.M64, x032)
        ctx.save_for_backward(u32, W32, M32, f32, carries, x032 if x0 is not None else None)
        ctx.dtypes = (u.dtype, W.dtype, M.dtype, f.dtype, None if x0 is None else x0.dtype)
        ctx.fallback_op = backend.fallback_op()
        return y, fin

    @staticmethod
    @backend.first_order
    @amp_backward
    @backend.backward_with_fallback("LinossScanFn", _forward_inputs)
    def backward(ctx, gy: Tensor, gfin: Optional[Tensor]):
        u, W, M, f, carries, x0 = ctx.saved_tensors
        Bsz, L, H = u.shape
        P = M.shape[-1]
        C2 = 2 * P
        cfg = _bwd_config(P, H, gfin is not None)
        K, nC, S, KS = _plan(cfg, u, P)
        gy = torch.zeros(Bsz, L, C2, device=u.device, dtype=torch.float32) if gy is None else _f32(gy)
        gf = None if gfin is None else _f32(gfin)
        dv = torch.empty(Bsz, L, C2, device=u.device, dtype=torch.float32)
        dm = torch.empty(Bsz, S, 4, C2, device=u.device, dtype=torch.float32)
        df = torch.empty(Bsz, S, 2, C2, device=u.device, dtype=torch.float32)
        rho0 = torch.empty(Bsz, S, 2, C2, device=u.device, dtype=torch.float32)
        args = (u, W, _flat(M), f, ctx.M64, carries, gy, gy if gf is None else gf)
        rin = gy
        if S > 1:                  # each segment's rho from zero; the main launch chains them backwards in fp64
            rin = torch.empty(Bsz, S, 2, C2, device=u.device, dtype=torch.float32)
            _bwd_config(P, H, gf is not None, rho_only=True).launch(
                (Bsz, nC, S), *args, gy, gy, gy, gy, rin, L, H, P, K, KS)
            cfg = _bwd_config(P, H, gf is not None, has_rin=True)
        cfg.launch((Bsz, nC, S), *args, rin, dv, dm, df, rho0, L, H, P, K, KS)
        rho0 = rho0[:, 0]
        du = dv @ W
        dW = dv.reshape(-1, C2).T @ u.reshape(-1, H)
        dM = dm.sum((0, 1)).reshape(2, 2, C2)
        dx0 = None
        if x0 is not None:
            M2 = torch.cat([M, M], -1)                                 # (2, 2, 2P)
            # lam_0 = M^T rho_0 + e_y g_0 (+ g_fin when L = 1): the adjoint at step 0, needed for x0 only
            lam0 = torch.einsum("jip,bjp->bip", M2, rho0)
            lam0 = lam0 + torch.stack([torch.zeros_like(gy[:, 0]), gy[:, 0]], 1)
            if gf is not None and L == 1:
                lam0 = lam0 + gf
            dM = dM + torch.einsum("bip,bjp->ijp", lam0, x0)
            dx0 = _as(torch.einsum("jip,bjp->bip", M2, lam0), ctx.dtypes[4])
        dM = dM[..., :P] + dM[..., P:]
        dfs = df.sum((0, 1))
        dfs = dfs[..., :P] + dfs[..., P:]
        dt = ctx.dtypes
        return _as(du, dt[0]), _as(dW, dt[1]), _as(dM, dt[2]), _as(dfs, dt[3]), dx0, None


def linoss_scan_triton(u: Tensor, W: Tensor, M: Tensor, f: Tensor, x0: Optional[Tensor] = None,
                       M64: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    r"""Positions and final state of the LinOSS recurrence ``x_n = M x_{n-1} + f (W u_n)``.

    Args:
        u: real input (B, L, H).
        W: real input projection (2P, H), ``[Re B; Im B]`` (channel c < P: real part of oscillator c,
            c >= P: imaginary part of oscillator c - P).
        M: (2, 2, P) real transition blocks; f: (2, P) forcing coefficients (float64 recommended:
            the kernel's chunk carry uses ``M^BLOCK_L`` formed in float64 from it).
        x0: state before the first step (B, 2, 2P) real (``[:, 0]`` velocity, ``[:, 1]`` position),
            or None for zeros.
        M64: optional float64 copy of M used only for the exact chunk powers (default: M).

    Returns:
        ``(y, x_last)``: positions (B, L, 2P) and the final state (B, 2, 2P), fp32.
    """
    if u.dim() != 3 or W.dim() != 2 or W.shape[1] != u.shape[-1]:
        raise ValueError(f"linoss_scan_triton: u must be (B, L, H) and W (2P, H), got {tuple(u.shape)} and "
                         f"{tuple(W.shape)}")
    P = W.shape[0] // 2
    if W.shape[0] != 2 * P or M.shape != (2, 2, P) or f.shape != (2, P):
        raise ValueError(f"linoss_scan_triton: need W (2P, H), M (2, 2, P), f (2, P); got {tuple(W.shape)}, "
                         f"{tuple(M.shape)}, {tuple(f.shape)}")
    if x0 is not None and x0.shape != (u.shape[0], 2, 2 * P):
        raise ValueError(f"linoss_scan_triton: x0 must be (B, 2, 2P) = {(u.shape[0], 2, 2 * P)}, got {tuple(x0.shape)}")
    Mw = M if M64 is None else M64
    return LinossScanFn.apply(u, W, M, f, x0, _as(Mw.detach(), torch.float64))
