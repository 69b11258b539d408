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

The key holds the layer's parameters and buffers (and the rate) only. A layer of your own whose system also
reads plain attributes (a float set after construction) must hold them as buffers, or call
``layer._step_cache.clear()`` after changing them: the cache cannot see them.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, NamedTuple, Optional, Tuple

import torch
from torch import nn

from .._checks import tracing

Tensor = torch.Tensor

#: Devices on which the cache compares values (see the module docstring); elsewhere it compares versions.
VALUE_KEYED = ("cpu",)


class _Entry(NamedTuple):
    """What one build left: published as one object, so a reader sees all of it or none of it."""

    key: tuple
    snapshot: Tuple[Tensor, ...]       # value copies (value-keyed) or the tensors themselves
    value: Any
    views: Optional[Tuple[Any, ...]]   # value-keyed on CPU: numpy views of the tensors
    raw: Optional[Tuple[bytes, ...]]   # and the values they held at build time


class StepCache:
    """One cached value per layer, valid while its rate, dtype, device and tensors are unchanged.

    Thread-safe for readers: a build publishes its key, snapshot and value in one attribute assignment, so a
    thread stepping the same layer (another generation stream) sees either the previous entry or the new one,
    never a new key beside the previous value (two threads may both build; each gets its own result)."""

    def __init__(self) -> None:
        self._entry: Optional[_Entry] = None

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

    @staticmethod
    def _valid(e: _Entry, key: tuple, tensors: Tuple[Tensor, ...], by_value: bool) -> bool:
        if e.key != key or len(e.snapshot) != len(tensors):
            return False
        if e.views is not None and e.raw is not None:
            return all(v.tobytes() == r for v, r in zip(e.views, e.raw))        # bitwise equal values
        if by_value:
            return all(torch.equal(s, t) for s, t in zip(e.snapshot, tensors))
        return all(s is t for s, t in zip(e.snapshot, tensors))

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
        e = self._entry                                   # read once: another thread may publish meanwhile
        if e is not None and self._valid(e, key, tensors, by_value):
            return e.value
        value = build()
        # the tensors themselves when version-keyed: held, so that their identities stay unique
        snapshot = tuple(t.detach().clone() if by_value else t for t in tensors)
        cpu = by_value and all(t.device.type == "cpu" for t in tensors)
        views = self._arrays(tensors) if cpu else None
        raw = None if views is None else tuple(v.tobytes() for v in views)
        self._entry = _Entry(key, snapshot, value, views, raw)
        return value

    def clear(self) -> None:
        self._entry = None
