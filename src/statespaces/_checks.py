"""Validation helpers used at the public boundary (constructors, ``forward``, ``step``).

Internal code assumes valid input; every public entry point calls one of these so that
bad input fails early with a message that names the argument, what was found and what
was expected.
"""
from __future__ import annotations

from typing import Iterable

import torch

#: Set to ``False`` to skip the (cheap, but synchronizing on GPU) NaN/inf scan of inputs.
CHECK_FINITE = True


def check_choice(name: str, value: str, valid: Iterable[str]) -> str:
    """Return ``value`` lower-cased if it is one of ``valid``; raise ``ValueError`` listing them otherwise."""
    valid = tuple(valid)
    if not isinstance(value, str) or value.lower() not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid choices are: {', '.join(valid)}")
    return value.lower()


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_real_float(name: str, x: torch.Tensor) -> None:
    """Require a real floating-point tensor (no integers, no complex)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(
            f"{name} must be a real floating-point tensor, got dtype {x.dtype}; "
            "convert it with .float() (or .double())"
        )


def all_finite(x: torch.Tensor) -> bool:
    """True when every entry of ``x`` is finite, in one reduction pass for the common case.

    A NaN or an infinity makes the sum NaN or infinite, so a finite sum proves that every entry is
    finite; a non-finite sum is either a non-finite entry or an overflow of the sum itself, which
    the exact elementwise test then tells apart.
    """
    if x.numel() == 0:
        return True
    if bool(torch.isfinite(x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32))):
        return True
    return bool(torch.isfinite(x).all())


def check_finite(name: str, x: torch.Tensor) -> None:
    if CHECK_FINITE and not all_finite(x):
        raise ValueError(f"{name} contains NaN or inf values; clean the input before calling the layer")


def check_device(name: str, x: torch.Tensor, device: torch.device) -> None:
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the layer is on {device}; move one with .to(device)")


def check_sequence(
    x: torch.Tensor, d_model: int, param_dtype: torch.dtype, name: str = "input", device: torch.device = None
) -> None:
    """Validate a batch-first sequence ``x`` of shape (B, L, H) for a layer of width ``d_model``
    (and, when ``device`` is given, living on that device)."""
    check_real_float(name, x)
    if device is not None:
        check_device(name, x, device)
    if x.dim() != 3:
        raise ValueError(
            f"{name} must have shape (batch, length, d_model={d_model}), got {tuple(x.shape)} "
            f"({x.dim()} dims); add a batch dimension with x[None] if needed"
        )
    if x.shape[-1] != d_model:
        raise ValueError(f"{name} has {x.shape[-1]} channels in its last dim, the layer expects d_model={d_model}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has length 0; sequences must have at least one step")
    check_dtype_compatible(name, x, param_dtype)
    check_finite(name, x)


def check_output(y: torch.Tensor, x: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """Refuse to return a non-finite output for a finite input: name the non-finite parameters of
    ``module`` if there are any, otherwise report a float overflow of a too-large input."""
    if CHECK_FINITE and not all_finite(y):
        bad = [n for n, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise FloatingPointError(f"the layer output is not finite because these parameters are not: {bad}")
        raise FloatingPointError(
            f"the layer output overflowed {y.dtype} (input magnitude up to {float(x.abs().max()):.3g}); "
            "rescale the input or run the layer in float64"
        )
    return y


def check_dtype_compatible(name: str, x: torch.Tensor, param_dtype: torch.dtype) -> None:
    """Half-precision inputs are computed in the layer's precision; float64 needs a float64 layer."""
    if x.dtype == torch.float64 and param_dtype != torch.float64:
        raise TypeError(
            f"{name} is float64 but the layer parameters are {param_dtype}; call layer.double() "
            "or pass float32 input"
        )
