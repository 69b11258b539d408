"""The discretized step system of a layer, cached for generation and never stale (thesis §2.3.2).

A recurrent step needs the discrete system (``dA``, ``dB``, ...), whose construction costs
transcendental functions (S4D), a small Woodbury inverse (S4) or a float64 solve (S4 with a
learned C~). During generation the parameters do not change, so it is built once. The key:

* CPU (:data:`VALUE_KEYED`): the *values* of every parameter and buffer of the layer, compared with a
  stored copy at each use (exact for every kind of edit; no sync to pay on CPU): version counters alone
  miss edits through ``.data`` (``p.data.copy_``, ``b.data.mul_``), which leave ``p._version`` unchanged.
* CUDA and other devices: each tensor's identity, storage pointer and version counter (issue 17 item 2:
  a value comparison would be a host sync per ``step``). In-place updates (optimizer steps,
  ``load_state_dict``, ``with torch.no_grad(): p.add_(...)``) bump the version; a new tensor
  (``p.data = ...``, ``vector_to_parameters``, ``load_state_dict(assign=True)``) changes the pointer or
  the identity. Edits through ``.data`` in place are not seen: call ``layer._step_cache.clear()`` after
  them, or use ``layer.stepper`` (built once, from the values of the moment).

It is bypassed (the system is rebuilt, with autograd) while gradients are enabled, and while
``torch.compile``/``torch.export`` trace.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Optional, Tuple

import torch
from torch import nn

from .._checks import tracing

Tensor = torch.Tensor

#: Devices on which the cache compares values (see the module docstring); elsewhere it compares versions.
VALUE_KEYED = ("cpu",)


class StepCache:
    """One cached value per layer, valid while its rate, dtype, device and tensors are unchanged."""

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._snapshot: Tuple[Tensor, ...] = ()          # value copies (value-keyed) or the tensors themselves
        self._value: Any = None
        self._views: Optional[Tuple[Any, ...]] = None   # value-keyed on CPU: numpy views of the tensors
        self._raw: Optional[Tuple[bytes, ...]] = None    # and the values they held at build time

    def __getstate__(self) -> dict:
        # pickled (torch.save of a whole module, deepcopy) empty: the cached system holds views of the parameters
        # under other dtypes (S4's C as complex), which torch.save refuses to store beside the parameters
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]

    @staticmethod
    def _tensors(module: nn.Module) -> Tuple[Tensor, ...]:
        if not module._modules:                          # a leaf layer: its own dicts (parameters() walks a generator)
            return tuple(t for t in itertools.chain(module._parameters.values(), module._buffers.values())
                         if t is not None)
        return tuple(t for t in itertools.chain(module.parameters(), module.buffers()) if t is not None)

    @staticmethod
    def _arrays(tensors: Tuple[Tensor, ...]) -> Optional[Tuple[Any, ...]]:
        """NumPy views of the memory of CPU tensors (kept with the snapshot: ``view.tobytes()`` then reads
        the current values with one memcpy, and ``bytes ==`` compares them by memcmp, several times cheaper
        per step than ``torch.equal``), or None for a dtype or layout numpy cannot view (bfloat16, conjugate
        views, other devices)."""
        try:
            return tuple(t.detach().numpy() for t in tensors)
        except (TypeError, RuntimeError):
            return None

    @staticmethod
    def _by_value(tensors: Tuple[Tensor, ...]) -> bool:
        # inference tensors keep no version counter: compare their values
        return any(t.device.type in VALUE_KEYED or t.is_inference() for t in tensors)

    def get(self, module: nn.Module, rate: float, build: Callable[[], Any]) -> Any:
        """``build()``'s result for ``module`` at ``rate``, from the cache when nothing changed."""
        if torch.is_grad_enabled() or tracing():
            return build()
        tensors = self._tensors(module)
        by_value = self._by_value(tensors)
        key: tuple
        if not by_value:                                  # no host sync: metadata only
            key = (rate, False, tuple((t.dtype, t.device, t.shape, t.data_ptr(), t._version) for t in tensors))
        else:                                             # and where the values live (the arrays below view it)
            key = (rate, True, tuple((t.dtype, t.device, t.shape, t.data_ptr(), t.stride()) for t in tensors))
        if self._key == key and len(self._snapshot) == len(tensors):
            if self._views is not None and self._raw is not None:
                if all(v.tobytes() == r for v, r in zip(self._views, self._raw)):   # bitwise equal values
                    return self._value
            elif by_value and all(torch.equal(s, t) for s, t in zip(self._snapshot, tensors)):
                return self._value
            if not by_value and all(s is t for s, t in zip(self._snapshot, tensors)):
                return self._value
        value = build()
        self._key, self._value = key, value
        # the tensors themselves when version-keyed: held, so that their identities stay unique
        self._snapshot = tuple(t.detach().clone() if by_value else t for t in tensors)
        cpu = by_value and all(t.device.type == "cpu" for t in tensors)
        self._views = self._arrays(tensors) if cpu else None
        self._raw = None if self._views is None else tuple(v.tobytes() for v in self._views)
        return value

    def clear(self) -> None:
        self._key, self._snapshot, self._value, self._views, self._raw = None, (), None, None, None
