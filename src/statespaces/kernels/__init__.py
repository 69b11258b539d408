"""Convolution kernels of structured SSMs: fast paths and their reference twins."""
from .reference import direct_causal_conv, power_kernel, recurrence, vandermonde_naive
from .vandermonde import vandermonde, vandermonde_transpose

__all__ = [
    "power_kernel",
    "recurrence",
    "direct_causal_conv",
    "vandermonde_naive",
    "vandermonde",
    "vandermonde_transpose",
]
