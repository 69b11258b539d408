r"""Fused Vandermonde kernel generation for S4D in Triton.

``out[r, l] = Re sum_n c[r, n] exp(l w[h(r), n])`` for coefficient rows r (batch x H) and shared
eigenvalue logs w (H, N). Each program computes a tile of BLOCK_L outputs of one row, looping over
N in BLOCK_N tiles; the (N, L) powers live only in registers (no (H, N, L) intermediate), and the
sum is accumulated in fp32. Each entry costs one ``exp`` and one ``sincos`` of an fp32 argument,
after an explicit Cody-Waite reduction of the phase to [-pi, pi] (so fast hardware sin/cos stay
accurate at large ``l * Im w``).

Backward (:class:`VandermondeFn`): for a real loss with upstream gradient g (rows, L), PyTorch's
complex gradient convention (``dLoss/dRe + i dLoss/dIm``) gives

    grad_c[r, n] = conj(S0),      grad_w[h, n] = sum_{r of h} conj(c[r, n] S1[r, n]),
    S0 = sum_l g_l exp(l w_n),    S1 = sum_l l g_l exp(l w_n).

A second kernel computes (S0, S1) per row and mode, splitting L over SPLIT programs whose
partial sums are added in PyTorch (deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor

__all__ = ["vandermonde_triton", "VandermondeFn"]


@triton.jit
def _sincos_reduced(ph):
    # ph - 2 pi k with k = round(ph / 2 pi), 2 pi split in a high and a low part (Cody-Waite)
    k = tl.floor(ph * 0.15915494309189535 + 0.5)
    r = ph - k * 6.28125
    r = r - k * 0.0019353071795864769
    return tl.cos(r), tl.sin(r)


@triton.jit
def _vandermonde_fwd_kernel(
    c_ptr, w_ptr, out_ptr, H, N, L,
    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)                     # coefficient row: (batch, h) flattened
    pid_l = tl.program_id(1)
    h = row % H
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
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
        mag = tl.exp(wr[:, None] * lf[None, :])             # (BLOCK_N, BLOCK_L)
        cs, sn = _sincos_reduced(wi[:, None] * lf[None, :])
        acc += tl.sum(mag * (cr[:, None] * cs - ci[:, None] * sn), axis=0)
    tl.store(out_ptr + row * L + offs_l, acc, mask=offs_l < L)


@triton.jit
def _vandermonde_bwd_kernel(
    g_ptr, w_ptr, s_ptr, H, N, L, R, CHUNK,
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
        cs, sn = _sincos_reduced(wi[:, None] * lf[None, :])
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


#: Tile sizes and the target number of programs of the backward (tests lower them to run
#: several tiles / L-splits on tiny shapes).
FWD_BLOCK_L = 128
BWD_BLOCK_L = 64
BWD_TARGET_PROGRAMS = 2048


def _block_n(N: int) -> int:
    return max(16, min(64, triton.next_power_of_2(N)))


def _forward(c: Tensor, w: Tensor, L: int) -> Tensor:
    """c: complex64 (R, N) contiguous rows with row r using w[r % H]; w: complex64 (H, N)."""
    R, N = c.shape
    H = w.shape[0]
    out = torch.empty(R, L, device=c.device, dtype=torch.float32)
    BLOCK_L = FWD_BLOCK_L if L >= FWD_BLOCK_L else max(16, triton.next_power_of_2(L))
    grid = (R, triton.cdiv(L, BLOCK_L))
    _vandermonde_fwd_kernel[grid](
        torch.view_as_real(c), torch.view_as_real(w), out, H, N, L, BLOCK_N=_block_n(N), BLOCK_L=BLOCK_L
    )
    return out


def _adjoint_sums(g: Tensor, w: Tensor, R: int):
    """(S0, S1) complex64 (R, N) from g (R, L) fp32 contiguous."""
    H, N = w.shape
    L = g.shape[-1]
    BLOCK_N = _block_n(N)
    BLOCK_L = BWD_BLOCK_L if L >= BWD_BLOCK_L else max(16, triton.next_power_of_2(L))
    # enough programs to fill a GPU when R is small, but chunks of at least a few tiles
    split = max(1, min(triton.cdiv(L, 4 * BLOCK_L), triton.cdiv(BWD_TARGET_PROGRAMS, R * triton.cdiv(N, BLOCK_N))))
    chunk = triton.cdiv(triton.cdiv(L, split), BLOCK_L) * BLOCK_L
    split = triton.cdiv(L, chunk)
    s = torch.empty(split, R, N, 4, device=g.device, dtype=torch.float32)
    grid = (R, triton.cdiv(N, BLOCK_N), split)
    _vandermonde_bwd_kernel[grid](
        g, torch.view_as_real(w), s, H, N, L, R, chunk, BLOCK_N=BLOCK_N, BLOCK_L=BLOCK_L
    )
    s = s.sum(0)
    return torch.complex(s[..., 0], s[..., 1]), torch.complex(s[..., 2], s[..., 3])


class VandermondeFn(torch.autograd.Function):
    """Autograd wrapper of the fused kernels (fp32 / complex64)."""

    @staticmethod
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
