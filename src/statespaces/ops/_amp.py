r"""Autocast (mixed precision) conventions for the package's custom ``torch.autograd.Function``\ s.

Inside ``torch.autocast`` the ops of a custom Function's ``forward`` and ``backward`` would run
under the autocast policy too (on CPU the backward runs on the calling thread, inside the region):
matmuls come out in bfloat16/float16, which breaks complex assembly (``torch.complex`` of two
bfloat16 tensors) and, worse, evaluates precision-sensitive sums (Vandermonde phases, FFTs,
Cauchy sums, long scans) in 8 mantissa bits. The torch convention is
:func:`torch.amp.custom_fwd` / :func:`torch.amp.custom_bwd`; both need a fixed ``device_type``, and
these Functions run on CPU and CUDA, so the decorators below pick the device type of the first
tensor argument at call time and apply the torch decorator for it:

* :func:`fp32_forward` (``custom_fwd(device_type=..., cast_inputs=torch.float32)``): inside an
  autocast region, floating inputs of lower precision are cast to float32 (float64 and complex
  inputs are left alone) and ``forward`` runs with autocast disabled; outside, a no-op.
* :func:`autocast_forward` (``custom_fwd(device_type=...)``): ``forward`` runs under the caller's
  autocast state (for Functions that are plain matmuls, where low precision is the point).
* :func:`amp_backward` (``custom_bwd(device_type=...)``): ``backward`` runs with the autocast state
  its ``forward`` ran with.

Works with torch >= 2.4 (``torch.amp.custom_fwd`` with ``device_type``).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Dict, Iterator, Optional

import torch

from .._checks import tracing

__all__ = ["fp32_forward", "autocast_forward", "amp_backward", "autocast_off", "upcast_half"]

_ATTR = "_statespaces_amp_device"


def _device_type(args) -> str:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type
    return "cpu"


def _up(a, dtype: torch.dtype):
    """``a`` cast to ``dtype`` if it is a lower-precision floating tensor (as custom_fwd's cast_inputs)."""
    if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != torch.float64:
        return a.to(dtype)
    return a


def _has_autocast(device_type: str) -> bool:
    try:
        return bool(torch.amp.is_autocast_available(device_type))
    except Exception:  # pragma: no cover - very old torch or an exotic device
        return False


def _forward(cast_inputs: Optional[torch.dtype]) -> Callable:
    def deco(fwd: Callable) -> Callable:
        wrapped: Dict[str, Callable] = {}

        @functools.wraps(fwd)
        def forward(ctx, *args, **kwargs):
            dev = _device_type(args)
            if tracing():       # dynamo cannot build the torch decorator inside a graph: same rule inline
                setattr(ctx, _ATTR, dev)
                if cast_inputs is None or not (_has_autocast(dev) and torch.is_autocast_enabled(dev)):
                    return fwd(ctx, *args, **kwargs)
                args = tuple(_up(a, cast_inputs) for a in args)
                with torch.autocast(device_type=dev, enabled=False):
                    return fwd(ctx, *args, **kwargs)
            if dev not in wrapped:
                wrapped[dev] = (
                    torch.amp.custom_fwd(fwd, device_type=dev, cast_inputs=cast_inputs)
                    if _has_autocast(dev) else fwd
                )
            setattr(ctx, _ATTR, dev)
            return wrapped[dev](ctx, *args, **kwargs)

        return forward

    return deco


#: Decorator for ``forward``: float32 inside autocast regions (see the module docstring).
fp32_forward = _forward(torch.float32)
#: Decorator for ``forward``: the caller's autocast state (see the module docstring).
autocast_forward = _forward(None)


def amp_backward(bwd: Callable) -> Callable:
    """Decorator for ``backward``: the autocast state of the matching ``forward`` (see module docstring)."""
    wrapped: Dict[str, Callable] = {}

    @functools.wraps(bwd)
    def backward(ctx, *grads):
        dev = getattr(ctx, _ATTR, "cpu")
        if tracing():
            return bwd(ctx, *grads)
        if dev not in wrapped:
            wrapped[dev] = torch.amp.custom_bwd(bwd, device_type=dev) if _has_autocast(dev) else bwd
        if not hasattr(ctx, "_fwd_used_autocast"):              # forward ran undecorated (no autocast on dev)
            return bwd(ctx, *grads)
        return wrapped[dev](ctx, *grads)

    return backward


@contextlib.contextmanager
def autocast_off(*tensors: Optional[torch.Tensor]) -> Iterator[None]:
    """Disable autocast for the device type of the first tensor, if it is enabled there: for
    no-grad fast paths that bypass a Function decorated with :func:`fp32_forward`."""
    dev = _device_type(tensors)
    if _has_autocast(dev) and torch.is_autocast_enabled(dev):
        with torch.autocast(device_type=dev, enabled=False):
            yield
    else:
        yield


def upcast_half(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is float16/bfloat16 (autocast outputs, for losses and sampling), else as it is: a
    float64 model's logits keep float64 (``.float()`` would round its loss to 5e-8 and flatten finite differences)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
