"""Convolution kernels of structured SSMs: fast paths and their reference twins."""
from .reference import direct_causal_conv, power_kernel, recurrence, vandermonde_naive
from .oscillator import (
    IMEX_MAX_DT2A,
    OSCILLATOR_SCHEMES,
    matrix_powers,
    mimo_kernel,
    oscillator_eigenvalues,
    oscillator_kernel,
    oscillator_responses,
    oscillator_transition,
)
from .vandermonde import vandermonde, vandermonde_transpose

__all__ = [
    "power_kernel",
    "recurrence",
    "direct_causal_conv",
    "vandermonde_naive",
    "vandermonde",
    "vandermonde_transpose",
    "oscillator_transition",
    "oscillator_eigenvalues",
    "oscillator_kernel",
    "oscillator_responses",
    "mimo_kernel",
    "matrix_powers",
    "IMEX_MAX_DT2A",
    "OSCILLATOR_SCHEMES",
]
