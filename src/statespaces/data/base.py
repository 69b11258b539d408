r"""Containers shared by every dataset module.

* :class:`SequenceData` -- a train/test split of sequences. Each split is a ``TensorDataset`` whose
  items are ``(x, y)`` or ``(x, y, length)``:

  - ``x``: (L, d_input) float32 (the batch is (B, L, d_input)),
  - ``y``: int64 class index in ``[0, n_classes)`` for ``task="classification"``; other tasks
    (``"regression"``, ``"seq2seq"``) document their target shape where they are made,
  - ``length`` (optional third tensor, int64): number of valid steps of a right-padded example,
    ready for ``SequenceClassifier.forward(x, lengths)`` (padding-aware pooling). The trainer
    unpacks it automatically (batches ``(x, y[, lengths])``).

* :class:`TokenDataset` -- a ``TensorDataset`` that stores integer token ids (compact, uint8/int16)
  and hands out one-hot float vectors per item, so long token tasks (ListOps at L = 2000) do not
  hold a dense (n, L, vocab) float tensor in memory. Token id 0 is the blank / padding symbol and
  is encoded as the all-zero vector; ids ``1..vocab_size-1`` map to channels ``0..vocab_size-2``,
  so ``d_input = vocab_size - 1``. ``dataset.tensors[0]`` holds the ids (n, L).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

Tensor = torch.Tensor

TASKS = ("classification", "regression", "seq2seq", "lm")


class TokenDataset(TensorDataset):
    """``TensorDataset`` of ``(ids (n, L), y, [lengths])`` whose items come one-hot encoded.

    ``dataset[i]`` returns ``(x (L, vocab_size - 1) float32, y[i], [lengths[i]])``; id 0 (blank /
    padding) is the zero vector. ``tensors`` keeps the raw ids for models with an embedding.
    """

    def __init__(self, ids: Tensor, *tensors: Tensor, vocab_size: int) -> None:
        if ids.dim() != 2:
            raise ValueError(f"token ids must have shape (n, L), got {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.is_complex():
            raise TypeError(f"token ids must be an integer tensor, got {ids.dtype}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (blank + one symbol), got {vocab_size}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(f"token ids must lie in [0, {vocab_size}), found [{int(ids.min())}, {int(ids.max())}]")
        super().__init__(ids, *tensors)
        self.vocab_size = int(vocab_size)

    @property
    def d_input(self) -> int:
        return self.vocab_size - 1

    def one_hot(self, ids: Tensor) -> Tensor:
        """ids (..., L) -> float32 (..., L, vocab_size - 1), blank/padding (id 0) -> zeros."""
        x = torch.nn.functional.one_hot(ids.long(), self.vocab_size)[..., 1:]
        return x.to(torch.float32)

    def __getitem__(self, index):
        first, *rest = (t[index] for t in self.tensors)
        return (self.one_hot(first), *rest)


def compact_ids(ids: np.ndarray, vocab_size: int) -> Tensor:
    """Store token ids in the smallest integer dtype that holds ``vocab_size`` symbols."""
    dtype = np.uint8 if vocab_size <= 256 else np.int16 if vocab_size <= 32768 else np.int64
    return torch.from_numpy(np.ascontiguousarray(ids, dtype=dtype))


@dataclass
class SequenceData:
    """A train/test split of sequences ``x`` (n, L, d_input) float32 and labels ``y`` (n,) int64.

    Optional fields (defaults keep the original five-field constructor working):

    * ``classes``: names of the classes, index ``k`` <-> label ``k`` (e.g. the UCR label strings).
    * ``task``: ``"classification"`` (default; ``y`` int64 in ``[0, n_classes)``), ``"regression"``
      or ``"seq2seq"`` (see the generating function for the target shape).
    * ``info``: free-form facts about the source (file paths, generator parameters, ...).
    * ``test_length``: the test split's padded length when it differs from ``length`` (None: the
      same). ``length`` is the training grid; a UCR/UEA test file may hold series longer than every
      training series, and they are kept whole rather than cut or allowed to lengthen the training
      inputs (:func:`statespaces.data.ucr.load_ucr`).

    Per-example lengths of right-padded data, when present, are the third tensor of each split;
    :attr:`lengths_train` / :attr:`lengths_test` return them (or ``None``).

    Construction validates the splits: non-empty, same number of examples in every tensor,
    classification labels int64 in range, lengths in ``[1, L]`` (``L`` = the split's length).
    """

    train: TensorDataset
    test: TensorDataset
    d_input: int
    n_classes: int
    length: int
    name: str
    classes: Optional[List[str]] = None
    task: str = "classification"
    info: dict = field(default_factory=dict)
    test_length: Optional[int] = None
    #: The dataset's own validation split (e.g. the chorales' held-out pieces), or None. When set,
    #: ``statespaces train`` validates on it (with ``trainer.val_fraction > 0``) instead of drawing one out of
    #: ``train``: needed where training examples are windows of longer pieces, which a random split of the
    #: windows would put on both sides. Its padded length is its own.
    valid: Optional[TensorDataset] = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(TASKS)}")
        if self.classes is not None and len(self.classes) != self.n_classes:
            raise ValueError(f"{self.name}: {len(self.classes)} class names for n_classes={self.n_classes}")
        if self.test_length is not None:
            check_count(f"{self.name}: test_length", self.test_length)
        for split in ("train", "test", "valid"):
            if getattr(self, split) is not None:
                _validate_split(self, split, getattr(self, split))

    @property
    def lengths_train(self) -> Optional[Tensor]:
        return self.train.tensors[2] if len(self.train.tensors) > 2 else None

    @property
    def lengths_test(self) -> Optional[Tensor]:
        return self.test.tensors[2] if len(self.test.tensors) > 2 else None

    @property
    def has_lengths(self) -> bool:
        return self.lengths_train is not None

    def split_length(self, split: str) -> int:
        """Padded length of ``split`` (``"train"``, ``"test"`` or ``"valid"``): ``length``, or ``test_length``
        when set for the test split; the validation split's own."""
        if split == "valid" and self.valid is not None:
            return int(self.valid.tensors[0].shape[1])
        return self.test_length if split == "test" and self.test_length is not None else self.length


def _validate_split(data: SequenceData, split: str, ds: TensorDataset) -> None:
    where = f"dataset {data.name!r}, {split} split"
    tensors = getattr(ds, "tensors", None)
    if tensors is None or len(tensors) < 2:
        raise TypeError(f"{where}: expected a TensorDataset with (x, y[, lengths]), got {type(ds).__name__}")
    n = len(tensors[0])
    if n == 0:
        raise ValueError(f"{where} is empty; ask for at least one example (check n_train / n_test / the source files)")
    if any(len(t) != n for t in tensors):
        raise ValueError(f"{where}: tensors have different numbers of examples {[len(t) for t in tensors]}")
    x, y = tensors[0], tensors[1]
    L = data.split_length(split)
    if not isinstance(ds, TokenDataset):
        if x.dim() != 3 or x.shape[1] != L or x.shape[2] != data.d_input:
            raise ValueError(
                f"{where}: x must have shape (n, length={L}, d_input={data.d_input}), got {tuple(x.shape)}"
            )
    elif x.shape[1] != L or ds.d_input != data.d_input:
        raise ValueError(f"{where}: token ids {tuple(x.shape)} / d_input {ds.d_input} do not match the declared "
                         f"length={L}, d_input={data.d_input}")
    if data.task == "classification":
        if y.dtype != torch.int64 or y.dim() != 1:
            raise ValueError(f"{where}: classification labels must be an int64 vector (n,), "
                             f"got {y.dtype} {tuple(y.shape)}")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= data.n_classes:
            raise ValueError(f"{where}: labels must lie in [0, {data.n_classes}), found [{lo}, {hi}]")
    if len(tensors) > 2:
        lengths = tensors[2]
        if lengths.dtype != torch.int64 or lengths.dim() != 1:
            raise ValueError(f"{where}: lengths must be an int64 vector (n,), "
                             f"got {lengths.dtype} {tuple(lengths.shape)}")
        if int(lengths.min()) < 1 or int(lengths.max()) > L:
            raise ValueError(f"{where}: lengths must lie in [1, {L}], found "
                             f"[{int(lengths.min())}, {int(lengths.max())}]")


def split_rngs(seed: int, n: int = 2) -> Sequence[np.random.Generator]:
    """Independent generators (train, test, ...) derived from one seed."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def check_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def with_time_channel(data: SequenceData, scale: Optional[int] = None) -> SequenceData:
    """A copy of ``data`` with a time channel prepended to every series: ``x`` (n, L, d) becomes
    (n, L, d + 1) with channel 0 equal to ``t / (L - 1)`` at step ``t`` (0 for ``L = 1``), the same
    clock for every series of both splits, and 0 on padded steps (past the ``lengths`` tensor when
    present). This is the time input of the official LinOSS data pipeline (seed 001's
    experiments), a clock the layers can read instead of inferring position from the signal.

    ``L`` is ``data.length``, the training grid: the clock's scale never depends on the test split,
    whose steps past the training grid (``data.test_length``) read values above 1.

    Sampled at irregular times (``data.info["times"]``, e.g. a ``.ts`` file with ``@timeStamps true``:
    :func:`~statespaces.data.ucr.sample_times`, in units of the median training interval), the clock reads
    ``time / (L - 1)`` instead of ``t / (L - 1)``: the same clock for evenly spaced samples, the real times
    otherwise (``model.intervals`` turns them into the layers' steps).

    ``scale`` replaces ``L - 1`` (a checkpoint evaluated on other data keeps the clock it was trained with).

    Raises ``ValueError`` for token datasets (one-hot symbols) and non-float inputs."""
    import dataclasses

    L = data.length if scale is None else int(scale) + 1
    times = data.info.get("times") if isinstance(data.info.get("times"), dict) else None
    if times is not None and data.valid is not None:
        raise ValueError(f"data.time_channel: dataset {data.name!r} has sample times for its train and test splits "
                         "only, and a validation split of its own")
    clock_error, worst = 0.0, ["", -1]          # the largest interval error of the clock, and where (split, series)

    def one(ds: TensorDataset, split: str) -> TensorDataset:
        if isinstance(ds, TokenDataset):
            raise ValueError(f"data.time_channel: dataset {data.name!r} is made of tokens (one-hot symbols); "
                             "the time channel applies to real-valued series")
        x, *rest = ds.tensors
        if not x.is_floating_point():
            raise ValueError(f"data.time_channel: dataset {data.name!r} has {x.dtype} inputs, not real values")
        steps = torch.arange(x.shape[1], dtype=x.dtype)
        if times is not None:
            nonlocal clock_error
            t = (times[split] / max(L - 1, 1)).to(x.dtype)                   # 0 on padding already
            err, row = _clock_error(times[split], t, L, rest[1] if len(rest) > 1 else None)
            if err > clock_error:
                clock_error, worst[:] = err, [split, row]
        else:
            t = (steps / max(L - 1, 1)).expand(x.shape[0], -1).clone()      # (n, L)
            if len(rest) > 1:
                t = t * (steps[None, :] < rest[1][:, None]).to(x.dtype)
        return TensorDataset(torch.cat([t[..., None], x], dim=-1), *rest)

    train, test = one(data.train, "train"), one(data.test, "test")
    valid = None if data.valid is None else one(data.valid, "valid")
    info = dict(data.info, time_channel=True, clock_scale=max(L - 1, 1),
                **({"clock_error": clock_error, "clock_worst": tuple(worst)} if times is not None else {}))
    return dataclasses.replace(data, train=train, test=test, d_input=data.d_input + 1, info=info, valid=valid)


def _clock_error(times: Tensor, clock: Tensor, L: int, lengths: Optional[Tensor]) -> Tuple[float, int]:
    """The largest relative error of an interval between valid samples when the sample ``times`` (n, L) float64 are
    read back from their ``clock`` (``times / (L - 1)`` in the inputs' precision), ``inf`` if one collapses to 0, and
    the series (row) where. A float32 clock holds about 7 significant digits of a series' span."""
    back = clock.to(torch.float64) * max(L - 1, 1)
    d, d_back = torch.diff(times, dim=1), torch.diff(back, dim=1)
    # valid intervals: up to each series' length (a series' times rise from 0, its padding is 0)
    valid = times[:, 1:] > 0 if lengths is None else torch.arange(1, times.shape[1])[None, :] < lengths[:, None]
    if not bool(valid.any()):
        return 0.0, -1
    err = torch.where(valid, (d_back - d).abs() / torch.where(valid, d, torch.ones_like(d)), torch.zeros_like(d))
    err = torch.where(valid & (d_back <= 0), torch.full_like(d, math.inf), err)
    worst = int(err.amax(1).argmax())
    return float(err[worst].max()), worst


#: A channel is constant when its values span at most this many units of rounding of their size (the float64 rule
#: of :func:`statespaces.data.ucr.constant_rows`, the tensor's own precision in :func:`normalize_series`): ``std > 0``
#: is no such test, the std of a series of 0.1 is 2.8e-17 in float64 and about 1e-9 in float32, not 0.
CONSTANT_ULPS = 8


def absolute_path(path: "os.PathLike[str] | str") -> str:
    """``path`` as stored in configs and checkpoints: ``~`` expanded, made absolute against the working folder and
    ``..`` folded, symbolic links kept (a link is a name its user may re-point; the content digests stored beside
    it catch a change of content)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def normalize_series(data: SequenceData) -> SequenceData:
    """A copy of ``data`` whose every series is z-normalized on its own: per channel, over its valid
    steps (the ``lengths`` tensor when present); padded steps become 0, a constant channel 0.

    Raises ``ValueError`` for token datasets (one-hot symbols have no scale to remove)."""
    import dataclasses

    def one(ds: TensorDataset) -> TensorDataset:
        if isinstance(ds, TokenDataset):
            raise ValueError(f"data.normalize='series': dataset {data.name!r} is made of tokens (one-hot symbols); "
                             "series normalization applies to real-valued series")
        x, *rest = ds.tensors
        if not x.is_floating_point():
            raise ValueError(f"data.normalize='series': dataset {data.name!r} has {x.dtype} inputs, not real values")
        L = x.shape[1]
        if len(rest) > 1:
            valid = (torch.arange(L)[None, :] < rest[1][:, None]).to(x.dtype)[..., None]    # (n, L, 1)
        else:
            valid = torch.ones(x.shape[0], L, 1, dtype=x.dtype)
        n = valid.sum(1, keepdim=True)
        mean = (x * valid).sum(1, keepdim=True) / n
        var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / n
        std = var.sqrt()
        # constant up to rounding (CONSTANT_ULPS): a float32 series of 0.1 has std 1e-9; its z-scores would read 1
        hi = torch.where(valid > 0, x, x.new_tensor(-math.inf)).amax(1, keepdim=True)
        lo = torch.where(valid > 0, x, x.new_tensor(math.inf)).amin(1, keepdim=True)
        flat = (hi - lo <= CONSTANT_ULPS * torch.finfo(x.dtype).eps * torch.maximum(hi.abs(), lo.abs())) | ~(std > 0)
        z = torch.where(flat, 0.0, (x - mean) / torch.where(flat, torch.ones_like(std), std)) * valid
        return TensorDataset(z, *rest)

    info = dict(data.info, normalize="series")
    return dataclasses.replace(data, train=one(data.train), test=one(data.test), info=info,
                               valid=None if data.valid is None else one(data.valid))
