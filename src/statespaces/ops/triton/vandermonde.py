r"""Fused Vandermonde kernel generation for S4D in Triton.

``out[r, l] = Re sum_n c[r, n] exp(l w[h(r), n])`` for coefficient rows r (batch x H) and shared
eigenvalue logs w (H, N). Each program computes a tile of BLOCK_L outputs of one row, looping over
N in BLOCK_N tiles; the (N, L) powers live only in registers (no (H, N, L) intermediate), and the
sum is accumulated in fp32. Each entry costs one ``exp`` and one ``sincos`` of an fp32 argument
reduced to [-pi, pi] (so fast hardware sin/cos stay accurate).

Phase accuracy. ``l * Im w`` formed in fp32 is off by up to ``|l Im w| 2^-24`` (about 1e-3 rad at
l = 65,536, |Im w| ~ 3), an error no later reduction can undo. So the phase of entry (n, l) with
``l = l0 + r`` (l0 the tile start, r < BLOCK_L) is built as

* tile base ``l0 * Im w`` in **fp64**, reduced by whole turns in fp64 (2 pi as a sum of three
  fp32-exact constants: Triton float literals are fp32), then rounded to fp32 -- O(BLOCK_N) fp64
  operations per tile;
* in-tile part ``r * Im w`` by exact splitting: ``Im w = hi + lo`` (host side) with ``hi`` carrying
  16 significant bits, so ``r * hi`` is exact in fp32 for r < 256 and is reduced exactly
  (Cody-Waite); ``r * lo`` is tiny.

The phase error is then a few fp32 roundings of numbers in [-2 pi, 2 pi] (~1e-6 rad), at any L.

Backward (:class:`VandermondeFn`): for a real loss with upstream gradient g (rows, L), PyTorch's
complex gradient convention (``dLoss/dRe + i dLoss/dIm``) gives

    grad_c[r, n] = conj(S0),      grad_w[h, n] = sum_{r of h} conj(c[r, n] S1[r, n]),
    S0 = sum_l g_l exp(l w_n),    S1 = sum_l l g_l exp(l w_n).

A second kernel computes (S0, S1) per row and mode, splitting L over SPLIT programs whose
partial sums are added in PyTorch (deterministic, no atomics).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._amp import amp_backward, fp32_forward
from ._launch import make, pow2_domain, signature, unique

Tensor = torch.Tensor

__all__ = ["vandermonde_triton", "VandermondeFn"]


@triton.jit
def _reduce(ph):
    # ph - 2 pi k with k = round(ph / 2 pi), in the precision of ph (Cody-Waite): 2 pi =
    # 6.28125 + 0.0019353071693331003 + 1.0253131677018246e-11, each part exact in fp32 (the
    # literals are fp32 in Triton) and the first with 8 significant bits, so k * 6.28125 is exact
    k = tl.floor(ph * 0.15915494309189535 + 0.5)
    r = ph - k * 6.28125
    r = r - k * 0.0019353071693331003
    return r - k * 1.0253131677018246e-11


@triton.jit
def _sincos_reduced(ph):
    r = _reduce(ph)
    return tl.cos(r), tl.sin(r)


@triton.jit
def _tile_base(l0, wi):
    # (l0 * wi) mod 2 pi, formed and reduced in fp64, returned in fp32: (BLOCK_N,)
    return _reduce(l0 * wi.to(tl.float64)).to(tl.float32)            # integer l0 promotes exactly to fp64


@triton.jit
def _tile_phase(base, hi, lo, rf):
    # base[n] + r * (hi[n] + lo[n]) for r = rf (in-tile offsets), reduced to [-pi, pi] by _sincos_reduced;
    # r * hi is exact in fp32 (hi has 16 significant bits, r < 256), so its reduction is exact too
    return base[:, None] + (_reduce(hi[:, None] * rf[None, :]) + lo[:, None] * rf[None, :])


@triton.jit
def _vandermonde_fwd_kernel(
    c_ptr, w_ptr, wh_ptr, wl_ptr, out_ptr, H, N, L,
    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)                     # coefficient row: (batch, h) flattened
    l0 = tl.program_id(1).to(tl.int64) * BLOCK_L
    h = row % H
    rf = tl.arange(0, BLOCK_L).to(tl.float32)
    offs_l = l0 + tl.arange(0, BLOCK_L)
    lf = offs_l.to(tl.float32)
    acc = tl.zeros([BLOCK_L], dtype=tl.float32)
    c_row = c_ptr + row * (2 * N)
    w_row = w_ptr + h * (2 * N)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mn = offs_n < N
        cr = tl.load(c_row + 2 * offs_n, mask=mn, other=0.0)
        ci = tl.load(c_row + 2 * offs_n + 1, mask=mn, other=0.0)
        wr = tl.load(w_row + 2 * offs_n, mask=mn, other=0.0)
        wi = tl.load(w_row + 2 * offs_n + 1, mask=mn, other=0.0)
        hi = tl.load(wh_ptr + h * N + offs_n, mask=mn, other=0.0)
        lo = tl.load(wl_ptr + h * N + offs_n, mask=mn, other=0.0)
        mag = tl.exp(wr[:, None] * lf[None, :])             # (BLOCK_N, BLOCK_L)
        cs, sn = _sincos_reduced(_tile_phase(_tile_base(l0, wi), hi, lo, rf))
        acc += tl.sum(mag * (cr[:, None] * cs - ci[:, None] * sn), axis=0)
    tl.store(out_ptr + row * L + offs_l, acc, mask=offs_l < L)


@triton.jit
def _vandermonde_bwd_kernel(
    g_ptr, w_ptr, wh_ptr, wl_ptr, s_ptr, H, N, L, R, CHUNK,
    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    # s[split, row, n, :] = (Re S0, Im S0, Re S1, Im S1) over this program's L-chunk
    row = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    split = tl.program_id(2).to(tl.int64)
    h = row % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mn = offs_n < N
    wr = tl.load(w_ptr + h * (2 * N) + 2 * offs_n, mask=mn, other=0.0)
    wi = tl.load(w_ptr + h * (2 * N) + 2 * offs_n + 1, mask=mn, other=0.0)
    hi = tl.load(wh_ptr + h * N + offs_n, mask=mn, other=0.0)
    lo = tl.load(wl_ptr + h * N + offs_n, mask=mn, other=0.0)
    rf = tl.arange(0, BLOCK_L).to(tl.float32)
    s0r = tl.zeros([BLOCK_N], dtype=tl.float32)
    s0i = tl.zeros([BLOCK_N], dtype=tl.float32)
    s1r = tl.zeros([BLOCK_N], dtype=tl.float32)
    s1i = tl.zeros([BLOCK_N], dtype=tl.float32)
    start = split * CHUNK
    for l0 in range(start, start + CHUNK, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        g = tl.load(g_ptr + row * L + offs_l, mask=offs_l < L, other=0.0)
        lf = offs_l.to(tl.float32)
        mag = tl.exp(wr[:, None] * lf[None, :]) * g[None, :]
        cs, sn = _sincos_reduced(_tile_phase(_tile_base(l0, wi), hi, lo, rf))
        zr = mag * cs
        zi = mag * sn
        s0r += tl.sum(zr, axis=1)
        s0i += tl.sum(zi, axis=1)
        s1r += tl.sum(zr * lf[None, :], axis=1)
        s1i += tl.sum(zi * lf[None, :], axis=1)
    base = s_ptr + ((split * R + row) * N + offs_n) * 4
    tl.store(base, s0r, mask=mn)
    tl.store(base + 1, s0i, mask=mn)
    tl.store(base + 2, s1r, mask=mn)
    tl.store(base + 3, s1i, mask=mn)


def _split_phase(w: Tensor):
    """``Im w`` reduced by whole turns (fp64) and split as ``hi + lo`` (fp32, contiguous (H, N)):
    ``hi`` keeps 16 significant bits, so ``r * hi`` is exact in fp32 for integers r < 256."""
    wi = w.imag.to(torch.float64)
    wi = wi - 2 * math.pi * torch.round(wi / (2 * math.pi))
    hi = (wi.to(torch.float32).view(torch.int32) & ~0xFF).view(torch.float32)
    lo = (wi - hi.to(torch.float64)).to(torch.float32)
    return hi.contiguous(), lo.contiguous()


#: Tile sizes and the target number of programs of the backward (tests lower them to run
#: several tiles / L-splits on tiny shapes). The (BLOCK_N, BLOCK_L) tiles are sized so that no
#: variant spills registers on sm_80 / sm_90 (tests/test_triton_resources.py).
FWD_BLOCK_L = 64
FWD_MAX_BLOCK_N = 32
BWD_BLOCK_L = 64
BWD_MAX_BLOCK_N = 32
BWD_TARGET_PROGRAMS = 2048

_FWD_SIG = signature("*fp32", ["c_ptr", "w_ptr", "wh_ptr", "wl_ptr", "out_ptr"], ["H", "N", "L"])
_BWD_SIG = signature("*fp32", ["g_ptr", "w_ptr", "wh_ptr", "wl_ptr", "s_ptr"], ["H", "N", "L", "R", "CHUNK"])


def _block_n(N: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(N)))


def _fwd_config(N: int):
    """The forward launch for N modes (the only shape the choice depends on)."""
    assert FWD_BLOCK_L <= 256, "the exact in-tile phase split needs BLOCK_L <= 256"
    return make(__name__, _vandermonde_fwd_kernel, _FWD_SIG,
                BLOCK_N=_block_n(N, FWD_MAX_BLOCK_N), BLOCK_L=FWD_BLOCK_L)


def _bwd_config(N: int):
    assert BWD_BLOCK_L <= 256, "the exact in-tile phase split needs BLOCK_L <= 256"
    return make(__name__, _vandermonde_bwd_kernel, _BWD_SIG,
                BLOCK_N=_block_n(N, BWD_MAX_BLOCK_N), BLOCK_L=BWD_BLOCK_L)


def configs():
    """Every launch configuration :func:`_forward` / :func:`_adjoint_sums` can choose."""
    Ns = pow2_domain(max(FWD_MAX_BLOCK_N, BWD_MAX_BLOCK_N))
    return unique([_fwd_config(n) for n in Ns] + [_bwd_config(n) for n in Ns])


def _forward(c: Tensor, w: Tensor, L: int) -> Tensor:
    """c: complex64 (R, N) contiguous rows with row r using w[r % H]; w: complex64 (H, N)."""
    R, N = c.shape
    H = w.shape[0]
    out = torch.empty(R, L, device=c.device, dtype=torch.float32)
    cfg = _fwd_config(N)
    grid = (R, triton.cdiv(L, cfg.consts["BLOCK_L"]))
    hi, lo = _split_phase(w)
    cfg.launch(grid, torch.view_as_real(c), torch.view_as_real(w), hi, lo, out, H, N, L)
    return out


def _adjoint_sums(g: Tensor, w: Tensor, R: int):
    """(S0, S1) complex64 (R, N) from g (R, L) fp32 contiguous."""
    H, N = w.shape
    L = g.shape[-1]
    cfg = _bwd_config(N)
    BLOCK_N, BLOCK_L = cfg.consts["BLOCK_N"], cfg.consts["BLOCK_L"]
    # enough programs to fill a GPU when R is small, but chunks of at least a few tiles
    split = max(1, min(triton.cdiv(L, 4 * BLOCK_L), triton.cdiv(BWD_TARGET_PROGRAMS, R * triton.cdiv(N, BLOCK_N))))
    chunk = triton.cdiv(triton.cdiv(L, split), BLOCK_L) * BLOCK_L
    split = triton.cdiv(L, chunk)
    s = torch.empty(split, R, N, 4, device=g.device, dtype=torch.float32)
    grid = (R, triton.cdiv(N, BLOCK_N), split)
    hi, lo = _split_phase(w)
    cfg.launch(grid, g, torch.view_as_real(w), hi, lo, s, H, N, L, R, chunk)
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
            f"vandermonde_triton: log_a must be (H, N) and coef (..., H, N), got {tuple(log_a.shape)} and {tuple(coef.shape)}"
        )
    return VandermondeFn.apply(coef, log_a, int(L))
