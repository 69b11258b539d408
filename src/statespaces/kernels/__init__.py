"""Convolution kernels of structured SSMs: fast paths and their reference twins."""
from .cauchy import CHUNK_ELEMS, cauchy, cauchy_naive, cauchy_ref
from .dplr import CAUCHY_BACKENDS, DPLRStep, dplr_advance, dplr_kernel, dplr_real_system, dplr_zero_input
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
from .reference import direct_causal_conv, power_kernel, recurrence, vandermonde_naive
from .vandermonde import vandermonde, vandermonde_transpose, zoh_vandermonde

__all__ = [
    "power_kernel",
    "recurrence",
    "direct_causal_conv",
    "vandermonde_naive",
    "vandermonde",
    "vandermonde_transpose",
    "zoh_vandermonde",
    "oscillator_transition",
    "oscillator_eigenvalues",
    "oscillator_kernel",
    "oscillator_responses",
    "mimo_kernel",
    "matrix_powers",
    "IMEX_MAX_DT2A",
    "OSCILLATOR_SCHEMES",
    "cauchy",
    "cauchy_naive",
    "cauchy_ref",
    "CHUNK_ELEMS",
    "dplr_kernel",
    "dplr_zero_input",
    "dplr_advance",
    "DPLRStep",
    "dplr_real_system",
    "CAUCHY_BACKENDS",
]
