"""Offline datasets, one module per source (see docs/data.md).

``DATASETS[name](seed=..., **kwargs)`` returns a :class:`SequenceData`; the names are the values
of ``statespaces train --data.name NAME`` (extra arguments: ``--data.kwargs '{"n_train": 1000}'``).
Besides the listed keys, ``DATASETS`` understands ``ucr:<Problem>`` for any UCR/UEA problem found
by :mod:`statespaces.data.ucr` (or ``ucr:/path/to/Problem_TRAIN.ts``).

Modules are imported lazily by the loaders, so importing this package stays cheap and an
optional source (Debian's Fashion-MNIST, aeon's .ts files, mnist1d) is only needed when used.
"""
from __future__ import annotations

from typing import Callable, Dict, List

from .audio import mulaw_decode, mulaw_encode, synth_piano
from .base import SequenceData, TokenDataset
from .chorales import load_chorales, write_midi
from .digits import load_digits_sequences
from .ucr import FEATURED  # ucr imports neither aeon nor sktime

Loader = Callable[..., SequenceData]


def _fashion(**fixed) -> Loader:
    def load(**kw):
        from .fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(**{**fixed, **kw})
    return load


def _ucr(name: str) -> Loader:
    def load(**kw):
        from .ucr import load_ucr

        return load_ucr(name, **kw)
    return load


def _lazy(module: str, func: str, **fixed) -> Loader:
    def load(**kw):
        import importlib

        return getattr(importlib.import_module(f".{module}", __name__), func)(**{**fixed, **kw})
    return load


class _Registry(Dict[str, Loader]):
    """A dict of loaders that also answers ``ucr:<Problem>`` keys for any problem (checked on load)."""

    PREFIX = "ucr:"

    def _is_dynamic(self, key: object) -> bool:
        return isinstance(key, str) and key.startswith(self.PREFIX) and len(key) > len(self.PREFIX)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self._is_dynamic(key)

    def __missing__(self, key: str) -> Loader:
        if self._is_dynamic(key):
            return _ucr(key[len(self.PREFIX):])
        raise KeyError(f"unknown dataset {key!r}; valid datasets: {', '.join(sorted(self))}, or ucr:<Problem>")

    def get(self, key, default=None):  # type: ignore[override]
        return self[key] if key in self else default


DATASETS: Dict[str, Loader] = _Registry({
    "digits": lambda **kw: load_digits_sequences(permute=False, **kw),
    "pdigits": lambda **kw: load_digits_sequences(permute=True, **kw),
    "fashion_mnist": _fashion(permute=False, pool=1),
    "pfashion_mnist": _fashion(permute=True, pool=1),
    "fashion_mnist14": _fashion(permute=False, pool=2),
    "pfashion_mnist14": _fashion(permute=True, pool=2),
    "mnist1d": _lazy("mnist1d", "load_mnist1d"),
    "listops": _lazy("listops", "load_listops"),
    "pathfinder": _lazy("pathfinder", "load_pathfinder"),
    "copying": _lazy("synthetic", "load_copying"),
    "adding": _lazy("synthetic", "load_adding"),
    "selective_copying": _lazy("synthetic", "load_selective_copying"),
    "associative_recall": _lazy("synthetic", "load_associative_recall"),
})
for _name in FEATURED:
    DATASETS[f"ucr:{_name}"] = _ucr(_name)


def dataset_names() -> List[str]:
    """The registered names (``ucr:<Problem>`` works for unlisted problems too)."""
    return sorted(DATASETS)


def get_dataset(name: str, **kwargs) -> SequenceData:
    """``DATASETS[name](**kwargs)`` with a ``ValueError`` listing the valid names for an unknown one."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(dataset_names())}, "
                         "or ucr:<Problem> / ucr:<path to a _TRAIN.ts file>")
    return DATASETS[name](**kwargs)


__all__ = [
    "SequenceData", "TokenDataset", "load_digits_sequences", "DATASETS", "get_dataset", "dataset_names",
    "load_chorales", "write_midi", "mulaw_encode", "mulaw_decode", "synth_piano",
]
