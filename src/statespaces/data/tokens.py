r"""Your own token sequences for a language model: ``statespaces train --data.name tokens:PATH.npz``.

The file is a NumPy ``.npz`` (``np.savez``, no pickled objects: it is read with ``allow_pickle=False``) holding

* ``train``, ``test`` (required) and ``valid`` (optional): integer tokens ``(n, L)`` or ``(n, L, S)`` (S tokens
  per step, e.g. the voices of a chorale), right-padded with any value where sequences are shorter;
* ``train_lengths``, ``valid_lengths``, ``test_lengths`` (optional): each sequence's valid length ``(n,)``, at
  least 2 (one step to predict from, one to predict); absent: every sequence is the split's whole length;
* ``vocab_size`` (optional): V, the number of token values; absent: the largest token + 1 over every split.

For example::

    np.savez("melodies.npz", train=train_tokens, train_lengths=train_lengths, test=test_tokens,
             test_lengths=test_lengths, vocab_size=130)

Any other array is refused (a misspelt ``validation`` would otherwise be ignored in silence), and so are
``*_lengths`` without their split, tokens above 2^63 - 1, and a vocabulary over :data:`MAX_VOCAB` (an
embedding table of V x d_model weights: remap sparse ids to 0 .. V - 1 first, e.g. ``np.unique(tokens,
return_inverse=True)``). A ``.npz`` path given without the ``tokens:`` prefix is read as a token file too.

The splits are used as given (``valid``, when present, chooses ``best/``; without it, ``trainer.val_fraction`` holds
out whole training sequences). Training on random windows of long sequences is ``data.augment = {"window": W}``.
The model is an :class:`~statespaces.models.SSMLanguageModel` (``model.backbone`` flat or sashimi); ``statespaces
generate`` samples continuations of the test sequences as ``.npy`` tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .base import SequenceData, absolute_path

__all__ = ["load_tokens", "PREFIX", "MAX_VOCAB"]

#: The ``data.name`` prefix of a token file.
PREFIX = "tokens:"
#: The largest vocabulary a token file may declare or imply (2^24 ids; each is a row of the embedding table).
MAX_VOCAB = 2**24
_SPLITS = ("train", "valid", "test")
#: The arrays a token file may hold.
_ARRAYS = set(_SPLITS) | {f"{s}_lengths" for s in _SPLITS} | {"vocab_size"}


def _split(z, name: str, path: Path) -> Optional[Dict[str, np.ndarray]]:
    """``{"x": (n, L, S) int64, "lengths": (n,) int64}`` of split ``name``, checked; None when absent (valid)."""
    if name not in z.files:
        if name == "valid":
            return None
        raise ValueError(f"{path}: no array {name!r}; a token file holds train and test (and optionally valid), "
                         f"each (n, L) or (n, L, S) integers; found {sorted(z.files)}")
    x = _array(z, name, path)
    if not np.issubdtype(x.dtype, np.integer) or x.ndim not in (2, 3):
        raise ValueError(f"{path}: {name!r} must be integer tokens (n, L) or (n, L, S), got {x.dtype} {x.shape}")
    shape = x.shape
    if x.ndim == 2:
        x = x[..., None]
    n, L = x.shape[:2]
    if n == 0 or L < 2 or x.shape[2] == 0:
        raise ValueError(f"{path}: {name!r} has shape {shape}; it needs at least one sequence of at least "
                         "2 steps")
    if x.dtype == np.uint64 and x.size and int(x.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{path}: {name!r} holds tokens above 2^63 - 1 ({int(x.max())}); tokens are ids 0 .. V - 1")
    key = f"{name}_lengths"
    if key in z.files:
        lengths = _array(z, key, path)
        if not np.issubdtype(lengths.dtype, np.integer) or lengths.shape != (n,):
            raise ValueError(f"{path}: {key!r} must be {n} integers (one per sequence of {name!r}), got "
                             f"{lengths.dtype} {lengths.shape}")
        if lengths.min() < 2 or lengths.max() > L:
            raise ValueError(f"{path}: {key!r} must lie in [2, {L}] (a sequence predicts at least one step and is at "
                             f"most the array's length), found [{lengths.min()}, {lengths.max()}]")
    else:
        lengths = np.full(n, L)
    valid = np.arange(L)[None, :] < lengths[:, None]
    used = x[valid]
    if used.size and used.min() < 0:
        raise ValueError(f"{path}: {name!r} holds negative tokens ({used.min()}); tokens are ids 0 .. V - 1")
    # padding: token 0, so that every stored token is a valid id (the model never reads it)
    x = np.where(valid[..., None], x, 0)
    return {"x": x.astype(np.int64), "lengths": lengths.astype(np.int64)}


def _array(z, name: str, path: Path) -> np.ndarray:
    """``z[name]``, with an object array (which needs pickle) refused by name."""
    try:
        return z[name]
    except ValueError as e:
        raise ValueError(f"{path}: array {name!r} cannot be read without pickle ({' '.join(str(e).split())}); store "
                         "integer arrays (pad variable-length sequences and give their lengths in "
                         f"{name.removesuffix('_lengths')}_lengths)") from None


def load_tokens(path: Union[str, Path], seed: int = 0) -> SequenceData:
    """The token file ``path`` (module docstring) as a :class:`SequenceData` of task ``"lm"``.

    ``seed`` is accepted for the ``DATASETS`` interface and unused (the file's splits are used as given).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming what is wrong in it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.name {PREFIX}{path}: no such file; give a .npz of token arrays "
                                "(statespaces.data.tokens explains the layout)")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        z = None
    if not isinstance(z, np.lib.npyio.NpzFile):
        what = "a single .npy array" if isinstance(z, np.ndarray) else "not a NumPy .npz archive"
        raise ValueError(f"{path}: {what}; a token file is an .npz of named arrays: np.savez(path, train=..., "
                         "test=...) (statespaces.data.tokens)")
    with z:
        unknown = sorted(set(z.files) - _ARRAYS)
        orphans = [f"{s}_lengths" for s in _SPLITS if f"{s}_lengths" in z.files and s not in z.files]
        if unknown or orphans:
            raise ValueError(f"{path}: arrays {unknown + orphans} are not part of a token file"
                             + (" (lengths without their split)" if orphans else "")
                             + f"; allowed: {', '.join(sorted(_ARRAYS))}")
        splits = {name: _split(z, name, path) for name in _SPLITS}
        vocab = _array(z, "vocab_size", path) if "vocab_size" in z.files else None
    streams = {s["x"].shape[2] for s in splits.values() if s is not None}
    if len(streams) != 1:
        raise ValueError(f"{path}: the splits have different numbers of tokens per step {sorted(streams)}")
    top = max(int(s["x"].max()) for s in splits.values() if s is not None)
    if vocab is None:
        if top + 1 > MAX_VOCAB:
            raise ValueError(f"{path}: the largest token is {top}, which implies a vocabulary of {top + 1} (over "
                             f"{MAX_VOCAB}, one embedding row per id); remap the ids to 0 .. V - 1 first, e.g. "
                             "np.unique(tokens, return_inverse=True)")
        vocab_size = top + 1
    else:
        if vocab.shape != () or not np.issubdtype(vocab.dtype, np.integer) or int(vocab) < 2:
            raise ValueError(f"{path}: 'vocab_size' must be one integer >= 2, got {vocab!r}")
        vocab_size = int(vocab)
        if vocab_size > MAX_VOCAB:
            raise ValueError(f"{path}: vocab_size={vocab_size} is over {MAX_VOCAB} (one embedding row per id); remap "
                             "the ids to 0 .. V - 1 first, e.g. np.unique(tokens, return_inverse=True)")
        if top >= vocab_size:
            raise ValueError(f"{path}: a token {top} is not below vocab_size={vocab_size}")
    vocab_size = max(vocab_size, 2)

    def dataset(s: Dict[str, np.ndarray]) -> TensorDataset:
        tokens = torch.from_numpy(np.ascontiguousarray(s["x"]))
        return TensorDataset(tokens, tokens, torch.from_numpy(s["lengths"]))

    train, test = splits["train"], splits["test"]
    assert train is not None and test is not None
    valid = splits["valid"]
    info = {"file": absolute_path(path), "test_file": absolute_path(path), "vocab_size": vocab_size,
            "streams": streams.pop(),
            "sequences": {k: (0 if s is None else len(s["x"])) for k, s in splits.items()}}
    return SequenceData(dataset(train), dataset(test), d_input=info["streams"], n_classes=vocab_size,
                        length=train["x"].shape[1], name=f"{PREFIX}{path.name}", task="lm", info=info,
                        test_length=test["x"].shape[1], valid=None if valid is None else dataset(valid))
