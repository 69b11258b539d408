"""Sequence operators shared by the layers (FFT convolution, scans)."""
from .fftconv import fftconv, two_sided_kernel

__all__ = ["fftconv", "two_sided_kernel"]
