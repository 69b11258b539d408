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
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._amp import amp_backward, fp32_forward
from ._launch import make, pow2_domain, signature, unique

Tensor = torch.Tensor

__all__ = ["vandermonde_triton", "VandermondeFn"]


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
    # Im w (fp32) reduced by whole turns in fp64 and split as hi + lo (fp32): hi keeps 16 significant
    # bits, so r * hi is exact in fp32 for integers r < 256 (the in-tile offsets of _tile_powers)
    wi64 = _reduce(wi.to(tl.float64))
    hi = (wi64.to(tl.float32).to(tl.int32, bitcast=True) & -256).to(tl.float32, bitcast=True)
    return hi, (wi64 - hi.to(tl.float64)).to(tl.float32)


@triton.jit
def _steps(wr, wi, start, BLOCK_L: tl.constexpr):
    # In fp64, per mode: the step lambda^BLOCK_L (sr, si) and the program's first tile base lambda^start
    # (br, bi), from w = wr + i wi (fp32). Formed by each program for its modes (O(BLOCK_N) fp64
    # transcendentals), not on the host: a forward or backward is one launch.
    wr64 = wr.to(tl.float64)
    wi64 = _reduce(wi.to(tl.float64))
    sr, si = _exp64(wr64 * BLOCK_L, wi64 * BLOCK_L)
    s = start.to(tl.float64)
    br, bi = _exp64(wr64 * s, wi64 * s)
    return sr, si, br, bi


@triton.jit
def _vandermonde_fwd_kernel(
    c_ptr, w_ptr, out_ptr, H, N, L, CHUNK,
    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_T: tl.constexpr, PRECISION: tl.constexpr,
):
    # program (row, chunk): out[row, start:start + CHUNK] (CHUNK a multiple of BLOCK_T * BLOCK_L), in
    # groups of BLOCK_T lag tiles: out[group] = Re(D @ P) = D_r @ P_r - D_i @ P_i with
    # D[t, n] = c_n lambda_n^{l0 + t BLOCK_L} (BLOCK_T, BLOCK_N) and P = lambda^r (BLOCK_N, BLOCK_L)
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
        cr = tl.load(c_row + 2 * offs_n, mask=mn, other=0.0)  # c = 0 on padding modes
        ci = tl.load(c_row + 2 * offs_n + 1, mask=mn, other=0.0)
        wr = tl.load(w_row + 2 * offs_n, mask=mn, other=0.0)
        wi = tl.load(w_row + 2 * offs_n + 1, mask=mn, other=0.0)
        hi, lo = _phase_split(wi)
        pr, pi = _tile_powers(wr, hi, lo, rf)                 # reused by every lag tile below
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
def _vandermonde_bwd_kernel(
    g_ptr, w_ptr, s_ptr, H, N, L, R, CHUNK,
    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    # s[split, row, n, :] = (Re S0, Im S0, Re S1, Im S1) over this program's L-chunk
    row = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    split = tl.program_id(2)
    h = row % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mn = offs_n < N
    wr = tl.load(w_ptr + h * (2 * N) + 2 * offs_n, mask=mn, other=0.0)
    wi = tl.load(w_ptr + h * (2 * N) + 2 * offs_n + 1, mask=mn, other=0.0)
    rows = tl.arange(0, BLOCK_L)
    rf = rows.to(tl.float32)
    g0r = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)     # G0 = sum_{l0} lambda^{l0} g_{l0+r}
    g0i = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)
    g1r = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)     # G1 = sum_{l0} lambda^{l0} (l0+r) g_{l0+r}
    g1i = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)
    start = split * CHUNK
    stop = tl.minimum(start + CHUNK, L)
    sr, si, b64r, b64i = _steps(wr, wi, start, BLOCK_L)       # fp64 step lambda^BLOCK_L, tile base lambda^{start}
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
    hi, lo = _phase_split(wi)
    pr, pi = _tile_powers(wr, hi, lo, rf)
    s0r = tl.sum(g0r * pr - g0i * pi, axis=1)
    s0i = tl.sum(g0r * pi + g0i * pr, axis=1)
    s1r = tl.sum(g1r * pr - g1i * pi, axis=1)
    s1i = tl.sum(g1r * pi + g1i * pr, axis=1)
    base = s_ptr + ((split * R + row) * N + offs_n) * 4
    tl.store(base, s0r, mask=mn)
    tl.store(base + 1, s0i, mask=mn)
    tl.store(base + 2, s1r, mask=mn)
    tl.store(base + 3, s1i, mask=mn)


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

_FWD_SIG = signature("*fp32", ["c_ptr", "w_ptr", "out_ptr"], ["H", "N", "L", "CHUNK"])
_BWD_SIG = signature("*fp32", ["g_ptr", "w_ptr", "s_ptr"], ["H", "N", "L", "R", "CHUNK"])


def _block_n(N: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(N)))


