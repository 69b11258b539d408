"""Gradients of broadcast inputs: the one reduction every hand-written backward of :mod:`statespaces.ops` ends with."""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def reduce_to(grad: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """The gradient of an input of ``shape`` and ``dtype`` that was broadcast to ``grad``'s shape: the real part
    for a real input (the gradient of a real input of a complex product is real), summed over the broadcast
    dims."""
    if not dtype.is_complex and grad.is_complex():
        grad = grad.real
    if grad.shape != shape:
        grad = grad.sum_to_size(shape)
    return grad.to(dtype)
