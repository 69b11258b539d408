"""Model selection: the validation split held out of the training split (``trainer.val_fraction``,
``trainer.val_split``) and the epoch whose weights ``best/`` keeps. The test split takes part in neither: it is never
used to choose (issue 18 item 1).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import torch

from .config import ConfigError
from .tasks import get_task

#: ``selection`` when there is no validation split.
SELECTION_LAST = "last epoch"


def select_epoch(history, selection: str) -> Dict[str, Any]:
    """The history record of the epoch in ``best/``: the epoch with the highest validation score,
    ties broken by the lower validation loss and then by the later epoch (on a small validation
    split many epochs tie on accuracy, and the first of them is often an early, under-trained
    one); or the last epoch (``selection == "last epoch"``); ``{}`` without history."""
    if not history:
        return {}
    if selection == SELECTION_LAST:
        return history[-1]

    def rank(h: Dict[str, Any]) -> Tuple[float, float, int]:
        loss = h.get("val_loss")
        return (h["val_acc"], -loss if loss is not None else 0.0, h.get("epoch", 0))

    scored = [h for h in history if h["val_acc"] is not None]
    return max(scored, key=rank) if scored else history[0]


def validation_split(data, fraction: float, seed: int, rule: str = "stratified") -> Tuple[list, list]:
    """``(fit, held)`` indices of the training split: ``fraction`` of it held out for validation, seeded by
    ``seed``.

    Classification is stratified: the members of each class are shuffled (one seeded permutation per
    class, in class order) and the first ``k_c`` of class ``c`` are held out, each class keeping at least
    one training example. ``rule`` (``trainer.val_split``) sets the ``k_c``: ``"stratified"``
    (:func:`stratified_counts`) holds out ``round(fraction x n)`` in total, shared out by largest
    remainder; ``"per-class-round"`` (:func:`per_class_round_counts`) is the rule before 2026-12-06,
    kept so that earlier runs are reproduced and resumed on the split they drew. Under both rules a
    class holding out the same number draws the same series. Other tasks: a plain seeded draw of
    ``round(fraction x n)`` examples (``rule`` does not apply)."""
    n = len(data.train)
    g = torch.Generator().manual_seed(seed)
    if n < 2:
        raise ConfigError(f"trainer.val_fraction: got {fraction!r}, but {data.name!r} has {n} training example; "
                          "allowed: 0 (best/ = the last epoch)")
    y = data.train.tensors[1]
    if get_task(data.task).stratify and y.dim() == 1:
        shuffled = [members[torch.randperm(len(members), generator=g)].tolist()
                    for members in (torch.nonzero(y == c).flatten() for c in torch.unique(y).tolist())]
        sizes = [len(idx) for idx in shuffled]
        if max(sizes) < 2:
            raise ConfigError(f"trainer.val_fraction: got {fraction!r}, but no class of {data.name!r} has two "
                              "training examples; allowed: 0 (best/ = the last epoch)")
        if rule == "per-class-round":
            counts = per_class_round_counts(fraction, sizes)
        else:
            counts = stratified_counts(fraction, sizes, g)
        held = [i for idx, k in zip(shuffled, counts) for i in idx[:k]]
        fit = [i for idx, k in zip(shuffled, counts) for i in idx[k:]]
        return sorted(fit), sorted(held)
    perm = torch.randperm(n, generator=g).tolist()
    k = min(max(1, int(round(fraction * n))), n - 1)
    return sorted(perm[k:]), sorted(perm[:k])


def stratified_counts(fraction: float, sizes: Sequence[int], generator: torch.Generator) -> List[int]:
    """How many examples each class holds out (``trainer.val_split = "stratified"``): ``k = round(fraction x
    n)`` in total (Python's rounding, as the unstratified draw; at least 1, at most ``n`` minus one per
    class), each class ``c`` of ``sizes[c]`` examples first ``floor(fraction x sizes[c])``, the other
    seats one each to the classes with the largest remainders (largest remainder apportionment). Equal
    remainders (10 classes of 5 at 0.1: each 0.5) are ordered by a permutation drawn from ``generator``,
    so that another seed holds out other classes; a class never gives its last example (its seat
    passes on down the order). Quotas are rounded to 9 decimals, so float noise (0.1 x 15 =
    1.5000000000000002) does not decide a tie."""
    n, n_classes = sum(sizes), len(sizes)
    k = min(max(1, int(round(fraction * n))), n - n_classes)
    quotas = [round(fraction * size, 9) for size in sizes]
    counts = [min(math.floor(q), size - 1) for q, size in zip(quotas, sizes)]
    tie = torch.randperm(n_classes, generator=generator).tolist()
    order = sorted(range(n_classes), key=lambda c: (counts[c] - quotas[c], tie[c]))
    left = k - sum(counts)
    while left > 0:          # ends: k <= n - n_classes, the examples the classes can give
        for c in order:
            if left > 0 and counts[c] < sizes[c] - 1:
                counts[c] += 1
                left -= 1
    return counts


def per_class_round_counts(fraction: float, sizes: Sequence[int]) -> List[int]:
    """How many examples each class holds out under ``trainer.val_split = "per-class-round"``, the rule
    before 2026-12-06: ``round(fraction x sizes[c])`` per class (Python's rounding, halves to even; at most
    ``sizes[c] - 1``), or, when that holds out nothing, one example of the first largest class. It can
    miss the fraction far (10 classes of 5 at 0.1: 1 held out, not 5); kept to reproduce earlier runs."""
    counts = [min(int(round(fraction * size)), size - 1) for size in sizes]
    if not any(counts):
        counts[sizes.index(max(sizes))] = 1
    return counts