def _fwd_config(N: int):
    """The forward launch for N modes (the only shape the choice depends on)."""
    assert FWD_BLOCK_L <= 256, "the exact in-tile phase split needs BLOCK_L <= 256"
    return make(__name__, _vandermonde_fwd_kernel, _FWD_SIG, BLOCK_N=_block_n(N, FWD_MAX_BLOCK_N),
                BLOCK_L=FWD_BLOCK_L, BLOCK_T=FWD_BLOCK_T, PRECISION=PRECISION)


def _bwd_config(N: int):
    assert BWD_BLOCK_L <= 256, "the exact in-tile phase split needs BLOCK_L <= 256"
    return make(__name__, _vandermonde_bwd_kernel, _BWD_SIG,
                BLOCK_N=_block_n(N, BWD_MAX_BLOCK_N), BLOCK_L=BWD_BLOCK_L)


def configs():
    """Every launch configuration :func:`_forward` / :func:`_adjoint_sums` can choose."""
    Ns = pow2_domain(max(FWD_MAX_BLOCK_N, BWD_MAX_BLOCK_N))
    return unique([_fwd_config(n) for n in Ns] + [_bwd_config(n) for n in Ns])


def _chunks(L: int, block_l: int, programs_per_chunk: int, target: int, min_tiles: int = 0):
    """(split, chunk): L cut into ``split`` runs of ``chunk`` lags (a multiple of ``block_l``), enough
    runs to give ~``target`` programs, each of at least ``min_tiles`` (default MIN_TILES) tiles (the
    power table amortized)."""
    tiles = triton.cdiv(L, block_l)
    split = max(1, min(triton.cdiv(tiles, min_tiles or MIN_TILES), triton.cdiv(target, programs_per_chunk)))
    chunk = triton.cdiv(tiles, split) * block_l
    return triton.cdiv(L, chunk), chunk


def _forward(c: Tensor, w: Tensor, L: int) -> Tensor:
    """c: complex64 (R, N) contiguous rows with row r using w[r % H]; w: complex64 (H, N)."""
    R, N = c.shape
    H = w.shape[0]
    out = torch.empty(R, L, device=c.device, dtype=torch.float32)
    cfg = _fwd_config(N)
    group = cfg.consts["BLOCK_L"] * cfg.consts["BLOCK_T"]
    split, chunk = _chunks(L, group, R, FWD_TARGET_PROGRAMS, min_tiles=max(1, MIN_TILES // cfg.consts["BLOCK_T"]))
    cfg.launch((R, split), torch.view_as_real(c), torch.view_as_real(w), out, H, N, L, chunk)
    return out


def _adjoint_sums(g: Tensor, w: Tensor, R: int):
    """(S0, S1) complex64 (R, N) from g (R, L) fp32 contiguous."""
    H, N = w.shape
    L = g.shape[-1]
    cfg = _bwd_config(N)
    BLOCK_N, BLOCK_L = cfg.consts["BLOCK_N"], cfg.consts["BLOCK_L"]
    n_tiles = triton.cdiv(N, BLOCK_N)
    split, chunk = _chunks(L, BLOCK_L, R * n_tiles, BWD_TARGET_PROGRAMS)
    s = torch.empty(split, R, N, 4, device=g.device, dtype=torch.float32)
    cfg.launch((R, n_tiles, split), g, torch.view_as_real(w), s, H, N, L, R, chunk)
    s = s.sum(0)
    return torch.complex(s[..., 0], s[..., 1]), torch.complex(s[..., 2], s[..., 3])


class VandermondeFn(torch.autograd.Function):
    """Autograd wrapper of the fused kernels (fp32 / complex64)."""

    @staticmethod
    @fp32_forward
    def forward(ctx, coef: Tensor, log_a: Tensor, L: int) -> Tensor:
        H, N = log_a.shape
        lead = coef.shape[:-2]
        c = coef.expand(*lead, H, N).to(torch.complex64).resolve_conj().reshape(-1, N).contiguous()
        w = log_a.to(torch.complex64).resolve_conj().contiguous()
        out = _forward(c, w, L)
        ctx.save_for_backward(c, w)
        ctx.L, ctx.lead, ctx.coef_shape = L, lead, coef.shape
        return out.reshape(*lead, H, L)

    @staticmethod
    @amp_backward
    def backward(ctx, g: Tensor):
        c, w = ctx.saved_tensors
        H, N = w.shape
        g = g.to(torch.float32).reshape(-1, ctx.L).contiguous()
        S0, S1 = _adjoint_sums(g, w, c.shape[0])
        grad_c = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_c = S0.conj().reshape(*ctx.lead, H, N).sum_to_size(ctx.coef_shape)
        if ctx.needs_input_grad[1]:
            grad_w = (c * S1).conj().reshape(-1, H, N).sum(0)
        return grad_c, grad_w, None


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
