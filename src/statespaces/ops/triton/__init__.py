r"""Triton kernels for the hot loops of the SSM layers (issue #12).

Each kernel computes the same function as a PyTorch implementation and its reference twin, and
is chosen by its op through :mod:`statespaces.backend` (CUDA tensors, ``triton`` importable); it
is never required. Importing this package does not import ``triton``; the submodules do:

* :mod:`.vandermonde`: fused S4D kernel generation ``Re sum_n c_n exp(l w_n)`` with backward, and the same
  with the ZOH discretization inside (from ``dt, A, B, C``; its chain rule in one epilogue launch);
* :mod:`.scan`: chunked diagonal linear-recurrence scan ``x_l = a_l x_{l-1} + b_l`` with backward;
* :mod:`.cauchy`: DPLR Cauchy sums ``sum_n v_n / (z_k - w_n)`` with backward;
* :mod:`.step`: one fused recurrent step of a diagonal SSM (state update and output), inference only;
* :mod:`.dplr_step`: one fused recurrent step of S4 in its low-rank (Woodbury) form, inference only;
* :mod:`.oscillator_step`: one fused recurrent step of LinOSS / D-LinOSS oscillators (projections and 2x2
  update, two launches), inference only;
* :mod:`.linoss`: fused LinOSS / D-LinOSS 2x2-block scan with the forcing built from u, with backward.
* :mod:`.oscillator`: the LinOSS transition ``(A, dt) -> (M, f)`` and its Jacobian, one launch.
* :mod:`.chunked_conv`: chunked LTI convolution (near-field Toeplitz + state carried between chunks).
* :mod:`.chunked_dense`: the same with a dense N x N transition per channel (S4's real form), with backward;
* :mod:`.dense_tables`: that convolution's per-channel tables (taps' Toeplitz matrix, near powers, ``dA^T``) from
  ``(dA, dB, c, D)``, one launch forward, two backward;
* :mod:`.dplr_discrete`: S4's real bilinear ``(dA, dB)`` from ``(Lambda, P, B, dt)`` (Woodbury), one launch each way;
* :mod:`.spectral`: the FFT convolution's two backward spectral products in one pass.

Complex tensors are handled as (re, im) pairs, accumulated in fp32 (``step`` also runs in fp64).

Every kernel launch goes through a :class:`~._launch.Config` that its module's ``configs()``
lists; :func:`configs` gathers them all (the resource check compiles each for sm_80 / sm_90).
"""
from typing import TYPE_CHECKING, List

if TYPE_CHECKING:
    from ._launch import Config
__all__ = ["vandermonde", "scan", "cauchy", "step", "dplr_step", "oscillator_step", "linoss", "chunked_conv",
           "chunked_dense", "dense_tables", "dplr_discrete", "oscillator", "spectral", "configs"]


def configs() -> List["Config"]:
    """Every launch configuration of every kernel (imports ``triton``)."""
    from . import (
        cauchy,
        chunked_conv,
        chunked_dense,
        dense_tables,
        dplr_discrete,
        dplr_step,
        linoss,
        oscillator,
        oscillator_step,
        scan,
        spectral,
        step,
        vandermonde,
    )

    return [*vandermonde.configs(), *scan.configs(), *cauchy.configs(), *step.configs(), *dplr_step.configs(),
            *oscillator_step.configs(), *linoss.configs(), *oscillator.configs(),
            *chunked_conv.configs(), *chunked_dense.configs(), *dense_tables.configs(), *dplr_discrete.configs(),
            *spectral.configs()]
