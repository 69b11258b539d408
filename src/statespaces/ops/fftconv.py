r"""Causal (and two-sided) long convolution by FFT (thesis Prop. 2.8/2.9, Cor. 2.10).

``y_t = sum_{s<=t} k_{t-s} u_s`` costs O(L^2) directly; padding both sequences to length 2L
turns the circular FFT convolution into the linear one in O(L log L).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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
    L = u.shape[1]
    x = u.transpose(1, 2)                                      # (B, H, L)
    if bidirectional:
        n = 2 * L
        kf = torch.fft.rfft(two_sided_kernel(k[..., :L], L), n=n)
    else:
        n = _fft_len(L + min(L, k.shape[-1]))
        kf = torch.fft.rfft(k[..., :L], n=n)
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * kf, n=n)[..., :L]
    return y.transpose(1, 2)
