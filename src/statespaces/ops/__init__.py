"""Sequence operators shared by the layers (FFT convolution, scans)."""
from .fftconv import fftconv, two_sided_kernel
from .fftconv_nd import conv_nd, fftconv_nd, toeplitz_conv_nd
from .scan import combine_block2, combine_diagonal, scan_block2, scan_diagonal, scan_loop
from .time_varying import time_varying_ssm

__all__ = [
    "fftconv", "two_sided_kernel", "fftconv_nd", "toeplitz_conv_nd", "conv_nd",
    "scan_diagonal", "scan_block2", "scan_loop", "combine_diagonal", "combine_block2", "time_varying_ssm",
]
