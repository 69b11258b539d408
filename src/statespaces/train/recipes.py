"""Ready-made :func:`~statespaces.train.engine.fit` setups for training in Python (no run folder).

:func:`adamw_cosine` is the optimizer of ``statespaces train`` (AdamW over
:func:`statespaces.param_groups`: SSM parameters with their own LR and no weight decay, thesis
§7.1) with linear warmup then cosine decay; :func:`fit_dataset` trains a model on a dataset with it
(shuffled by a seeded generator, so a seed gives the same batches); :func:`score` is the task's
score on a dataset; :class:`Batches` is a stream of freshly made batches (synthetic tasks that draw
new data every step). The reproduction claims and the experiments train through these.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..optim import param_groups
from .engine import Callback, FitState, evaluate, fit, warmup_cosine


def adamw_cosine(model: nn.Module, total_steps: int, lr: float, ssm_lr: float = 1e-3,
                 weight_decay: float = 0.0, warmup: int = 0) -> Tuple[torch.optim.Optimizer, Any]:
    """``(optimizer, scheduler)``: AdamW over ``param_groups(model, lr, weight_decay, ssm_lr)`` and a
    per-step ``LambdaLR`` with :func:`~statespaces.train.engine.warmup_cosine` over ``total_steps``."""
    opt = torch.optim.AdamW(param_groups(model, lr=lr, weight_decay=weight_decay, ssm_lr=ssm_lr))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(max(1, total_steps), warmup))


def fit_dataset(
    model: nn.Module,
    data: Dataset,
    epochs: int,
    lr: float,
    task: Any = "classification",
    ssm_lr: float = 1e-3,
    weight_decay: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    grad_clip: float = 0.0,
    callbacks: Sequence[Callback] = (),
) -> FitState:
    """Train ``model`` on ``data`` (items ``(x, y[, lengths])``) for ``epochs`` with :func:`adamw_cosine`
    (no warmup), batches of ``batch_size`` shuffled by a generator seeded with ``seed``; the model is
    left in eval mode. ``state.epoch_losses[-1]`` is the mean training loss of the last epoch."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    opt, sched = adamw_cosine(model, epochs * len(loader), lr, ssm_lr, weight_decay)
    state = fit(model, loader, opt, task, epochs=epochs, scheduler=sched, grad_clip=grad_clip, callbacks=callbacks)
    model.eval()
    return state


def score(model: nn.Module, data: Dataset, task: Any = "classification", batch_size: int = 500) -> float:
    """The task's score of ``model`` on ``data`` (accuracy for classification; see :func:`evaluate`)."""
    return evaluate(model, DataLoader(data, batch_size=batch_size), task=task)["acc"]


class Batches:
    """``steps`` batches ``make(i)``, ``i = 0 .. steps - 1``, made when iterated (a loader for :func:`fit`
    on data drawn fresh every step; each epoch makes them again from ``i = 0``)."""

    def __init__(self, make: Callable[[int], Any], steps: int) -> None:
        if not callable(make):
            raise TypeError(f"Batches: make must be a function i -> batch, got {type(make).__name__}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"Batches: steps={steps!r}; allowed: an int >= 1")
        self.make, self.steps = make, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Any]:
        return (self.make(i) for i in range(self.steps))
