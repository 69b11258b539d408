r"""Seeded synthetic memory tasks, generated on the fly (nothing is stored).

Each ``make_*`` function returns raw numpy arrays (for tests and custom training loops); each
``load_*`` function wraps them in a :class:`SequenceData` with independent train/test draws
(``seed`` -> two child seeds). Token inputs use :class:`~statespaces.data.base.TokenDataset`:
items are one-hot vectors with token 0 ("blank") encoded as the zero vector, so
``d_input = vocab_size - 1``.

Tasks (``target`` picks the form; the default is the classification form that ``statespaces
train`` can fit):

* **Copying** (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016; thesis §4.4 / HiPPO):
  ``n_tokens`` symbols from ``1..n_symbols``, then ``delay - 1`` blanks, a delimiter (step
  ``n_tokens + delay - 1``) and ``n_tokens`` more blanks; total length ``L = 2 * n_tokens + delay``.
  ``target="sequence"`` (``task="seq2seq"``): ``y`` (n, n_tokens) int64 in ``[0, n_symbols)``
  (symbol - 1) that a model must emit at the last ``n_tokens`` steps (steps ``L - n_tokens ..
  L - 1``). ``target="token"`` (classification): ``y`` (n,) = symbol ``recall_index`` of the
  memorized block (default the first one, i.e. remember one symbol across ``L - 1`` steps).
* **Adding problem** (Hochreiter & Schmidhuber 1997; Le et al. 2015): ``x`` (n, L, 2) float32:
  channel 0 uniform in [0, 1], channel 1 a marker that is 1 at exactly two steps (one in each half).
  ``target="regression"`` (``task="regression"``): ``y`` (n,) float32 = sum of the two marked
  values (in [0, 2]). ``target="class"`` (classification): that sum quantized to ``n_bins``
  equal-width bins of [0, 2]: ``y = min(floor(sum * n_bins / 2), n_bins - 1)``.
* **Selective copying** (Gu & Dao 2023, Mamba §3.1): ``n_tokens`` symbols placed at random,
  increasing positions of a body of ``length`` blanks, then ``n_tokens`` delimiter steps
  (total ``L = length + n_tokens``). ``target="sequence"``: ``y`` (n, n_tokens) = the symbols in
  order (symbol - 1), to emit at the last ``n_tokens`` steps. ``target="token"``: ``y`` (n,) =
  the ``recall_index``-th of them.
* **Associative recall** (Ba et al. 2016; H3 / Zoology): ``n_pairs`` (key, value) token pairs
  with distinct keys, blanks up to ``length - 1`` steps, then one query key at the last step
  (a key of the sequence). Classification: ``y`` (n,) = index (0..n_values-1) of the value that
  followed the query key. Keys are tokens ``1..n_keys``, values ``n_keys+1..n_keys+n_values``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .base import SequenceData, TokenDataset, check_count, compact_ids, split_rngs

Array = np.ndarray


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------ copying


def make_copying(n: int, n_tokens: int = 10, delay: int = 100, n_symbols: int = 8,
                 seed=0) -> Dict[str, Any]:
    """Copying task. Returns ``ids`` (n, 2*n_tokens + delay) int64 with 0 = blank, symbols
    ``1..n_symbols``, delimiter ``n_symbols + 1`` (vocab ``n_symbols + 2``), ``targets``
    (n, n_tokens) int64 = symbols - 1."""
    n, n_tokens = check_count("n", n), check_count("n_tokens", n_tokens)
    n_symbols = check_count("n_symbols", n_symbols, 2)
    delay = check_count("delay", delay, 1)
    rng = _rng(seed)
    L = 2 * n_tokens + delay
    ids = np.zeros((n, L), dtype=np.int64)
    sym = rng.integers(1, n_symbols + 1, size=(n, n_tokens))
    ids[:, :n_tokens] = sym
    ids[:, n_tokens + delay - 1] = n_symbols + 1  # delimiter: "start writing now"
    return {"ids": ids, "targets": sym - 1, "vocab_size": n_symbols + 2}


def load_copying(n_train: int = 2000, n_test: int = 500, n_tokens: int = 10, delay: int = 100, n_symbols: int = 8,
                 target: str = "token", recall_index: int = 0, seed: int = 0) -> SequenceData:
    """:func:`make_copying` as ``SequenceData`` (see the module docstring for ``target``)."""
    return _copy_task("copying", lambda n, rng: make_copying(n, n_tokens, delay, n_symbols, rng), n_train, n_test,
                      n_tokens, n_symbols, 2 * n_tokens + delay, target, recall_index, seed, {"delay": delay})


def _copy_task(name: str, make, n_train: int, n_test: int, n_tokens: int, n_symbols: int, length: int, target: str,
               recall_index: int, seed: int, info: dict) -> SequenceData:
    """Train/test splits of a copying-style task from ``make(n, rng)``; the target is one recalled
    token (classification) or all of them (seq2seq)."""
    if target not in ("token", "sequence"):
        raise ValueError(f"target must be 'token' or 'sequence', got {target!r}")
    if not 0 <= recall_index < n_tokens:
        raise ValueError(f"recall_index must be in [0, n_tokens={n_tokens}), got {recall_index}")
    n_train, n_test = check_count("n_train", n_train), check_count("n_test", n_test)
    parts = []
    for n, rng in zip((n_train, n_test), split_rngs(seed)):
        d = make(n, rng)
        y = d["targets"] if target == "sequence" else d["targets"][:, recall_index]
        parts.append(TokenDataset(compact_ids(d["ids"], d["vocab_size"]), torch.from_numpy(np.ascontiguousarray(y)),
                                  vocab_size=d["vocab_size"]))
    return SequenceData(
        train=parts[0], test=parts[1], d_input=n_symbols + 1, n_classes=n_symbols, length=length,
        name=name, classes=[str(k + 1) for k in range(n_symbols)],
        task="seq2seq" if target == "sequence" else "classification",
        info={"n_tokens": n_tokens, **info, "target": target, "recall_index": recall_index, "seed": seed},
    )


# ------------------------------------------------------------------------------------------- adding


def make_adding(n: int, length: int = 200, seed=0) -> Dict[str, Array]:
    """Adding problem. Returns ``x`` (n, length, 2) float32 and ``targets`` (n,) float32 (the sum)."""
    n, length = check_count("n", n), check_count("length", length, 2)
    rng = _rng(seed)
    values = rng.random((n, length), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    marks = np.zeros((n, length), dtype=np.float32)
    rows = np.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return {"x": np.stack([values, marks], axis=-1), "targets": targets.astype(np.float32)}


def adding_classes(sums: Array, n_bins: int) -> Array:
    """Quantize sums in [0, 2] to ``n_bins`` equal-width classes."""
    return np.minimum(np.floor(np.asarray(sums, dtype=np.float64) * n_bins / 2.0), n_bins - 1).astype(np.int64)


def load_adding(n_train: int = 2000, n_test: int = 500, length: int = 200, target: str = "class", n_bins: int = 10,
                seed: int = 0) -> SequenceData:
    """:func:`make_adding` as ``SequenceData``; ``target="class"`` (``n_bins`` classes) or ``"regression"``."""
    if target not in ("class", "regression"):
        raise ValueError(f"target must be 'class' or 'regression', got {target!r}")
    n_bins = check_count("n_bins", n_bins, 2)
    n_train, n_test = check_count("n_train", n_train), check_count("n_test", n_test)
    parts = []
    for n, rng in zip((n_train, n_test), split_rngs(seed)):
        d = make_adding(n, length, rng)
        y = adding_classes(d["targets"], n_bins) if target == "class" else d["targets"]
        parts.append(TensorDataset(torch.from_numpy(d["x"]), torch.from_numpy(y)))
    edges = np.linspace(0, 2, n_bins + 1)
    return SequenceData(
        train=parts[0], test=parts[1], d_input=2, n_classes=n_bins if target == "class" else 1, length=length,
        name="adding",
        classes=[f"[{a:.2f},{b:.2f})" for a, b in zip(edges[:-1], edges[1:])] if target == "class" else None,
        task="classification" if target == "class" else "regression",
        info={"length": length, "target": target, "n_bins": n_bins, "seed": seed},
    )


# -------------------------------------------------------------------------------- selective copying


def make_selective_copying(n: int, length: int = 200, n_tokens: int = 10, n_symbols: int = 8,
                           seed=0) -> Dict[str, Any]:
    """Selective copying. Returns ``ids`` (n, length + n_tokens) int64 (0 blank, symbols
    ``1..n_symbols``, delimiter ``n_symbols + 1``), ``positions`` (n, n_tokens) where the symbols
    sit, and ``targets`` (n, n_tokens) = symbols - 1 in order of position."""
    n, length, n_tokens = check_count("n", n), check_count("length", length), check_count("n_tokens", n_tokens)
    n_symbols = check_count("n_symbols", n_symbols, 2)
    if n_tokens > length:
        raise ValueError(f"n_tokens={n_tokens} does not fit in length={length}")
    rng = _rng(seed)
    # random distinct positions per row: argsort of uniform keys, first n_tokens, sorted
    positions = np.sort(np.argsort(rng.random((n, length)), axis=1)[:, :n_tokens], axis=1)
    sym = rng.integers(1, n_symbols + 1, size=(n, n_tokens))
    ids = np.zeros((n, length + n_tokens), dtype=np.int64)
    np.put_along_axis(ids, positions, sym, axis=1)
    ids[:, length:] = n_symbols + 1
    return {"ids": ids, "positions": positions, "targets": sym - 1, "vocab_size": n_symbols + 2}


def load_selective_copying(n_train: int = 2000, n_test: int = 500, length: int = 200, n_tokens: int = 10,
                           n_symbols: int = 8, target: str = "token", recall_index: int = 0,
                           seed: int = 0) -> SequenceData:
    """:func:`make_selective_copying` as ``SequenceData`` (see the module docstring for ``target``)."""
    return _copy_task("selective_copying", lambda n, rng: make_selective_copying(n, length, n_tokens, n_symbols, rng),
                      n_train, n_test, n_tokens, n_symbols, length + n_tokens, target, recall_index, seed,
                      {"length": length})


# ------------------------------------------------------------------------------- associative recall


def make_associative_recall(n: int, n_pairs: int = 8, n_keys: int = 16, n_values: int = 16,
                            length: Optional[int] = None, seed=0) -> Dict[str, Any]:
    """Associative recall. Returns ``ids`` (n, L) int64 with L = ``length`` or ``2 * n_pairs + 1``
    (pairs first, blanks, the query key last), ``targets`` (n,) = value index in ``[0, n_values)``,
    and ``vocab_size = 1 + n_keys + n_values``."""
    n, n_pairs = check_count("n", n), check_count("n_pairs", n_pairs)
    n_keys, n_values = check_count("n_keys", n_keys, 1), check_count("n_values", n_values, 2)
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs={n_pairs} distinct keys need n_keys >= n_pairs, got n_keys={n_keys}")
    L = 2 * n_pairs + 1 if length is None else check_count("length", length, 2 * n_pairs + 1)
    rng = _rng(seed)
    keys = np.argsort(rng.random((n, n_keys)), axis=1)[:, :n_pairs] + 1           # distinct keys 1..n_keys
    values = rng.integers(0, n_values, size=(n, n_pairs))                           # value indices
    ids = np.zeros((n, L), dtype=np.int64)
    ids[:, 0:2 * n_pairs:2] = keys
    ids[:, 1:2 * n_pairs:2] = values + n_keys + 1
    which = rng.integers(0, n_pairs, size=n)
    rows = np.arange(n)
    ids[:, -1] = keys[rows, which]
    return {"ids": ids, "targets": values[rows, which].astype(np.int64), "vocab_size": 1 + n_keys + n_values}


def load_associative_recall(n_train: int = 2000, n_test: int = 500, n_pairs: int = 8, n_keys: int = 16,
                            n_values: int = 16, length: Optional[int] = None, seed: int = 0) -> SequenceData:
    """:func:`make_associative_recall` as ``SequenceData`` (classification over the values)."""
    n_train, n_test = check_count("n_train", n_train), check_count("n_test", n_test)
    parts = []
    for n, rng in zip((n_train, n_test), split_rngs(seed)):
        d = make_associative_recall(n, n_pairs, n_keys, n_values, length, rng)
        parts.append(TokenDataset(compact_ids(d["ids"], d["vocab_size"]), torch.from_numpy(d["targets"]),
                                  vocab_size=d["vocab_size"]))
    L = parts[0].tensors[0].shape[1]
    return SequenceData(
        train=parts[0], test=parts[1], d_input=n_keys + n_values, n_classes=n_values, length=L,
        name="associative_recall", classes=[f"v{k}" for k in range(n_values)],
        info={"n_pairs": n_pairs, "n_keys": n_keys, "n_values": n_values, "length": L, "seed": seed},
    )
