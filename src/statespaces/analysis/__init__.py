"""The explicit operator: any diagonal SSM (S4D, LinOSS, S4 via its eigendecomposition) as a network
of damped oscillators, with its closed-form kernel and plots (seed 000, seed 001, thesis §3.2)."""
from .oscillators import (
    Oscillator,
    OscillatorAnalysis,
    green_kernel,
    layer_analyses,
    oscillators,
    s4d_from_oscillators,
    supported_layer,
    unsupported_reason,
)
from .plots import (
    analyze_checkpoint,
    analyze_module,
    load_model,
    plot_eigenvalues,
    plot_frequency_response,
    plot_kernels,
    plot_oscillator_table,
    write_table,
)

__all__ = [
    "oscillators", "Oscillator", "OscillatorAnalysis", "s4d_from_oscillators", "green_kernel", "supported_layer",
    "layer_analyses", "unsupported_reason",
    "analyze_checkpoint", "analyze_module", "load_model", "plot_eigenvalues", "plot_kernels",
    "plot_frequency_response", "plot_oscillator_table", "write_table",
]
