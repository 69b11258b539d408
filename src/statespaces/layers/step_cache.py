"""The discretized step system of a layer, cached for generation and never stale (thesis §2.3.2).

A recurrent step needs the discrete system (``dA``, ``dB``, ...), whose construction costs
transcendental functions (S4D), a small Woodbury inverse (S4) or a float64 solve (S4 with a
learned C~). During generation the parameters do not change, so it is built once. The cache
is keyed by the *values* of every parameter and buffer of the layer, compared with a stored
copy at each use: version counters alone miss ``p.data.copy_``, ``vector_to_parameters``
(``p.data = ...``) and in-place edits of buffers, which all leave ``p._version`` unchanged.

It is bypassed (the system is rebuilt, with autograd) while gradients are enabled, and while
``torch.compile``/``torch.export`` trace (a value comparison needs a host sync).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Optional, Tuple

import torch
from torch import nn

from .._checks import tracing

Tensor = torch.Tensor


class StepCache:
    """One cached value per layer, valid while its rate, dtype, device and tensors are unchanged."""

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._snapshot: Tuple[Tensor, ...] = ()
        self._value: Any = None

    @staticmethod
    def _tensors(module: nn.Module) -> Tuple[Tensor, ...]:
        return tuple(t for t in itertools.chain(module.parameters(), module.buffers()) if t is not None)

    def get(self, module: nn.Module, rate: float, build: Callable[[], Any]) -> Any:
        """``build()``'s result for ``module`` at ``rate``, from the cache when nothing changed."""
        if torch.is_grad_enabled() or tracing():
            return build()
        tensors = self._tensors(module)
        key = (rate, tuple((t.dtype, t.device, t.shape) for t in tensors))
        if self._key == key and all(torch.equal(s, t) for s, t in zip(self._snapshot, tensors)):
            return self._value
        value = build()
        self._key, self._value = key, value
        self._snapshot = tuple(t.detach().clone() for t in tensors)
        return value

    def clear(self) -> None:
        self._key, self._snapshot, self._value = None, (), None
