"""Test signals of the thesis' HiPPO and delay experiments (§4.4, app. D.4, Fig. 7.9)."""
from __future__ import annotations

import torch


def bandlimited_noise(L: int, dt: float, band_hz: float = 1.0, rms: float = 0.5, seed: int = 0, batch: int = 1) -> torch.Tensor:
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
