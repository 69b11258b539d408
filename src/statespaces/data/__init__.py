"""Offline datasets, one module per source (see docs/data.md).

``DATASETS[name](seed=..., **kwargs)`` returns a :class:`SequenceData`; the names are the values
of ``statespaces train --data.name NAME`` (extra arguments: ``--data.kwargs '{"n_train": 1000}'``).
Besides the listed keys, ``DATASETS`` understands ``ucr:<Problem>`` for any UCR/UEA problem found
by :mod:`statespaces.data.ucr`, a path to a time-series file (``<Name>_TRAIN.ts``/``.tsv``/
``.txt``, with or without the ``ucr:`` prefix) or a folder holding one (:func:`canonical_name`), and
``tokens:<file>.npz``, token sequences for a language model (:mod:`statespaces.data.tokens`).

Modules are imported lazily by the loaders, so importing this package stays cheap and an
optional source (Debian's Fashion-MNIST, aeon's .ts files, mnist1d) is only needed when used.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List

from .audio import mulaw_decode, mulaw_encode, synth_piano
from .base import SequenceData, TokenDataset, absolute_path
from .chorales import load_chorales, write_midi
from .digits import load_digits_sequences
from .tokens import load_tokens
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


def _exists(path: str) -> bool:
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError, RuntimeError):   # a name too long, a NUL byte, an unknown ~user
        return False


class _Registry(Dict[str, Loader]):
    """A dict of loaders that also answers ``ucr:<Problem>`` keys for any problem (checked on load)."""

    PREFIX = "ucr:"

    def _is_dynamic(self, key: object) -> bool:
        return isinstance(key, str) and key.startswith(self.PREFIX) and len(key) > len(self.PREFIX)

    @staticmethod
    def _is_tokens(key: object) -> bool:
        from .tokens import PREFIX

        return isinstance(key, str) and key.startswith(PREFIX) and len(key) > len(PREFIX)

    @staticmethod
    def _is_path(key: object) -> bool:
        return isinstance(key, str) and bool(key.strip()) and _exists(key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self._is_dynamic(key) or self._is_tokens(key) or self._is_path(key)

    def __missing__(self, key: str) -> Loader:
        if self._is_tokens(key):
            from .tokens import PREFIX, load_tokens

            return lambda **kw: load_tokens(key[len(PREFIX):], **kw)
        if self._is_dynamic(key):
            return _ucr(key[len(self.PREFIX):])
        if self._is_path(key) and Path(key).suffix == ".npz":
            from .tokens import load_tokens

            return lambda **kw: load_tokens(key, **kw)
        if self._is_path(key):
            return _ucr(key)
        raise KeyError(unknown_dataset(key))

    def get(self, key, default=None):
        return self[key] if key in self else default


DATASETS: Dict[str, Loader] = _Registry({
    "digits": lambda **kw: load_digits_sequences(permute=False, **kw),
    "pdigits": lambda **kw: load_digits_sequences(permute=True, **kw),
    "fashion_mnist": _fashion(permute=False, pool=1),
    "pfashion_mnist": _fashion(permute=True, pool=1),
    "fashion_mnist14": _fashion(permute=False, pool=2),
    "pfashion_mnist14": _fashion(permute=True, pool=2),
    "mnist1d": _lazy("mnist1d", "load_mnist1d"),
    "chorales": _lazy("chorales", "load_chorales_lm"),
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


def accepted_forms() -> str:
    """The accepted spellings of a dataset (for error messages)."""
    from .ucr import PATH_FORMS

    return (f"valid datasets: {', '.join(n for n in dataset_names() if not n.startswith('ucr:'))}; "
            "ucr:<Problem> (a UCR/UEA problem shipped with aeon or sktime, or under $STATESPACES_UCR); "
            f"a path (with or without ucr:) to {PATH_FORMS}; or tokens:<file>.npz (token sequences for a language "
            "model, statespaces.data.tokens)")


def canonical_name(name: str) -> str:
    """The spelling of a dataset stored in configs and checkpoints.

    Registered names are kept; a path, with or without the ``ucr:`` prefix, becomes ``ucr:<absolute path>``
    (:func:`~statespaces.data.base.absolute_path`: a run resumed or evaluated from another working directory reads
    the same files, and a symbolic link stays a name the user can re-point). ``ucr:<Problem>`` stays as it is only
    when it names data shipped with aeon or sktime; a problem found in ``$STATESPACES_UCR`` or in the working folder
    is stored as the absolute path of its train file (:func:`statespaces.data.ucr.stored_reference`). Raises
    ``FileNotFoundError`` for a path that does not exist and ``ValueError`` for a name that is
    neither; both name the accepted forms.
    """
    if name.startswith(_Registry.PREFIX):
        return _Registry.PREFIX + _ucr_reference(name[len(_Registry.PREFIX):], name)
    if _Registry._is_tokens(name):
        from .tokens import PREFIX

        body = name[len(PREFIX):]
        if not _exists(body):
            raise FileNotFoundError(f"data.name: no file at {body}; {accepted_forms()}")
        return PREFIX + absolute_path(body)
    if dict.__contains__(DATASETS, name):
        return name
    if not name.strip():
        raise ValueError(f"data.name: got {name!r}; {accepted_forms()}")
    if _exists(name) and Path(name).suffix == ".npz":    # token arrays (a language model's data), named without tokens:
        from .tokens import PREFIX

        return PREFIX + absolute_path(name)
    if _exists(name):
        return _Registry.PREFIX + absolute_path(name)
    from .ucr import looks_like_path

    if looks_like_path(name):
        raise FileNotFoundError(_missing_path(name))
    raise ValueError(unknown_dataset(name))


def unknown_dataset(name: str) -> str:
    """The message for a name that is no dataset: a UCR/UEA problem of that name (any case) suggested first."""
    from .ucr import _lookup, available_problems

    found = _lookup(name, available_problems())
    hint = f"did you mean ucr:{found[0]} (the UCR/UEA problem)? " if found is not None else ""
    return f"unknown dataset {name!r}; {hint}{accepted_forms()}"


def _missing_path(body: str) -> str:
    """``data.name: no file or folder at <body>``, saying where a relative path was looked for."""
    where = "" if Path(body).expanduser().is_absolute() else f" (relative to the working folder {Path.cwd()})"
    return f"data.name: no file or folder at {body}{where}; {accepted_forms()}"


def _ucr_reference(body: str, name: str) -> str:
    """The stored form of ``ucr:<body>`` without the prefix: a path made absolute, a problem name as
    :func:`~statespaces.data.ucr.stored_reference` says (``name``: the whole spelling, for errors)."""
    from .ucr import looks_like_path, stored_reference

    if not body.strip():
        raise ValueError(f"data.name: got {name!r}; {accepted_forms()}")
    if looks_like_path(body):
        if not _exists(body):
            raise FileNotFoundError(_missing_path(body))
        return absolute_path(body)
    return stored_reference(body)


def is_time_series(name: str) -> bool:
    """Whether ``name`` (canonical or not) refers to a UCR/UEA problem or a time-series file."""
    return name.startswith(_Registry.PREFIX) or (not dict.__contains__(DATASETS, name) and _Registry._is_path(name))


def get_dataset(name: str, **kwargs) -> SequenceData:
    """``DATASETS[name](**kwargs)`` with a ``ValueError`` naming the accepted forms for an unknown one."""
    if name not in DATASETS:
        canonical_name(name)           # a path that does not exist: FileNotFoundError naming it
        raise ValueError(unknown_dataset(name))
    try:
        return DATASETS[name](**kwargs)
    except TypeError as e:        # a keyword the loader does not take: name the dataset, not the inner function
        fixed = re.search(r"got multiple values for (?:keyword )?argument '(\w+)'", str(e))
        if fixed is not None:
            key = fixed.group(1)
            hint = ("; the seed is trainer.seed" if key == "seed" else
                    "; data.name chooses the order: digits (unpermuted) or pdigits (permuted)" if key == "permute"
                    else "")
            raise TypeError(f"dataset {name!r} sets {key!r} itself, so data.kwargs.{key} cannot change it{hint}") \
                from None
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if bad is None:
            raise
        raise TypeError(f"dataset {name!r} takes no setting {bad.group(1)!r} (a keyword, or data.kwargs."
                        f"{bad.group(1)} on the command line); {_settings_of(name)}") from None


def _settings_of(name: str) -> str:
    """The settings a dataset's loader takes, for an error message (those of ``load_ucr`` for time-series files and
    problems, whose normalisation is ``data.normalize``); docs/data.md for the others."""
    if not is_time_series(name):
        return "its settings are listed in docs/data.md"
    import inspect

    from .ucr import load_ucr

    skip = ("name_or_path", "normalize", "seed")
    keys = [k for k in inspect.signature(load_ucr).parameters if k not in skip]
    return f"its settings: {', '.join(keys)} (normalisation: data.normalize; docs/data.md)"


__all__ = [
    "SequenceData", "TokenDataset", "load_digits_sequences", "DATASETS", "get_dataset", "dataset_names",
    "canonical_name", "accepted_forms", "is_time_series",
    "load_chorales", "write_midi", "mulaw_encode", "mulaw_decode", "synth_piano", "load_tokens",
]
