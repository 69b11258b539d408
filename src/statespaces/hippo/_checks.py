"""Argument validation shared by the :mod:`statespaces.hippo` modules.

Every check raises ``TypeError`` for a value of the wrong kind and
``ValueError`` for a value of the right kind but out of range, with a message
that names the argument, the value received and what is accepted.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import torch

__all__ = [
    "check_measure",
    "check_state_size",
    "check_positive",
    "check_finite_tensor",
]


def check_measure(measure: object, valid: Iterable[str], what: str = "measure") -> str:
    """Return ``measure`` lower-cased if it names one of ``valid``."""
    valid = tuple(valid)
    if not isinstance(measure, str):
        raise TypeError(
            f"{what} must be a string, got {type(measure).__name__}; "
            f"valid options: {', '.join(valid)}"
        )
    name = measure.lower()
    if name not in valid:
        raise ValueError(
            f"unknown {what} {measure!r}; valid options: {', '.join(valid)}"
        )
    return name


def check_state_size(N: object, name: str = "N") -> int:
    """Return ``N`` as an int if it is an integer >= 1 (bools are rejected)."""
    if isinstance(N, bool) or not isinstance(N, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {N!r} ({type(N).__name__})")
    N = int(N)
    if N < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {N}")
    return N


def check_positive(x: object, name: str) -> float:
    """Return ``x`` as a float if it is a finite real number > 0."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a finite real number > 0, got {x!r} ({type(x).__name__})")
    x = float(x)
    if not math.isfinite(x) or x <= 0.0:
        raise ValueError(f"{name} must be a finite real number > 0, got {x!r}")
    return x


def check_finite_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is a real floating tensor with only finite entries."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must be a real floating tensor (float32 or float64), got dtype {x.dtype}"
        )
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} non-finite value(s) (nan or inf)")
    return x
