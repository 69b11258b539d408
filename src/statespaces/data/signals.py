"""Test signals of the thesis' HiPPO, delay, reconstruction and sampling-rate experiments (§4.4,
app. D.4, Fig. 7.9, Table 7.3): band-limited noise, the §4.4.2 benchmark function, the delay and
windowed-noise sets of the §7.5.8 synthetic tasks, and two-tone classes."""
from __future__ import annotations

import math
from typing import Tuple

import torch

Tensor = torch.Tensor


def bandlimited_noise(L: int, dt: float, band_hz: float = 1.0, rms: float = 0.5, seed: int = 0,
                      batch: int = 1) -> torch.Tensor:
    """White noise low-passed at ``band_hz``: random Fourier coefficients on the band, periodic over
    the window ``L * dt``, scaled to ``rms``. Returns float64 (batch, L)."""
    g = torch.Generator().manual_seed(seed)
    freqs = torch.fft.rfftfreq(L, d=dt)
    mask = (freqs > 0) & (freqs <= band_hz)
    shape = (batch, freqs.shape[0])
    coef = torch.complex(torch.randn(shape, generator=g, dtype=torch.float64),
                         torch.randn(shape, generator=g, dtype=torch.float64)) * mask
    sig = torch.fft.irfft(coef, n=L)
    return sig * (rms / sig.pow(2).mean(-1, keepdim=True).sqrt())


def benchmark_function(x: torch.Tensor) -> torch.Tensor:
    """f(x) = 1/4 sin x + 1/2 sin(x/3) + sin(x/7) (§4.4.2)."""
    return 0.25 * torch.sin(x) + 0.5 * torch.sin(x / 3) + torch.sin(x / 7)


def delay_data(n: int, L: int, lag: int, band: float, seed: int) -> Tuple[Tensor, Tensor]:
    """Band-limited white noise (period 1 s, ``L`` samples, ``band`` Hz, rms 0.5) and the same signal
    delayed by ``lag`` samples (zeros before the start)."""
    u = bandlimited_noise(L, 1.0 / L, band_hz=band, rms=0.5, seed=seed, batch=n).float()
    y = torch.cat([torch.zeros(n, lag), u[:, : L - lag]], 1)
    return u, y


def window_noise(L: int, band: float, seed: int, n: int) -> Tensor:
    """(n, L) band-limited noise that is *not* periodic over L: drawn over 2L samples (a 2 s period at
    dt = 1/L) and cropped to the second half. Periodic noise would let a long memory rebuild the
    last window from the start of the sequence, which is not the task."""
    return bandlimited_noise(2 * L, 1.0 / L, band_hz=band, rms=0.5, seed=seed, batch=n)[:, L:].float()


def two_tone_classes(n: int, L: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """10 classes of two-tone signals; class c has base frequency f_c cycles/sample at the full rate."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    f = 0.004 + 0.004 * y.double()
    t = torch.arange(L, dtype=torch.float64)
    ph = 2 * math.pi * torch.rand(n, 2, generator=g, dtype=torch.float64)
    x = (torch.sin(2 * math.pi * f[:, None] * t + ph[:, :1])
         + 0.5 * torch.sin(2 * math.pi * 2.5 * f[:, None] * t + ph[:, 1:]))
    x = x + 0.1 * torch.randn(n, L, generator=g, dtype=torch.float64)
    return x.float()[..., None], y
