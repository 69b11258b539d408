r"""Fused Vandermonde kernel generation for S4D in Triton, by powers (issue #17 item 5).

``out[r, l] = Re sum_n c[r, n] lambda_n^l`` with ``lambda_n = exp(w[h(r), n])`` for coefficient rows r
(batch x H) and shared eigenvalue logs w (H, N) (thesis §3.2.1, eq. 3.2; §3.5.3). The (N, L) powers
live only in registers (no (H, N, L) intermediate); sums are accumulated in fp32.

Powers, not per-entry transcendentals. Write ``l = l0 + r`` with ``l0`` the start of a tile of
BLOCK_L lags and ``r < BLOCK_L``. Then ``lambda^l = lambda^{l0} lambda^r``, so

    out[l0 + r] = Re sum_n d_n P[n, r],      d_n = c_n lambda_n^{l0},   P[n, r] = lambda_n^r.

* The **in-tile powers** ``P`` (BLOCK_N, BLOCK_L) are computed once per program and reused for every
  lag tile it owns (a program owns a run of at least :data:`MIN_TILES` tiles): magnitude
  ``exp(r Re w)`` in fp32 (absolute error <= 2^-24 / e, as ``|x| e^x <= 1/e`` for x <= 0), phase
  ``r Im w`` by exact splitting (``Im w = hi + lo``, ``hi`` with 16 significant bits, so ``r hi`` is
  exact in fp32 for r < 256 and its reduction by whole turns is exact (Cody-Waite), ``r lo`` tiny).
* The **tile base** ``lambda^{l0}`` is carried from tile to tile in **fp64**: the step
  ``lambda^BLOCK_L`` and the program's first base ``lambda^start`` are formed by each program for its
  modes in fp64 (exponent, phase reduction, libdevice exp / cos / sin: O(BLOCK_N) work per program, and
  no host-side tables, so a forward or backward is one launch), and each tile multiplies
  by the step (4 fp64 FMAs per mode and tile, rounded to fp32 for use). The fp64 recurrence adds
  ~2^-53 relative error per tile, so over the <= 2^10 tiles of L = 65,536 the base stays exact to
  fp32 rounding: the error of the result is a few fp32 roundings (~1e-7 relative) and does not grow
  with L (tested to L = 65,536). No transcendental runs in the kernels' loops.
* The inner loop is then 2 fp32 FMAs per (mode, lag) in the forward (``d_r P_r - d_i P_i``) plus the
  sum over modes, instead of one ``exp`` and one ``sincos`` per entry.

Backward (:class:`VandermondeFn`): for a real loss with upstream gradient g (rows, L), PyTorch's
complex gradient convention (``dLoss/dRe + i dLoss/dIm``) gives

    grad_c[r, n] = conj(S0),      grad_w[h, n] = sum_{r of h} conj(c[r, n] S1[r, n]),
    S0 = sum_l g_l lambda_n^l,    S1 = sum_l l g_l lambda_n^l.

With ``l = l0 + r``: ``S0 = sum_r P[n, r] G0[n, r]``, ``S1 = sum_r P[n, r] G1[n, r]`` where
``G0[n, r] = sum_{l0} lambda_n^{l0} g_{l0+r}`` and ``G1[n, r] = sum_{l0} lambda_n^{l0} (l0 + r) g_{l0+r}``.
The inner loop over lag tiles only accumulates the rank-one updates G0, G1 (4 FMAs per (mode, lag),
no reduction); ``P`` is formed and the sums over r taken once, after the loop. L is split over SPLIT
programs whose partial sums are added in PyTorch (deterministic, no atomics).

ZOH fused (:func:`zoh_vandermonde_triton`, S4D's default path on CUDA): the kernels take the continuous
system ``(dt, A, B, C)`` and form ``w = dt A`` and ``c = scale C dB``, ``dB = phi(dt A) dt B`` (app. A.1.4) per
program in fp64; the backward's adjoint partials go to one epilogue program per channel that sums the
splits and applies the chain rule of :class:`statespaces.discretize._ZOHFactors` in fp64. A fwd+bwd is
three launches where the PyTorch route between parameters and kernel took about fifty small ops
(``benchmarks/host_census.py``), and ``w`` stays in fp64: the fp32 product ``dt A`` of the PyTorch route
loses ``~6e-8 |dt Im A|`` rad per lag (relative errors 1e-6 forward, up to 8e-6 in the gradients at L = 4096
for S4D-Lin modes, against 2-3e-7 fused).

If a backward kernel fails to compile or launch under the fallback policy, the gradients come from the PyTorch
path instead (the twins that :mod:`statespaces.kernels.vandermonde` registers;
:func:`statespaces.backend.backward_with_fallback`).
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

__all__ = ["vandermonde_triton", "VandermondeFn", "zoh_vandermonde_triton", "ZOHVandermondeFn"]


@triton.jit
def _reduce(ph):
    # ph - 2 pi k with k = round(ph / 2 pi), in the precision of ph (fp32 or fp64; Cody-Waite): 2 pi =
    # 6.28125 + 0.0019353071693331003 + 1.0253131677018246e-11 + 2.449293598294706e-16 (to ~1e-32),
    # each part exact in fp32 (the literals are fp32 in Triton) but the last (its rounding is below
    # fp64's), and the first with 8 significant bits, so k * 6.28125 is exact
    k = tl.floor(ph * 0.15915494309189535 + 0.5)
    r = ph - k * 6.28125
    r = r - k * 0.0019353071693331003
    r = r - k * 1.0253131677018246e-11
    return r - k * 2.449293598294706e-16


@triton.jit
def _tile_powers(wr, hi, lo, rf):
    # P[n, r] = lambda_n^r for in-tile offsets r = rf: (BLOCK_N, BLOCK_L) re, im (fp32)
    mag = tl.exp(wr[:, None] * rf[None, :])
    ph = _reduce(_reduce(hi[:, None] * rf[None, :]) + lo[:, None] * rf[None, :])
    return mag * tl.cos(ph), mag * tl.sin(ph)


@triton.jit
def _sincos64(p):
    # (sin p, cos p) in fp64 for |p| <~ pi (a phase reduced by _reduce), without libdevice's fp64 sin / cos
    # (its large-argument branch, never taken here, made the backward spill 1.2-1.4 KB on sm_80 / sm_90):
    # q = p / 16, Taylor series to q^11 / q^12 (|q| <= 0.2: truncation < 1e-18), then four double-angle
    # steps (relative error ~1e-15). The coefficients are made with tl.full(..., fp64): a bare float
    # literal is an fp32 constant in Triton.
    q = p * 0.0625
    q2 = q * q
    s = tl.full([], -1.0 / 39916800.0, tl.float64)
    s = s * q2 + tl.full([], 1.0 / 362880.0, tl.float64)
    s = s * q2 + tl.full([], -1.0 / 5040.0, tl.float64)
    s = s * q2 + tl.full([], 1.0 / 120.0, tl.float64)
    s = s * q2 + tl.full([], -1.0 / 6.0, tl.float64)
    s = q + q * q2 * s
    c = tl.full([], 1.0 / 479001600.0, tl.float64)
    c = c * q2 + tl.full([], -1.0 / 3628800.0, tl.float64)
    c = c * q2 + tl.full([], 1.0 / 40320.0, tl.float64)
    c = c * q2 + tl.full([], -1.0 / 720.0, tl.float64)
    c = c * q2 + tl.full([], 1.0 / 24.0, tl.float64)
    c = c * q2 - 0.5
    c = 1.0 + q2 * c
    for _ in tl.static_range(4):
        s, c = 2.0 * s * c, c * c - s * s
    return s, c


@triton.jit
def _exp64(x, y):
    # (re, im) of exp(x + i y) in fp64, the phase reduced by whole turns first
    m = tl.exp(x)
    sn, cs = _sincos64(_reduce(y))
    return m * cs, m * sn


@triton.jit
def _phase_split(wi):
    # Im w (fp32 or fp64) reduced by whole turns in fp64 and split as hi + lo (fp32): hi keeps 16 significant
    # bits, so r * hi is exact in fp32 for integers r < 256 (the in-tile offsets of _tile_powers)
    wi64 = _reduce(wi.to(tl.float64))
    hi = (wi64.to(tl.float32).to(tl.int32, bitcast=True) & -256).to(tl.float32, bitcast=True)
    return hi, (wi64 - hi.to(tl.float64)).to(tl.float32)


@triton.jit
def _steps(wr, wi, start, BLOCK_L: tl.constexpr):
    # In fp64, per mode: the step lambda^BLOCK_L (sr, si) and the program's first tile base lambda^start
    # (br, bi), from w = wr + i wi (fp32 or fp64). Formed by each program for its modes (O(BLOCK_N) fp64
    # transcendentals), not on the host: a forward or backward is one launch.
    wr64 = wr.to(tl.float64)
    wi64 = _reduce(wi.to(tl.float64))
    sr, si = _exp64(wr64 * BLOCK_L, wi64 * BLOCK_L)
    s = start.to(tl.float64)
    br, bi = _exp64(wr64 * s, wi64 * s)
    return sr, si, br, bi


@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _cdiv(ar, ai, br, bi, small):
    # (a / b) where not small (b != 0 there); 0 where small (the caller's series takes over)
    d = tl.where(small, 1.0, br * br + bi * bi)
    return (ar * br + ai * bi) / d, (ai * br - ar * bi) / d


@triton.jit
def _zoh_modes(xr, xi):
    # ZOH input factor phi(x) = (e^x - 1) / x and its derivative phi'(x) = (e^x - phi(x)) / x in fp64, for
    # x = dt A = xr + i xi (fp64; app. A.1.4); the series 1 + x/2 + x^2/6 + ... and 1/2 + x/3 + x^2/8 + ...
    # where |x| < 1e-3 (truncation < 1e-17; the closed forms lose ~1e-16 / |x| to cancellation).
    # Returns (phi_r, phi_i, dphi_r, dphi_i).
    er, ei = _exp64(xr, xi)
    small = (xr * xr + xi * xi) < 1e-6
    pr, pi = _cdiv(er - 1.0, ei, xr, xi, small)
    qr, qi = _cdiv(er - pr, ei - pi, xr, xi, small)
    # series, Horner in x: phi = 1 + x (1/2 + x (1/6 + x (1/24 + x/120)))
    sr = tl.full([], 1.0 / 120.0, tl.float64) * xr + tl.full([], 1.0 / 24.0, tl.float64)
    si = tl.full([], 1.0 / 120.0, tl.float64) * xi
    sr, si = _cmul(sr, si, xr, xi)
    sr += tl.full([], 1.0 / 6.0, tl.float64)
    sr, si = _cmul(sr, si, xr, xi)
    sr += 0.5
    sr, si = _cmul(sr, si, xr, xi)
    sr += 1.0
    # phi' = 1/2 + x (1/3 + x (1/8 + x (1/30 + x/144)))
    tr = tl.full([], 1.0 / 144.0, tl.float64) * xr + tl.full([], 1.0 / 30.0, tl.float64)
    ti = tl.full([], 1.0 / 144.0, tl.float64) * xi
    tr, ti = _cmul(tr, ti, xr, xi)
    tr += 0.125
    tr, ti = _cmul(tr, ti, xr, xi)
    tr += tl.full([], 1.0 / 3.0, tl.float64)
    tr, ti = _cmul(tr, ti, xr, xi)
    tr += 0.5
    return tl.where(small, sr, pr), tl.where(small, si, pi), tl.where(small, tr, qr), tl.where(small, ti, qi)


@triton.jit
def _zoh_coefs(c_row, a_row, dt, b_row, offs_n, mn, SCALE: tl.constexpr):
    # From the continuous system of channel h (dt scalar; A, B (N, 2) and this row's C (N, 2) interleaved):
    # w = log dA = dt A and c = SCALE C dB, dB = phi(dt A) dt B, in fp64 (w kept in fp64 for the phase, c
    # rounded once to fp32). The PyTorch route rounds each step to fp32: dt A loses ~6e-8 |dt Im A| rad per
    # lag (1e-3 rad at l = 4096 for 4 rad per step), phi(dt A) ~1e-7 / |dt A| relative.
    ar = tl.load(a_row + 2 * offs_n, mask=mn, other=0.0).to(tl.float64)
    ai = tl.load(a_row + 2 * offs_n + 1, mask=mn, other=0.0).to(tl.float64)
    dt64 = dt.to(tl.float64)
    wr = dt64 * ar
    wi = dt64 * ai
    phr, phi_, _, _ = _zoh_modes(wr, wi)
    br = tl.load(b_row + 2 * offs_n, mask=mn, other=0.0).to(tl.float64)
    bi = tl.load(b_row + 2 * offs_n + 1, mask=mn, other=0.0).to(tl.float64)
    cr = tl.load(c_row + 2 * offs_n, mask=mn, other=0.0).to(tl.float64)
    ci = tl.load(c_row + 2 * offs_n + 1, mask=mn, other=0.0).to(tl.float64)
    dr, di = _cmul(phr, phi_, br, bi)
    dr, di = _cmul(dr, di, cr, ci)
    k = dt64 * SCALE
    return (k * dr).to(tl.float32), (k * di).to(tl.float32), wr, wi


@triton.jit
def _vandermonde_fwd_kernel(
    c_ptr, w_ptr, dt_ptr, b_ptr, out_ptr, H, N, L, CHUNK,
    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_T: tl.constexpr, PRECISION: tl.constexpr,
    ZOH: tl.constexpr, SCALE: tl.constexpr,
):
    # program (row, chunk): out[row, start:start + CHUNK] (CHUNK a multiple of BLOCK_T * BLOCK_L), in
    # groups of BLOCK_T lag tiles: out[group] = Re(D @ P) = D_r @ P_r - D_i @ P_i with
    # D[t, n] = c_n lambda_n^{l0 + t BLOCK_L} (BLOCK_T, BLOCK_N) and P = lambda^r (BLOCK_N, BLOCK_L).
    # ZOH: c_ptr holds C and w_ptr A of the continuous system (same layouts as c and w), with dt (H,) and
    # B (H, N, 2): w = dt A and c = SCALE C dB are formed here (dt_ptr, b_ptr unused otherwise).
    row = tl.program_id(0).to(tl.int64)                      # coefficient row: (batch, h) flattened
    split = tl.program_id(1)
    start = split * CHUNK
    stop = tl.minimum(start + CHUNK, L)
    h = row % H
    rows = tl.arange(0, BLOCK_L)
    rf = rows.to(tl.float32)
    tix = tl.arange(0, BLOCK_T)
    c_row = c_ptr + row * (2 * N)
    w_row = w_ptr + h * (2 * N)
    o_row = out_ptr + row * L
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mn = offs_n < N
        if ZOH:
            cr, ci, wr, wi = _zoh_coefs(c_row, w_row, tl.load(dt_ptr + h), b_ptr + h * (2 * N), offs_n, mn, SCALE)
        else:
            cr = tl.load(c_row + 2 * offs_n, mask=mn, other=0.0)  # c = 0 on padding modes
            ci = tl.load(c_row + 2 * offs_n + 1, mask=mn, other=0.0)
            wr = tl.load(w_row + 2 * offs_n, mask=mn, other=0.0).to(tl.float64)
            wi = tl.load(w_row + 2 * offs_n + 1, mask=mn, other=0.0).to(tl.float64)
        hi, lo = _phase_split(wi)
        pr, pi = _tile_powers(wr.to(tl.float32), hi, lo, rf)  # reused by every lag tile below
        sr, si, br, bi = _steps(wr, wi, start, BLOCK_L)       # fp64 step lambda^BLOCK_L, tile base lambda^{start}
        for g0 in range(start, stop, BLOCK_T * BLOCK_L):
            dr = tl.zeros([BLOCK_T, BLOCK_N], dtype=tl.float32)
            di = tl.zeros([BLOCK_T, BLOCK_N], dtype=tl.float32)
            for t in tl.static_range(BLOCK_T):
                b32r = br.to(tl.float32)
                b32i = bi.to(tl.float32)
                sel = (tix == t)[:, None]
                dr = tl.where(sel, (cr * b32r - ci * b32i)[None, :], dr)     # d = c lambda^{l0}
                di = tl.where(sel, (cr * b32i + ci * b32r)[None, :], di)
                br, bi = br * sr - bi * si, br * si + bi * sr                 # lambda^{l0 + BLOCK_L}, fp64
            acc = tl.dot(dr, pr, input_precision=PRECISION)
            acc = tl.dot(-di, pi, acc, input_precision=PRECISION)              # (BLOCK_T, BLOCK_L)
            offs = g0 + tix[:, None] * BLOCK_L + rows[None, :]
            m = offs < L
            prev = tl.load(o_row + offs, mask=m & (n0 > 0), other=0.0)
            tl.store(o_row + offs, prev + acc, mask=m)


@triton.jit
def _load_w(w_ptr, dt_ptr, h, N, offs_n, mn, ZOH: tl.constexpr, AGAIN: tl.constexpr = False):
    # w[h, offs_n] in fp64 (re, im); ZOH: w_ptr holds A and w = dt A, formed in fp64 as in the forward.
    # AGAIN: a second read after a loop, volatile so that the compiler reloads instead of keeping the first
    # read's values live through the loop (that cost 8 bytes of spills on sm_80 under ZOH)
    wr = tl.load(w_ptr + h * (2 * N) + 2 * offs_n, mask=mn, other=0.0, volatile=AGAIN).to(tl.float64)
    wi = tl.load(w_ptr + h * (2 * N) + 2 * offs_n + 1, mask=mn, other=0.0, volatile=AGAIN).to(tl.float64)
    if ZOH:
        dt = tl.load(dt_ptr + h, volatile=AGAIN).to(tl.float64)
        wr = dt * wr
        wi = dt * wi
    return wr, wi


@triton.jit
def _vandermonde_bwd_kernel(
    g_ptr, w_ptr, dt_ptr, s_ptr, H, N, L, R, CHUNK,
    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, ZOH: tl.constexpr,
):
    # s[split, row, n, :] = (Re S0, Im S0, Re S1, Im S1) over this program's L-chunk; ZOH: w_ptr holds A and
    # w = dt A (dt_ptr unused otherwise)
    row = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    split = tl.program_id(2)
    h = row % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mn = offs_n < N
    start = split * CHUNK
    stop = tl.minimum(start + CHUNK, L)
    wr, wi = _load_w(w_ptr, dt_ptr, h, N, offs_n, mn, ZOH)
    sr, si, b64r, b64i = _steps(wr, wi, start, BLOCK_L)       # fp64 step lambda^BLOCK_L, tile base lambda^{start}
    rows = tl.arange(0, BLOCK_L)
    rf = rows.to(tl.float32)
    g0r = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)     # G0 = sum_{l0} lambda^{l0} g_{l0+r}
    g0i = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)
    g1r = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)     # G1 = sum_{l0} lambda^{l0} (l0+r) g_{l0+r}
    g1i = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)
    for l0 in range(start, stop, BLOCK_L):
        offs_l = l0 + rows
        g = tl.load(g_ptr + row * L + offs_l, mask=offs_l < L, other=0.0)
        lg = offs_l.to(tl.float32) * g                        # exact l for l < 2^24
        br = b64r.to(tl.float32)
        bi = b64i.to(tl.float32)
        g0r += br[:, None] * g[None, :]
        g0i += bi[:, None] * g[None, :]
        g1r += br[:, None] * lg[None, :]
        g1i += bi[:, None] * lg[None, :]
        b64r, b64i = b64r * sr - b64i * si, b64r * si + b64i * sr
    wr, wi = _load_w(w_ptr, dt_ptr, h, N, offs_n, mn, ZOH, True)   # again: not held in registers across the loop
    hi, lo = _phase_split(wi)
    pr, pi = _tile_powers(wr.to(tl.float32), hi, lo, rf)
    s0r = tl.sum(g0r * pr - g0i * pi, axis=1)
    s0i = tl.sum(g0r * pi + g0i * pr, axis=1)
    s1r = tl.sum(g1r * pr - g1i * pi, axis=1)
    s1i = tl.sum(g1r * pi + g1i * pr, axis=1)
    base = s_ptr + ((split * R + row) * N + offs_n) * 4
    tl.store(base, s0r, mask=mn)
    tl.store(base + 1, s0i, mask=mn)
    tl.store(base + 2, s1r, mask=mn)
    tl.store(base + 3, s1i, mask=mn)


@triton.jit
def _zoh_grads_kernel(
    s_ptr, a_ptr, dt_ptr, b_ptr, c_ptr, gdt_ptr, ga_ptr, gb_ptr, gc_ptr, H, N, R, SPLIT,
    BLOCK_N: tl.constexpr, SCALE: tl.constexpr,
):
    # program h: the gradients of dt[h], A[h], B[h] and C[:, h] from the adjoint sums s[split, row, n, 4] of
    # rows k H + h (k < R / H), by the chain rule of _ZOHFactors (statespaces.discretize) through the
    # Vandermonde sums (grad_c = conj S0, grad_w = conj(c S1)); in fp64, stored in fp32
    h = tl.program_id(0)
    dt = tl.load(dt_ptr + h).to(tl.float64)
    gdt = tl.zeros([BLOCK_N], dtype=tl.float64)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mn = offs_n < N
        hn = (h * N + offs_n) * 2
        ar = tl.load(a_ptr + hn, mask=mn, other=0.0).to(tl.float64)
        ai = tl.load(a_ptr + hn + 1, mask=mn, other=0.0).to(tl.float64)
        phr, phi_, qr, qi = _zoh_modes(dt * ar, dt * ai)
        br = tl.load(b_ptr + hn, mask=mn, other=0.0).to(tl.float64)
        bi = tl.load(b_ptr + hn + 1, mask=mn, other=0.0).to(tl.float64)
        pbr, pbi = _cmul(phr, phi_, br, bi)                 # phi B
        dbr = dt * pbr                                         # dB = phi dt B
        dbi = dt * pbi
        gwr = tl.zeros([BLOCK_N], dtype=tl.float64)            # grad of w = dt A through the powers
        gwi = tl.zeros([BLOCK_N], dtype=tl.float64)
        gbr = tl.zeros([BLOCK_N], dtype=tl.float64)            # grad of dB
        gbi = tl.zeros([BLOCK_N], dtype=tl.float64)
        for row in range(h, R, H):
            s0r = tl.zeros([BLOCK_N], dtype=tl.float64)
            s0i = tl.zeros([BLOCK_N], dtype=tl.float64)
            s1r = tl.zeros([BLOCK_N], dtype=tl.float64)
            s1i = tl.zeros([BLOCK_N], dtype=tl.float64)
            for sp in range(0, SPLIT):
                base = s_ptr + ((sp * R + row) * N + offs_n) * 4
                s0r += tl.load(base, mask=mn, other=0.0).to(tl.float64)
                s0i += tl.load(base + 1, mask=mn, other=0.0).to(tl.float64)
                s1r += tl.load(base + 2, mask=mn, other=0.0).to(tl.float64)
                s1i += tl.load(base + 3, mask=mn, other=0.0).to(tl.float64)
            rn = (row * N + offs_n) * 2
            cr = tl.load(c_ptr + rn, mask=mn, other=0.0).to(tl.float64) * SCALE
            ci = tl.load(c_ptr + rn + 1, mask=mn, other=0.0).to(tl.float64) * SCALE
            kr, ki = _cmul(cr, ci, dbr, dbi)                   # c = SCALE C dB
            tr, ti = _cmul(kr, ki, s1r, s1i)
            gwr += tr                                          # grad_w = sum_rows conj(c S1)
            gwi -= ti
            tr, ti = _cmul(cr, ci, s0r, s0i)
            gbr += tr                                          # grad_dB = SCALE sum_rows conj(C S0)
            gbi -= ti
            tr, ti = _cmul(dbr, dbi, s0r, s0i)                 # grad_C = SCALE conj(dB S0)
            tl.store(gc_ptr + rn, (SCALE * tr).to(tl.float32), mask=mn)
            tl.store(gc_ptr + rn + 1, (-SCALE * ti).to(tl.float32), mask=mn)
        tr, ti = _cmul(phr, -phi_, gbr, gbi)                   # grad_B = conj(phi dt) grad_dB
        tl.store(gb_ptr + hn, (dt * tr).to(tl.float32), mask=mn)
        tl.store(gb_ptr + hn + 1, (dt * ti).to(tl.float32), mask=mn)
        ur, ui = _cmul(qr, qi, br, bi)                         # grad_x = grad_w + conj(dt B phi') grad_dB
        tr, ti = _cmul(ur, -ui, gbr, gbi)
        gxr = gwr + dt * tr
        gxi = gwi + dt * ti
        tl.store(ga_ptr + hn, (dt * gxr).to(tl.float32), mask=mn)      # grad_A = dt grad_x
        tl.store(ga_ptr + hn + 1, (dt * gxi).to(tl.float32), mask=mn)
        # grad_dt = sum_n Re(conj(A) grad_x + conj(phi B) grad_dB)
        gdt += tl.where(mn, ar * gxr + ai * gxi + pbr * gbr + pbi * gbi, 0.0)
    tl.store(gdt_ptr + h, tl.sum(gdt, axis=0).to(tl.float32))


#: Tile sizes, the target number of programs, and the least number of lag tiles a program owns
#: (so that its in-tile power table, ~60 instructions per entry, costs <= ~4 per (mode, lag)); tests
#: lower them to run several tiles / L-splits on tiny shapes. The (BLOCK_N, BLOCK_L) tiles are sized
#: so that no variant spills registers on sm_80 / sm_90 (tests/test_triton_resources.py; measured
#: with ptxas: fwd (32, 64) x 16 tiles 162-164 registers, bwd (16, 64) 140, no spills, no stack).
FWD_BLOCK_L = 64
FWD_MAX_BLOCK_N = 32
#: lag tiles per ``tl.dot`` of the forward (its M dimension, >= 16), and the dot's precision:
#: 3xTF32 on tensor cores, fp32-faithful (~2^-21 relative per product).
FWD_BLOCK_T = 16
PRECISION = "tf32x3"
BWD_BLOCK_L = 64
BWD_MAX_BLOCK_N = 16          # (32, 64): 255 registers and 100-112 bytes of spills (4 accumulator tiles + table)
FWD_TARGET_PROGRAMS = 1024
BWD_TARGET_PROGRAMS = 1024
MIN_TILES = 16

_FWD_SIG = signature("*fp32", ["c_ptr", "w_ptr", "dt_ptr", "b_ptr", "out_ptr"], ["H", "N", "L", "CHUNK"])
_BWD_SIG = signature("*fp32", ["g_ptr", "w_ptr", "dt_ptr", "s_ptr"], ["H", "N", "L", "R", "CHUNK"])
_GRADS_SIG = signature("*fp32", ["s_ptr", "a_ptr", "dt_ptr", "b_ptr", "c_ptr", "gdt_ptr", "ga_ptr", "gb_ptr",
                                 "gc_ptr"], ["H", "N", "R", "SPLIT"])
#: modes per program of the gradient epilogue (a loop over mode tiles covers any N)
GRADS_BLOCK_N = 32


def _block_n(N: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(N)))


def _fwd_config(N: int, zoh: bool = False, scale: int = 1):
    """The forward launch for N modes (the only shape the choice depends on); ``zoh``: the fused
    discretization with output scale 1 or 2."""
    assert FWD_BLOCK_L <= 256, "the exact in-tile phase split needs BLOCK_L <= 256"
    return make(__name__, _vandermonde_fwd_kernel, _FWD_SIG, BLOCK_N=_block_n(N, FWD_MAX_BLOCK_N),
                BLOCK_L=FWD_BLOCK_L, BLOCK_T=FWD_BLOCK_T, PRECISION=PRECISION, ZOH=zoh, SCALE=scale if zoh else 1)


def _bwd_config(N: int, zoh: bool = False):
    assert BWD_BLOCK_L <= 256, "the exact in-tile phase split needs BLOCK_L <= 256"
    return make(__name__, _vandermonde_bwd_kernel, _BWD_SIG,
                BLOCK_N=_block_n(N, BWD_MAX_BLOCK_N), BLOCK_L=BWD_BLOCK_L, ZOH=zoh)


def _grads_config(scale: int):
    return make(__name__, _zoh_grads_kernel, _GRADS_SIG, BLOCK_N=GRADS_BLOCK_N, SCALE=scale)


def configs():
    """Every launch configuration :func:`_forward` / :func:`_adjoint_partials` / :func:`_zoh_grads` can choose."""
    Ns = pow2_domain(max(FWD_MAX_BLOCK_N, BWD_MAX_BLOCK_N))
    return unique([_fwd_config(n) for n in Ns] + [_fwd_config(n, True, k) for n in Ns for k in ZOH_SCALES]
                  + [_bwd_config(n, z) for n in Ns for z in (False, True)] + [_grads_config(k) for k in ZOH_SCALES])


def _chunks(L: int, block_l: int, programs_per_chunk: int, target: int, min_tiles: int = 0):
    """(split, chunk): L cut into ``split`` runs of ``chunk`` lags (a multiple of ``block_l``), enough
    runs to give ~``target`` programs, each of at least ``min_tiles`` (default MIN_TILES) tiles (the
    power table amortized)."""
    tiles = triton.cdiv(L, block_l)
    split = max(1, min(triton.cdiv(tiles, min_tiles or MIN_TILES), triton.cdiv(target, programs_per_chunk)))
    chunk = triton.cdiv(tiles, split) * block_l
    return triton.cdiv(L, chunk), chunk


def _forward(c: Tensor, w: Tensor, L: int, dt: Optional[Tensor] = None, b: Optional[Tensor] = None,
             scale: int = 1, shape: Optional[Tuple[int, ...]] = None) -> Tensor:
    """c: fp32 (R, N, 2) contiguous rows, row r using w[r % H]; w: fp32 (H, N, 2) (interleaved complex).
    With ``dt`` (H,) and ``b`` (H, N, 2): c holds C and w holds A of the continuous system (ZOH fused).
    Returns a fresh fp32 tensor of ``shape`` (default (R, L); its last entry L, its product R L), allocated
    in that shape: an autograd Function must return its output itself, not a view of it (a view made inside
    a Function cannot be edited in place by the caller)."""
    R, N = c.shape[:2]
    H = w.shape[0]
    full = torch.empty(shape if shape is not None else (R, L), device=c.device, dtype=torch.float32)
    out = full.view(R, L)
    zoh = dt is not None
    cfg = _fwd_config(N, zoh, scale)
    group = cfg.consts["BLOCK_L"] * cfg.consts["BLOCK_T"]
    split, chunk = _chunks(L, group, R, FWD_TARGET_PROGRAMS, min_tiles=max(1, MIN_TILES // cfg.consts["BLOCK_T"]))
    cfg.launch((R, split), c, w, dt if zoh else w, b if zoh else w, out, H, N, L, chunk)
    return full


def _adjoint_partials(g: Tensor, w: Tensor, R: int, dt: Optional[Tensor] = None) -> Tensor:
    """Per L-split partial adjoint sums, fp32 (split, R, N, 4) = (Re S0, Im S0, Re S1, Im S1), from g (R, L)
    fp32 contiguous and w fp32 (H, N, 2) (with ``dt``: w holds A and the kernel uses dt A)."""
    H, N = w.shape[:2]
    L = g.shape[-1]
    cfg = _bwd_config(N, dt is not None)
    BLOCK_N, BLOCK_L = cfg.consts["BLOCK_N"], cfg.consts["BLOCK_L"]
    n_tiles = triton.cdiv(N, BLOCK_N)
    split, chunk = _chunks(L, BLOCK_L, R * n_tiles, BWD_TARGET_PROGRAMS)
    s = torch.empty(split, R, N, 4, device=g.device, dtype=torch.float32)
    cfg.launch((R, n_tiles, split), g, w, w if dt is None else dt, s, H, N, L, R, chunk)
    return s


def _adjoint_sums(g: Tensor, w: Tensor, R: int):
    """(S0, S1) complex64 (R, N) from g (R, L) fp32 contiguous and w complex64 (H, N)."""
    s = _adjoint_partials(g, torch.view_as_real(w), R).sum(0)
    return torch.complex(s[..., 0], s[..., 1]), torch.complex(s[..., 2], s[..., 3])


def _zoh_grads(s: Tensor, A: Tensor, dt: Tensor, B: Tensor, C: Tensor, scale: int):
    """Gradients (dt (H,), A, B (H, N, 2), C (K, H, N, 2)) from the partial sums s, one launch; one buffer."""
    K, H, N = C.shape[:3]
    flat = torch.empty(4 * H * N + 2 * K * H * N + H, device=s.device, dtype=torch.float32)
    ga = flat[:2 * H * N].view(H, N, 2)                 # even offsets: the complex views of autograd need them
    gb = flat[2 * H * N:4 * H * N].view(H, N, 2)
    gc = flat[4 * H * N:(4 + 2 * K) * H * N].view(K, H, N, 2)
    gdt = flat[(4 + 2 * K) * H * N:]
    _grads_config(scale).launch((H,), s, A, dt, B, C, gdt, ga, gb, gc, H, N, K * H, s.shape[0])
    return gdt, ga, gb, gc


def _forward_inputs(ctx):
    """``(coef, log_a, L)`` of this call (the fallback of :class:`VandermondeFn`'s backward)."""
    _, _, coef, log_a = ctx.saved_tensors
    return coef, log_a, ctx.L


def _zoh_forward_inputs(ctx):
    """``(dt, A, B, C, scale, L)`` of this call (the fallback of :class:`ZOHVandermondeFn`'s backward)."""
    return (*ctx.saved_tensors, ctx.scale, ctx.L)


class VandermondeFn(torch.autograd.Function):
    """Autograd wrapper of the fused kernels (fp32 / complex64)."""

    @staticmethod
    @fp32_forward
    def forward(ctx, coef: Tensor, log_a: Tensor, L: int) -> Tensor:
        H, N = log_a.shape
        lead = coef.shape[:-2]
        c = coef.expand(*lead, H, N).to(torch.complex64).resolve_conj().reshape(-1, N).contiguous()
        w = log_a.to(torch.complex64).resolve_conj().contiguous()
        out = _forward(torch.view_as_real(c), torch.view_as_real(w), L, shape=(*lead, H, L))
        ctx.save_for_backward(c, w, coef, log_a)       # (coef, log_a: for the fallback; usually c, w themselves)
        ctx.L, ctx.lead, ctx.coef_shape = L, lead, coef.shape
        ctx.fallback_op = backend.fallback_op()
        return out

    @staticmethod
    @backend.first_order
    @amp_backward
    @backend.backward_with_fallback("VandermondeFn", _forward_inputs)
    def backward(ctx, g: Tensor):
        c, w, _, _ = ctx.saved_tensors
        H, N = w.shape
        g = g.to(torch.float32).reshape(-1, ctx.L).contiguous()
        S0, S1 = _adjoint_sums(g, w, c.shape[0])
        grad_c = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_c = S0.conj().reshape(*ctx.lead, H, N).sum_to_size(ctx.coef_shape)
        if ctx.needs_input_grad[1]:
            grad_w = (c * S1).conj().reshape(-1, H, N).sum(0)
        return grad_c, grad_w, None


class ZOHVandermondeFn(torch.autograd.Function):
    """Autograd wrapper of the fused ZOH kernels: inputs fp32, complex as interleaved (..., 2) pairs."""

    @staticmethod
    @fp32_forward
    def forward(ctx, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, scale: int, L: int) -> Tensor:
        K, H, N = C.shape[:3]
        out = _forward(C.view(K * H, N, 2), A, L, dt=dt, b=B, scale=scale, shape=(K, H, L))
        ctx.save_for_backward(dt, A, B, C)
        ctx.scale, ctx.L = scale, L
        ctx.fallback_op = backend.fallback_op()
        return out

    @staticmethod
    @backend.first_order
    @amp_backward
    @backend.backward_with_fallback("ZOHVandermondeFn", _zoh_forward_inputs)
    def backward(ctx, g: Tensor):
        dt, A, B, C = ctx.saved_tensors
        K, H = C.shape[:2]
        g = g.to(torch.float32).reshape(K * H, ctx.L)
        s = _adjoint_partials(contiguous(g), A, K * H, dt)
        gdt, ga, gb, gc = _zoh_grads(s, A, dt, B, C, ctx.scale)
        need = ctx.needs_input_grad
        return (gdt if need[0] else None, ga if need[1] else None, gb if need[2] else None,
                gc if need[3] else None, None, None)


#: output scales the fused ZOH kernels are compiled for (2: conjugate pairs, 1: real or unpaired modes)
ZOH_SCALES = (1, 2)


def zoh_vandermonde_triton(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, scale: int, L: int) -> Tensor:
    r"""The ZOH-discretized diagonal SSM's kernel in one launch (backward: two):
    ``K[k, h, l] = Re sum_n scale C[k, h, n] dB[h, n] exp(l dt[h] A[h, n])``, ``dB = (e^{dt A} - 1) / A B``
    (thesis eq. 3.2, app. A.1.4): the values of :func:`statespaces.discretize.zoh_kernel_factors` followed by
    :func:`vandermonde_triton`, with the discretization (and its backward, in fp64) inside the kernels.

    Args:
        dt: fp32 (H,). A, B: fp32 (H, N, 2), complex as (re, im) pairs. C: fp32 (K, H, N, 2).
        scale: 1 or 2 (:data:`ZOH_SCALES`). L: number of lags (>= 1).

    Returns:
        fp32 (K, H, L).
    """
    if scale not in ZOH_SCALES:
        raise ValueError(f"zoh_vandermonde_triton: scale must be one of {ZOH_SCALES}, got {scale}")
    K, H, N = C.shape[:3]
    for name, t, shape in (("dt", dt, (H,)), ("A", A, (H, N, 2)), ("B", B, (H, N, 2)), ("C", C, (K, H, N, 2))):
        if tuple(t.shape) != shape or t.dtype != torch.float32:
            raise ValueError(f"zoh_vandermonde_triton: {name} must be fp32 of shape {shape}, got {t.dtype} "
                             f"{tuple(t.shape)}")
    dt, A, B, C = (contiguous(t) for t in (dt, A, B, C))
    return ZOHVandermondeFn.apply(dt, A, B, C, int(scale), int(L))


def vandermonde_triton(coef: Tensor, log_a: Tensor, L: int) -> Tensor:
    r"""``Re sum_n coef[..., h, n] exp(l log_a[h, n])`` for l < L, shape (..., H, L), fp32.

    Args:
        coef: complex64 (..., H, N) (leading batch dims allowed).
        log_a: complex64 (H, N).
        L: number of powers (>= 1).
    """
    if log_a.dim() != 2 or coef.shape[-1] != log_a.shape[-1]:
        raise ValueError(
            f"vandermonde_triton: log_a must be (H, N) and coef (..., H, N), "
            f"got {tuple(log_a.shape)} and {tuple(coef.shape)}"
        )
    return VandermondeFn.apply(coef, log_a, int(L))
