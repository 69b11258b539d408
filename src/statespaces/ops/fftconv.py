r"""Causal (and two-sided) long convolution by FFT (thesis Prop. 2.8/2.9, Cor. 2.10).

``y_t = sum_{s<=t} k_{t-s} u_s`` costs O(L^2) directly; padding both sequences to length 2L
turns the circular FFT convolution into the linear one in O(L log L).

Forward and backward are one autograd node (:class:`_FFTConv`) with real FFTs only. Per call,
the (B, H)-sized transforms are: forward ``rfft(u)`` and one ``irfft``; backward ``rfft(dy)`` and
one ``irfft`` for ``du``. The kernel's spectrum is computed once in the forward and reused by the
backward, and the kernel gradient is a batch-summed spectrum followed by an (H)-sized ``irfft``.
Plain autograd would instead differentiate ``rfft`` with a zero-filled full-length complex FFT
(twice: for u and for k) and spend extra elementwise passes on the complex products.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._amp import amp_backward, autocast_off, fp32_forward

Tensor = torch.Tensor


def _fft_len(n: int) -> int:
    """Smallest FFT-friendly length >= n (a product of 2, 3 and 5), which pocketfft/cuFFT run fast."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def two_sided_kernel(k: Tensor, L: int) -> Tensor:
    r"""Merge a bidirectional kernel pair into one length-2L circular kernel.

    ``k`` has shape (2, H, L): ``k[0]`` acts causally (lags 0..L-1) and ``k[1]`` anti-causally
    on lags -1..-L, so ``y_t = sum_{s<=t} k0[t-s] u_s + sum_{s>t} k1[s-t-1] u_s``. Returns (H, 2L).
    """
    return F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0))


class _FFTConv(torch.autograd.Function):
    r"""``y = (irfft(rfft(x, n) * rfft(k, n), n))[..., :L]``: circular convolution of length n of the
    zero-padded x (..., H, L) with the zero-padded kernel k (H, m), m <= n, truncated to L.

    Its adjoint is the circular correlation with the same spectra, so (with G = rfft(dy, n))
    ``dx = irfft(G * conj(K))[:L]`` and ``dk = irfft(sum_batch G * conj(X))[:m]``; exact, real, and
    with no wrap-around assumption beyond the forward's own.
    """

    @staticmethod
    @fp32_forward
    def forward(ctx, x: Tensor, k: Tensor, n: int) -> Tensor:
        L, m = x.shape[-1], k.shape[-1]
        X = torch.fft.rfft(x, n=n)
        K = torch.fft.rfft(k, n=n)
        y = torch.fft.irfft(X * K, n=n)[..., :L]
        ctx.n, ctx.L, ctx.m, ctx.kdim = n, L, m, k.dim()
        if ctx.needs_input_grad[1]:
            X.imag.neg_()                                      # keep conj(X), conjugated in place
        ctx.save_for_backward(X if ctx.needs_input_grad[1] else None, K.conj() if ctx.needs_input_grad[0] else None)
        return y

    @staticmethod
    @amp_backward
    @once_differentiable
    def backward(ctx, dy: Tensor):
        Xc, Kc = ctx.saved_tensors
        G = torch.fft.rfft(dy, n=ctx.n)
        dx = dk = None
        if ctx.needs_input_grad[1]:
            P = G * Xc
            lead = P.dim() - ctx.kdim
            if lead > 0:
                P = P.sum(tuple(range(lead)))
            dk = torch.fft.irfft(P, n=ctx.n)[..., : ctx.m]
        if ctx.needs_input_grad[0]:
            dx = torch.fft.irfft(G.mul_(Kc.resolve_conj()), n=ctx.n)[..., : ctx.L]   # G is not needed after
        return dx, dk, None


def fftconv(u: Tensor, k: Tensor, bidirectional: bool = False) -> Tensor:
    r"""Convolve each channel of ``u`` with its kernel.

    Args:
        u: input (B, L, H), real.
        k: kernel (H, Lk) with Lk >= 1 (truncated/zero-padded to L), or (2, H, L) when
            ``bidirectional`` (see :func:`two_sided_kernel`).
        bidirectional: use the two-sided kernel.

    Returns:
        y: (B, L, H), same dtype as ``u``.
    """
    L, H = u.shape[1], u.shape[-1]
    want = (2, H) if bidirectional else (H,)
    if u.dim() != 3 or k.dim() != len(want) + 1 or tuple(k.shape[:-1]) != want or k.shape[-1] < 1:
        raise ValueError(f"fftconv: u must be (B, L, H) and k {'(2, H, L)' if bidirectional else '(H, Lk)'}; "
                         f"got u {tuple(u.shape)}, k {tuple(k.shape)}")
    x = u.transpose(1, 2)                                      # (B, H, L)
    if bidirectional:
        n = 2 * L
        kc = two_sided_kernel(k[..., :L], L)
    else:
        kc = k[..., :L]
        n = _fft_len(L + kc.shape[-1])
    if torch.is_grad_enabled() and (u.requires_grad or k.requires_grad):
        y = _FFTConv.apply(x, kc, n)
    else:
        with autocast_off(x):                                  # as _FFTConv: float32 inside autocast
            y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(kc, n=n), n=n)[..., :L]
    return y.transpose(1, 2)
