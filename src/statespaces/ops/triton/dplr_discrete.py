r"""S4's dense real-form bilinear discretization ``(Lambda, P, B, dt) -> (dA, dB)`` in one Triton launch, and its
backward in one more.

The map of :meth:`statespaces.layers.s4.S4._real_discrete` (:func:`statespaces.kernels.dplr.bilinear_dplr_real`
and ``dB = (dt/2)(b + dA b)``): the bilinear discretization of a DPLR matrix through Woodbury (thesis app. C.1.1).
Per channel h (H channels, M modes, N = 2M real state size, rank r), with ``s = dt/2``::

    d     = 1 / (1 - s Lambda)                            (M,) complex
    Dinv  = [[diag Re d, -diag Im d], [diag Im d, diag Re d]]      real form of diag(d), (N, N)
    q_a   = [Re P_a; Im P_a],  b = [Re B; Im B]           (N,) real, a < r
    U     = Dinv q,  V = Dinv^T q                         (N, r)
    core  = I_r / (2s) + q^T Dinv q,  C = core^{-1}       (r, r), closed form for r = 1, 2
    Minv  = Dinv - U C V^T                                = (I - s A_R)^{-1},  A_R = real form of diag Lambda - 2 q q^T
    dA    = 2 Minv - I                                    (N, N)
    dB    = 2 s Minv b                                    (N,)

In PyTorch that is ~35 small ops forward and as many backward (a GPU bound by op dispatch); here one program per
channel does it all in float64 registers and writes float32. Nothing N x N is multiplied: Dinv has two entries
per row and the rest is rank r, so every product is a sum over modes of elementwise products.

Layout: a real-form vector of N entries is kept as its two halves (top = real parts, bottom = imaginary parts),
each a (BM,) vector over the modes (BM = the padded mode count), so that Dinv acts elementwise; a stack of r such
vectors (q, U, V, ...) is a pair of (r, BM) tiles, rank on axis 0. Padded modes load Lambda = 0 (d = 1) and
P = B = gradients = 0, so they add nothing to any sum over modes, and they are never stored.

Backward. With ``G = 2 gdA + 2 s gdB b^T`` (the gradient of Minv) and ``X = I - s A_R = Dreal(1 - s Lambda) +
2 s q q^T`` (Minv = X^{-1}), the gradient of X is ``-Y``, ``Y = Minv^T G Minv^T``; then

* ``gLambda = s (Y_tt + Y_bb) - i s (Y_tb - Y_bt)`` from the diagonals of Y's four (M, M) blocks (the entries
  where X depends on Lambda);
* ``gq_a = -2 s (Y + Y^T) q_a``, with ``Minv q = U C / (2s)`` and ``Minv^T q = V C^T / (2s)`` (from the core's
  definition), so that ``Y q`` and ``Y^T q`` need no more products with G than ``G V`` and ``G^T U``;
* ``gs = sum_m [Re Lambda (Y_tt + Y_bb) - Im Lambda (Y_tb - Y_bt)] - 2 sum_a q_a^T Y q_a + 2 (Minv b) . gdB``,
  ``gdt = gs / 2``, and ``gb = 2 s Minv^T gdB``;
* the block diagonals of Y expand Minv^T by Woodbury into ``Dinv^T G Dinv^T`` (2 x 2 per mode: read from the
  diagonals of gdA's blocks) plus rank-r terms built from ``Z = G V``, ``Z' = G^T U`` and ``S = U^T G V``.

The only O(N^2) work of the backward is reading gdA once (each (BM, BM) block in turn), for ``G V`` and ``G^T U``.
Complex gradients follow PyTorch's convention (for a real loss, ``dL/dRe z + i dL/dIm z``). If the backward kernel
fails to compile or launch under the fallback policy, the gradients come from the PyTorch twin
(:func:`statespaces.kernels.dplr.bilinear_dplr_system_ref`, registered by that module;
:func:`statespaces.backend.backward_with_fallback`).

Constants: a Python float literal is an fp32 constant in Triton; only exactly representable ones (0.5, 1, 2)
appear here, so promoting them to fp64 next to fp64 tensors is exact.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import backend
from ._launch import contiguous, make, real_view, signature, unique

if TYPE_CHECKING:
    from ._launch import Config

Tensor = torch.Tensor

__all__ = ["bilinear_dplr_triton", "BilinearDPLRFn", "configs", "MAX_RANK", "MAX_MODES"]

#: Largest rank (closed-form core inverse) and mode count (N = 2M <= 64) the kernels take.
MAX_RANK = 2
MAX_MODES = 32

_FWD_SIG = signature("*fp32", ["lam_ptr", "p_ptr", "b_ptr", "dt_ptr", "da_ptr", "db_ptr"], ["H", "M"])
_BWD_SIG = signature("*fp32", ["lam_ptr", "p_ptr", "b_ptr", "dt_ptr", "gda_ptr", "gdb_ptr", "glam_ptr", "gp_ptr",
                               "gb_ptr", "gdt_ptr"], ["H", "M"])


def _block_m(M: int) -> int:
    return max(16, triton.next_power_of_2(M))


def _bwd_warps(M: int) -> int:
    """4 warps at BM = 16; 8 at BM = 32, where 4 need 254 of the 255 registers at rank 2 (ptxas, sm_80/sm_90)."""
    return 4 if _block_m(M) <= 16 else 8


def _fwd_config(M: int, r: int):
    return make(__name__, _fwd_kernel, _FWD_SIG, num_warps=4, R=r, BM=_block_m(M))


def _bwd_config(M: int, r: int):
    return make(__name__, _bwd_kernel, _BWD_SIG, num_warps=_bwd_warps(M), R=r, BM=_block_m(M))


def configs() -> List["Config"]:
    """Every launch configuration: forward and backward, rank 1 and 2, mode blocks BM = 16 and 32."""
    return unique([f(M, r) for f in (_fwd_config, _bwd_config) for r in range(1, MAX_RANK + 1)
                   for M in range(1, MAX_MODES + 1)])


# ---- small helpers: stacks of real-form vectors as (top, bottom) pairs of (K, BM) tiles --------------------------
@triton.jit
def _mm(A, X):
    # the (I, J) x (J, K) product of two small tiles, as a sum of elementwise products
    return tl.sum(A[:, :, None] * X[None, :, :], 1)


@triton.jit
def _gram(xt, xb, yt, yb):
    # (I, J) table of inner products x_i . y_j of two stacks of real-form vectors
    return tl.sum(xt[:, None, :] * yt[None, :, :] + xb[:, None, :] * yb[None, :, :], 2)


@triton.jit
def _at(X, i: tl.constexpr, j: tl.constexpr, R: tl.constexpr):
    # the entry X[i, j] of an (R, R) tile, as a scalar
    k = tl.arange(0, R)
    return tl.sum(tl.sum(tl.where((k[:, None] == i) & (k[None, :] == j), X, 0.0), 1), 0)


@triton.jit
def _dinv(dr, di, xt, xb, TRANS: tl.constexpr):
    # Dinv x (TRANS: Dinv^T x) on the rows of (K, BM) halves; Dinv = real form of diag(dr + i di)
    if TRANS:
        return dr[None, :] * xt + di[None, :] * xb, dr[None, :] * xb - di[None, :] * xt
    else:
        return dr[None, :] * xt - di[None, :] * xb, di[None, :] * xt + dr[None, :] * xb


@triton.jit
def _woodbury(dr, di, Lt, Lb, Rt, Rb, C, xt, xb, TRANS: tl.constexpr):
    # Dinv x - L C (R^T x) on the rows of x: Minv x with (L, R, C) = (U, V, C), or Minv^T x (TRANS) with (V, U, C^T)
    yt, yb = _dinv(dr, di, xt, xb, TRANS)
    W = _mm(C, _gram(Rt, Rb, xt, xb))                                   # (r, K)
    return yt - _mm(tl.trans(W), Lt), yb - _mm(tl.trans(W), Lb)


@triton.jit
def _system(lam_ptr, p_ptr, b_ptr, dt_ptr, h, H, M, R: tl.constexpr, BM: tl.constexpr):
    # channel h's Woodbury form in fp64: s, d = dr + i di (BM,), q, U, V as (R, BM) halves, C = core^{-1} (R, R),
    # b halves (BM,). Complex inputs are (..., 2) real views: Lambda, B (H, M, 2); P (R, H, M, 2)
    m = tl.arange(0, BM)
    mm = m < M
    rk = tl.arange(0, R)
    s = tl.load(dt_ptr + h).to(tl.float64) * 0.5
    lam = (h * M + m) * 2
    a = tl.load(lam_ptr + lam, mask=mm, other=0.0).to(tl.float64)
    w = tl.load(lam_ptr + lam + 1, mask=mm, other=0.0).to(tl.float64)
    bt = tl.load(b_ptr + lam, mask=mm, other=0.0).to(tl.float64)
    bb = tl.load(b_ptr + lam + 1, mask=mm, other=0.0).to(tl.float64)
    pq = ((rk[:, None] * H + h) * M + m[None, :]) * 2
    pm = (rk[:, None] >= 0) & mm[None, :]
    qt = tl.load(p_ptr + pq, mask=pm, other=0.0).to(tl.float64)
    qb = tl.load(p_ptr + pq + 1, mask=pm, other=0.0).to(tl.float64)
    # d = 1 / (1 - s Lambda) = conj(e) / |e|^2, e = (1 - s a) - i s w
    er = 1.0 - s * a
    ei = -s * w
    den = er * er + ei * ei
    dr = er / den
    di = -ei / den
    Ut, Ub = _dinv(dr, di, qt, qb, False)
    Vt, Vb = _dinv(dr, di, qt, qb, True)
    eye = rk[:, None] == rk[None, :]
    core = tl.where(eye, 1.0 / (2.0 * s), 0.0) + _gram(qt, qb, Ut, Ub)
    if R == 1:
        C = 1.0 / core
    else:
        # the 2 x 2 inverse (tr(core) I - core) / det(core)
        c00 = _at(core, 0, 0, R)
        c11 = _at(core, 1, 1, R)
        det = c00 * c11 - _at(core, 0, 1, R) * _at(core, 1, 0, R)
        C = (tl.where(eye, c00 + c11, 0.0) - core) / det
    return m, mm, rk, pq, pm, s, a, w, dr, di, qt, qb, Ut, Ub, Vt, Vb, C, bt, bb


# ---- forward ----------------------------------------------------------------------------------------------------
@triton.jit
def _store_da_block(da_ptr, base, r0, c0, N, m, mm, diag, E, Vy, ONE: tl.constexpr):
    # one (M, M) block of dA = 2 Minv - I: 2 Dinv's diagonal (diag, (BM,)), minus I on the diagonal blocks (ONE),
    # minus 2 sum_b E_b V_b^T (E = C^T U: Minv = Dinv - E^T V^T by rows)
    on = m[:, None] == m[None, :]
    dense = -2.0 * tl.sum(E[:, :, None] * Vy[:, None, :], 0)
    if ONE:
        dense += tl.where(on, 2.0 * diag[:, None] - 1.0, 0.0)
    else:
        dense += tl.where(on, 2.0 * diag[:, None], 0.0)
    offs = base + (r0 + m[:, None]) * N + c0 + m[None, :]
    tl.store(da_ptr + offs, dense.to(tl.float32), mask=mm[:, None] & mm[None, :])


@triton.jit
def _fwd_kernel(lam_ptr, p_ptr, b_ptr, dt_ptr, da_ptr, db_ptr, H, M, R: tl.constexpr, BM: tl.constexpr):
    # one program per channel h: dA (H, N, N) and dB (H, N), fp32 outputs
    h = tl.program_id(0).to(tl.int64)
    N = 2 * M
    m, mm, rk, pq, pm, s, a, w, dr, di, qt, qb, Ut, Ub, Vt, Vb, C, bt, bb = _system(
        lam_ptr, p_ptr, b_ptr, dt_ptr, h, H, M, R, BM)
    Ct = tl.trans(C)
    Et = _mm(Ct, Ut)
    Eb = _mm(Ct, Ub)
    base = h * N * N
    # Dinv's blocks are diagonal: [[dr, -di], [di, dr]]
    _store_da_block(da_ptr, base, 0, 0, N, m, mm, dr, Et, Vt, True)
    _store_da_block(da_ptr, base, 0, M, N, m, mm, -di, Et, Vb, False)
    _store_da_block(da_ptr, base, M, 0, N, m, mm, di, Eb, Vt, False)
    _store_da_block(da_ptr, base, M, M, N, m, mm, dr, Eb, Vb, True)
    # dB = 2 s Minv b
    yt, yb = _woodbury(dr, di, Ut, Ub, Vt, Vb, C, bt[None, :], bb[None, :], False)
    tl.store(db_ptr + h * N + m, (2.0 * s * tl.sum(yt, 0)).to(tl.float32), mask=mm)
    tl.store(db_ptr + h * N + M + m, (2.0 * s * tl.sum(yb, 0)).to(tl.float32), mask=mm)


# ---- backward ---------------------------------------------------------------------------------------------------
@triton.jit
def _gda_block(gda_ptr, base, r0, c0, N, m, mm):
    # one (M, M) block of gdA (zero outside), fp64
    offs = base + (r0 + m[:, None]) * N + c0 + m[None, :]
    return tl.load(gda_ptr + offs, mask=mm[:, None] & mm[None, :], other=0.0).to(tl.float64)


@triton.jit
def _gda_diag(gda_ptr, base, r0, c0, N, m, mm):
    # the diagonal of one (M, M) block of gdA, fp64
    return tl.load(gda_ptr + base + (r0 + m) * N + c0 + m, mask=mm, other=0.0).to(tl.float64)


@triton.jit
def _bwd_kernel(lam_ptr, p_ptr, b_ptr, dt_ptr, gda_ptr, gdb_ptr, glam_ptr, gp_ptr, gb_ptr, gdt_ptr, H, M,
                R: tl.constexpr, BM: tl.constexpr):
    # one program per channel h: gLambda (H, M, 2), gP (R, H, M, 2), gB (H, M, 2), gdt (H,) from gdA (H, N, N),
    # gdB (H, N); everything recomputed from the inputs
    h = tl.program_id(0).to(tl.int64)
    N = 2 * M
    m, mm, rk, pq, pm, s, a, w, dr, di, qt, qb, Ut, Ub, Vt, Vb, C, bt, bb = _system(
        lam_ptr, p_ptr, b_ptr, dt_ptr, h, H, M, R, BM)
    Ct = tl.trans(C)
    et = tl.load(gdb_ptr + h * N + m, mask=mm, other=0.0).to(tl.float64)          # gdB halves
    eb = tl.load(gdb_ptr + h * N + M + m, mask=mm, other=0.0).to(tl.float64)

    # Z = G V and Z' = G^T U, G = 2 gdA + 2 s gdB b^T: gdA read once, block by block (rows half, columns half)
    base = h * N * N
    G = _gda_block(gda_ptr, base, 0, 0, N, m, mm)
    Zt = tl.sum(G[None, :, :] * Vt[:, None, :], 2)
    Zpt = tl.sum(G[None, :, :] * Ut[:, :, None], 1)
    G = _gda_block(gda_ptr, base, 0, M, N, m, mm)
    Zt += tl.sum(G[None, :, :] * Vb[:, None, :], 2)
    Zpb = tl.sum(G[None, :, :] * Ut[:, :, None], 1)
    G = _gda_block(gda_ptr, base, M, 0, N, m, mm)
    Zb = tl.sum(G[None, :, :] * Vt[:, None, :], 2)
    Zpt += tl.sum(G[None, :, :] * Ub[:, :, None], 1)
    G = _gda_block(gda_ptr, base, M, M, N, m, mm)
    Zb += tl.sum(G[None, :, :] * Vb[:, None, :], 2)
    Zpb += tl.sum(G[None, :, :] * Ub[:, :, None], 1)
    bV = tl.sum(bt[None, :] * Vt + bb[None, :] * Vb, 1)[:, None]                    # (R, 1): b . V_j
    eU = tl.sum(et[None, :] * Ut + eb[None, :] * Ub, 1)[:, None]                    # gdB . U_i
    Zt = 2.0 * Zt + 2.0 * s * et[None, :] * bV
    Zb = 2.0 * Zb + 2.0 * s * eb[None, :] * bV
    Zpt = 2.0 * Zpt + 2.0 * s * bt[None, :] * eU
    Zpb = 2.0 * Zpb + 2.0 * s * bb[None, :] * eU

    # the 2 x 2 mode-diagonal blocks of Y = Minv^T G Minv^T. First Dinv^T G Dinv^T: per mode Dm^T Gm Dm^T with
    # Dm^T = [[dr, di], [-di, dr]] and Gm the diagonals of G's blocks
    g_tt = 2.0 * _gda_diag(gda_ptr, base, 0, 0, N, m, mm) + 2.0 * s * et * bt
    g_tb = 2.0 * _gda_diag(gda_ptr, base, 0, M, N, m, mm) + 2.0 * s * et * bb
    g_bt = 2.0 * _gda_diag(gda_ptr, base, M, 0, N, m, mm) + 2.0 * s * eb * bt
    g_bb = 2.0 * _gda_diag(gda_ptr, base, M, M, N, m, mm) + 2.0 * s * eb * bb
    w_tt = g_tt * dr - g_tb * di                                                     # Gm Dm^T
    w_tb = g_tt * di + g_tb * dr
    w_bt = g_bt * dr - g_bb * di
    w_bb = g_bt * di + g_bb * dr
    y_tt = dr * w_tt + di * w_bt
    y_tb = dr * w_tb + di * w_bb
    y_bt = dr * w_bt - di * w_tt
    y_bb = dr * w_bb - di * w_tb
    # then the rank-r terms: Y -= sum_b (Dinv^T Z)_b E_b^T + V_b F_b^T, with E = C^T U and
    # F = C^T (Dinv Z') - (C^T S C^T) U, S = U^T Z (the cross terms of Minv^T = Dinv^T - V C^T U^T)
    DZt, DZb = _dinv(dr, di, Zt, Zb, True)
    DZpt, DZpb = _dinv(dr, di, Zpt, Zpb, False)
    K4 = _mm(_mm(Ct, _gram(Ut, Ub, Zt, Zb)), Ct)
    Et = _mm(Ct, Ut)
    Eb = _mm(Ct, Ub)
    Ft = _mm(Ct, DZpt) - _mm(K4, Ut)
    Fb = _mm(Ct, DZpb) - _mm(K4, Ub)
    y_tt -= tl.sum(DZt * Et + Vt * Ft, 0)
    y_tb -= tl.sum(DZt * Eb + Vt * Fb, 0)
    y_bt -= tl.sum(DZb * Et + Vb * Ft, 0)
    y_bb -= tl.sum(DZb * Eb + Vb * Fb, 0)
    ydiag = y_tt + y_bb
    yoff = y_tb - y_bt
    lam = (h * M + m) * 2
    tl.store(glam_ptr + lam, (s * ydiag).to(tl.float32), mask=mm)
    tl.store(glam_ptr + lam + 1, (-s * yoff).to(tl.float32), mask=mm)

    # gq = -2 s (Y q + Y^T q): Y q = Minv^T G (V C^T / 2s), Y^T q = Minv G^T (U C / 2s)
    inv2s = 0.5 / s
    Yqt, Yqb = _woodbury(dr, di, Vt, Vb, Ut, Ub, Ct, _mm(C, Zt) * inv2s, _mm(C, Zb) * inv2s, True)
    YTqt, YTqb = _woodbury(dr, di, Ut, Ub, Vt, Vb, C, _mm(Ct, Zpt) * inv2s, _mm(Ct, Zpb) * inv2s, False)
    tl.store(gp_ptr + pq, (-2.0 * s * (Yqt + YTqt)).to(tl.float32), mask=pm)
    tl.store(gp_ptr + pq + 1, (-2.0 * s * (Yqb + YTqb)).to(tl.float32), mask=pm)

    # gb = 2 s Minv^T gdB;  gs = (terms of X) + 2 (Minv b) . gdB;  gdt = gs / 2
    gbt, gbb = _woodbury(dr, di, Vt, Vb, Ut, Ub, Ct, et[None, :], eb[None, :], True)
    tl.store(gb_ptr + lam, (2.0 * s * tl.sum(gbt, 0)).to(tl.float32), mask=mm)
    tl.store(gb_ptr + lam + 1, (2.0 * s * tl.sum(gbb, 0)).to(tl.float32), mask=mm)
    Mbt, Mbb = _woodbury(dr, di, Ut, Ub, Vt, Vb, C, bt[None, :], bb[None, :], False)
    gs = tl.sum(a * ydiag - w * yoff, 0)
    gs -= 2.0 * tl.sum(tl.sum(qt * Yqt + qb * Yqb, 1), 0)
    gs += 2.0 * tl.sum(tl.sum(Mbt * et[None, :] + Mbb * eb[None, :], 1), 0)
    tl.store(gdt_ptr + h, (0.5 * gs).to(tl.float32))


# ---- host side --------------------------------------------------------------------------------------------------
def _check(Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> None:
    def bad(msg: str):
        raise ValueError(f"bilinear_dplr_triton: {msg}")

    for name, t in (("Lambda", Lambda), ("P", P), ("B", B)):
        if t.dtype != torch.complex64:
            bad(f"{name} must be complex64, got {t.dtype}")
    if dt.dtype != torch.float32:
        bad(f"dt must be float32, got {dt.dtype}")
    if Lambda.dim() != 2 or P.dim() != 3 or B.dim() != 2 or dt.dim() != 1:
        bad(f"expected Lambda (H, M), P (r, H, M), B (H, M), dt (H,), got {tuple(Lambda.shape)}, "
            f"{tuple(P.shape)}, {tuple(B.shape)}, {tuple(dt.shape)}")
    H, M = Lambda.shape
    if tuple(P.shape[1:]) != (H, M) or tuple(B.shape) != (H, M) or tuple(dt.shape) != (H,):
        bad(f"shapes disagree: Lambda {tuple(Lambda.shape)}, P {tuple(P.shape)}, B {tuple(B.shape)}, "
            f"dt {tuple(dt.shape)}")
    if not 1 <= P.shape[0] <= MAX_RANK:
        bad(f"rank r = {P.shape[0]} is not supported (1 <= r <= {MAX_RANK})")
    if not 1 <= M <= MAX_MODES:
        bad(f"M = {M} modes is not supported (1 <= M <= {MAX_MODES}, N = 2M <= {2 * MAX_MODES})")
    if len({t.device for t in (Lambda, P, B, dt)}) != 1:
        bad("Lambda, P, B and dt must be on one device")


def _forward_inputs(ctx):
    """``(Lambda, P, B, dt)`` of this call, from their saved real views (the fallback of the backward)."""
    lam, p, b, dt = ctx.saved_tensors
    return torch.view_as_complex(lam), torch.view_as_complex(p), torch.view_as_complex(b), dt


class BilinearDPLRFn(torch.autograd.Function):
    r"""``(dA, dB) = bilinear_dplr(Lambda, P, B, dt)``, forward and backward one Triton launch each (module notes).

    Inputs: Lambda (H, M), P (r, H, M), B (H, M) complex64; dt (H,) float32. Outputs dA (H, N, N), dB (H, N)
    float32. Saves only the inputs (their real views); the backward recomputes the Woodbury form.
    """

    @staticmethod
    def forward(ctx, Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> Tuple[Tensor, Tensor]:
        lam, p, b, dt = real_view(Lambda), real_view(P), real_view(B), contiguous(dt)
        (H, M), r = Lambda.shape, P.shape[0]
        dA = torch.empty(H, 2 * M, 2 * M, dtype=torch.float32, device=dt.device)
        dB = torch.empty(H, 2 * M, dtype=torch.float32, device=dt.device)
        _fwd_config(M, r).launch((H,), lam, p, b, dt, dA, dB, H, M)
        ctx.save_for_backward(lam, p, b, dt)
        ctx.set_materialize_grads(False)
        ctx.fallback_op = backend.fallback_op()
        return dA, dB

    @staticmethod
    @backend.first_order
    @backend.backward_with_fallback("BilinearDPLRFn", _forward_inputs)
    def backward(ctx, gdA: Optional[Tensor], gdB: Optional[Tensor]):
        lam, p, b, dt = ctx.saved_tensors
        if gdA is None and gdB is None:
            return None, None, None, None
        r, H, M = p.shape[0], p.shape[1], p.shape[2]
        N = 2 * M
        gdA = torch.zeros(H, N, N, dtype=torch.float32, device=dt.device) if gdA is None else contiguous(gdA)
        gdB = torch.zeros(H, N, dtype=torch.float32, device=dt.device) if gdB is None else contiguous(gdB)
        glam, gp, gb, gdt = torch.empty_like(lam), torch.empty_like(p), torch.empty_like(b), torch.empty_like(dt)
        _bwd_config(M, r).launch((H,), lam, p, b, dt, gdA, gdB, glam, gp, gb, gdt, H, M)
        need = ctx.needs_input_grad
        return (torch.view_as_complex(glam) if need[0] else None, torch.view_as_complex(gp) if need[1] else None,
                torch.view_as_complex(gb) if need[2] else None, gdt if need[3] else None)


def bilinear_dplr_triton(Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> Tuple[Tensor, Tensor]:
    r"""S4's real-form bilinear ``(dA, dB)`` (:meth:`statespaces.layers.s4.S4._real_discrete`): dA (H, N, N) =
    :func:`statespaces.kernels.dplr.bilinear_dplr_real` and dB (H, N) = ``(dt/2)(b + dA b)``, float32, in one
    Triton launch (one more for the backward, differentiable in all four inputs).

    Lambda (H, M), P (r, H, M), B (H, M) complex64, dt (H,) float32; r <= :data:`MAX_RANK`, M <= :data:`MAX_MODES`.
    Raises ``ValueError`` for anything else. Computes in float64 internally.
    """
    _check(Lambda, P, B, dt)
    return BilinearDPLRFn.apply(Lambda, P, B, dt)
