r"""Length-bucketed batches for right-padded variable-length data, and repeated passes per epoch.

A variable-length split is stored right-padded to its longest series (``(x, y, lengths)``, see
:mod:`statespaces.data.base`). Drawn at random, most batches then hold one long series and
spend most of their FFT convolutions on padding (PickupGestureWiimoteZ: lengths 29..361).
:class:`BucketBatchSampler` groups series of similar length into a batch and
:func:`trim_collate` cuts each batch to its own longest series, so a batch of short series
costs what short series cost. The padded steps were masked anyway (``SequenceClassifier(x,
lengths)``: steps ``t >= lengths[b]`` influence nothing), so trimming changes no output, only
the work.

Bucketing, per epoch (a pass):

1. shuffle the indices (a generator seeded by ``(seed, epoch)``, so the order of an epoch is a
   function of the seed and the epoch number: a run resumed mid-epoch replays it exactly);
2. cut the shuffled order into windows of ``batch_size * window`` examples and sort each window
   by length (ties keep their shuffled order);
3. cut each sorted window into batches of ``batch_size`` (the last one of a window may be
   shorter) and shuffle the order of all batches.

``window`` trades randomness of the batch composition against padding: ``window = 1`` is a plain
shuffled batching, a window as large as the split sorts it whole.

``passes`` makes one epoch ``passes`` consecutive passes over the split (each drawn as above,
with its own seed), for the recipes that want at least a number of optimizer steps on a small
training split without evaluating after every pass (:func:`passes_for`).
"""
from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence

import torch
from torch.utils.data import Sampler
from torch.utils.data.dataloader import default_collate

Tensor = torch.Tensor


def passes_for(min_steps: int, epochs: int, batches_per_pass: int) -> int:
    """Passes over the training split per epoch so that ``epochs`` epochs take at least
    ``min_steps`` optimizer steps: ``max(1, ceil(min_steps / (epochs * batches_per_pass)))``.

    The rule of the ``ucr`` presets: a run is at least ``epochs`` epochs (each at least one pass)
    and at least ``min_steps`` steps, so a split of 36 series gets as many updates as one of 300.
    """
    for name, v, lo in (("min_steps", min_steps, 0), ("epochs", epochs, 1), ("batches_per_pass", batches_per_pass, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"passes_for: {name} must be an integer >= {lo}, got {v!r}")
    return max(1, math.ceil(min_steps / (epochs * batches_per_pass)))


class BucketBatchSampler(Sampler[List[int]]):
    """Batches of indices, series of similar length together (see the module docstring).

    Args:
        lengths: valid steps of each example (n,), or None for equal-length data (then the
            batches are plain shuffled batches).
        batch_size: examples per batch (the last batch of a window may be smaller).
        window: batches per sorting window (>= 1); 1 disables bucketing.
        passes: passes over the data per epoch (>= 1).
        shuffle: False keeps the index order and does no bucketing (evaluation).
        seed: seeds the draws, with the epoch set by :meth:`set_epoch`.

    ``len(sampler)`` is the number of batches of one epoch.
    """

    def __init__(self, lengths: Optional[Sequence[int]], batch_size: int, n: Optional[int] = None, window: int = 50,
                 passes: int = 1, shuffle: bool = True, seed: int = 0) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer (batches per sorting window), got {window!r}")
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
            raise ValueError(f"passes must be a positive integer, got {passes!r}")
        if lengths is None:
            if n is None or n < 1:
                raise ValueError(f"without lengths, n (the number of examples) must be a positive integer, got {n!r}")
            self.lengths = None
            self.n = int(n)
        else:
            self.lengths = torch.as_tensor(lengths).reshape(-1)
            if self.lengths.numel() == 0:
                raise ValueError("lengths is empty: give one length per example (or lengths=None and n)")
            if self.lengths.is_floating_point() or self.lengths.is_complex() or self.lengths.dtype == torch.bool:
                raise ValueError(f"lengths must be integers (valid steps per example), got {self.lengths.dtype}")
            if int(self.lengths.min()) < 1:
                bad = int(torch.argmin(self.lengths))
                raise ValueError(f"lengths must be >= 1 (valid steps per example); example {bad} has "
                                 f"{int(self.lengths[bad])}")
            if n is not None and n != self.lengths.numel():
                raise ValueError(f"n={n} but {self.lengths.numel()} lengths were given")
            self.n = self.lengths.numel()
        self.batch_size, self.window, self.passes, self.shuffle, self.seed = batch_size, window, passes, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order :meth:`__iter__` yields (like ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def _batches_of_pass(self, g: Optional[torch.Generator]) -> List[List[int]]:
        if g is None:
            seq = list(range(self.n))
            return [seq[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        order = torch.randperm(self.n, generator=g)
        span = self.batch_size * self.window
        batches: List[List[int]] = []
        for start in range(0, self.n, span):
            chunk = order[start:start + span]
            if self.lengths is not None and self.window > 1:
                chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            ids: List[int] = chunk.tolist()
            batches += [ids[i:i + self.batch_size] for i in range(0, len(ids), self.batch_size)]
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in perm]

    def __iter__(self) -> Iterator[List[int]]:
        for p in range(self.passes):
            g = None
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed + 1_000_003 * (self.epoch * self.passes + p))
            yield from self._batches_of_pass(g)

    def batches_per_pass(self) -> int:
        """Batches in one pass over the data."""
        return sum(math.ceil(min(self.batch_size * self.window, self.n - s) / self.batch_size)
                   for s in range(0, self.n, self.batch_size * self.window))

    def __len__(self) -> int:
        return self.passes * self.batches_per_pass()


def trim_collate(items) -> List[Tensor]:
    """Collate ``(x, y, length)`` items and cut ``x`` (B, L, C) to the batch's longest series
    (``x[:, :max(lengths)]``), and ``y`` too when it is aligned with ``x`` step by step (per-step targets of the
    same padded length, e.g. a language model's tokens); items without a length are collated unchanged."""
    batch = default_collate(items)
    if len(batch) >= 3 and isinstance(batch[2], Tensor) and batch[2].dim() == 1 and batch[0].dim() >= 2:
        L, longest = batch[0].shape[1], int(batch[2].max())
        batch[0] = batch[0][:, :longest]
        if isinstance(batch[1], Tensor) and batch[1].dim() >= 2 and batch[1].shape[1] == L:
            batch[1] = batch[1][:, :longest]
    return batch


def dataset_lengths(ds) -> Optional[Tensor]:
    """The ``lengths`` tensor (n,) of a ``TensorDataset`` ``(x, y, lengths)`` or of a ``Subset`` of
    one; None when the examples carry no length (equal-length data)."""
    from torch.utils.data import Subset

    base, idx = (ds.dataset, ds.indices) if isinstance(ds, Subset) else (ds, None)
    tensors = getattr(base, "tensors", None)
    if tensors is None or len(tensors) < 3:
        return None
    lengths = tensors[2]
    return lengths if idx is None else lengths[torch.as_tensor(idx, dtype=torch.long)]
