"""Argument validation shared by the :mod:`statespaces.hippo` modules.

Every check raises ``TypeError`` for a value of the wrong kind and
``ValueError`` for a value of the right kind but out of range, with a message
that names the argument, the value received and what is accepted.
"""

from __future__ import annotations

import numbers
from typing import Iterable, Tuple

import torch

from .._checks import all_finite
from .._checks import check_real as _check_real

__all__ = [
    "check_measure",
    "check_state_size",
    "check_real",
    "check_positive",
    "check_finite_tensor",
    "check_system",
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


def _number(x: object) -> object:
    """A 0-d real tensor as its Python number; anything else unchanged (for the checks below)."""
    if isinstance(x, torch.Tensor) and x.dim() == 0 and x.dtype != torch.bool and not x.is_complex():
        return x.item()
    return x


def check_real(x: object, name: str) -> float:
    """Return ``x`` as a float if it is a finite real number: Python/NumPy ints and floats, or a 0-d real
    tensor; bools, complex numbers, strings and other tensors raise ``TypeError``, NaN/inf ``ValueError``."""
    return _check_real(name, _number(x), positive=False, what="finite real number")


def check_positive(x: object, name: str) -> float:
    """Return ``x`` as a float if it is a finite real number > 0 (the kinds :func:`check_real` accepts)."""
    return _check_real(name, _number(x), what="finite real number > 0")


def check_finite_tensor(x: object, name: str, complex_ok: bool = False) -> torch.Tensor:
    """Return ``x`` if it is a floating tensor (any precision; complex too if ``complex_ok``) with only
    finite entries."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (torch.is_floating_point(x) or (complex_ok and x.is_complex())):
        kinds = "floating or complex" if complex_ok else "real floating"
        raise TypeError(f"{name} must be a {kinds} tensor (any precision, e.g. float32 or float64), "
                        f"got dtype {x.dtype}")
    if not all_finite(x):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} non-finite value(s) (nan or inf)")
    return x


def check_system(A: object, B: object) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``(A, B)`` if they are an SSM ``x' = Ax + Bu``: finite floating (real or complex) tensors of
    shapes ``(N, N)`` and ``(N,)``."""
    A = check_finite_tensor(A, "A", complex_ok=True)
    B = check_finite_tensor(B, "B", complex_ok=True)
    if A.dim() != 2 or A.shape[0] != A.shape[1] or tuple(B.shape) != (A.shape[0],):
        raise ValueError(f"A must have shape (N, N) and B shape (N,), got {tuple(A.shape)} and {tuple(B.shape)}")
    return A, B
