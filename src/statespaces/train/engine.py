"""The training engine: :func:`fit` runs optimizer steps, :func:`evaluate` scores a split.

:func:`fit` knows nothing about files, processes or configs: it runs epochs over a loader with a
:class:`~statespaces.train.tasks.Task` (how to unpack a batch, the loss), an optimizer and an
optional per-step scheduler, with bf16 autocast (``amp``), gradient clipping and a divergence
check (a non-finite loss, or a forward pass that raises ``FloatingPointError``, stops training with
the names of the non-finite parameters). Everything else (progress, logging, evaluation at the
end of an epoch, checkpoints) is a :class:`Callback`. ``statespaces train``
(:func:`statespaces.train.loop.train`) and the reproduction claims both train through it.

Resuming: ``start_step`` continues inside an epoch; the loader's sampler is set to the epoch
(``set_epoch``, e.g. a ``DistributedSampler``) and the first ``start_step mod len(loader)``
batches of that epoch are skipped, so a seeded loader gives the batches of an uninterrupted run.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..ops._amp import upcast_half
from .tasks import get_task

#: Default device (a module-level constant, not a call in the argument defaults).
_CPU = torch.device("cpu")

Tensor = torch.Tensor


@dataclass
class FitState:
    """Where :func:`fit` is: global ``step`` (optimizer steps done), ``epoch`` (0-based) and the
    values of the last step (``loss``, ``output``, ``target``; the output detached)."""

    step: int = 0
    epoch: int = 0
    steps_per_epoch: int = 0
    epochs: int = 0
    loss: float = math.nan
    output: Optional[Tensor] = None
    target: Optional[Tensor] = None
    #: Mean training loss of each finished epoch of this call.
    epoch_losses: List[float] = field(default_factory=list)
    stop: bool = False


class Callback:
    """Hooks of :func:`fit`; each gets the :class:`FitState`. Set ``state.stop = True`` to end
    training after the current step."""

    def on_epoch_start(self, state: FitState) -> None:
        pass

    def on_step_end(self, state: FitState) -> None:
        pass

    def on_epoch_end(self, state: FitState) -> None:
        pass


class OnStep(Callback):
    """A callback from a function ``f(step)`` run after every optimizer step."""

    def __init__(self, f) -> None:
        self.f = f

    def on_step_end(self, state: FitState) -> None:
        self.f(state.step)


class LossCurve(Callback):
    """Records the training loss of every step in ``self.losses`` (times ``scale``, e.g. 1/ln 2 for bits)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.losses: List[float] = []

    def on_step_end(self, state: FitState) -> None:
        self.losses.append(state.loss * self.scale)


def warmup_cosine(total: int, warmup: int = 0) -> Callable[[int], float]:
    """LR factor of step s: linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``
    (for ``torch.optim.lr_scheduler.LambdaLR``; the schedule of thesis §7.1)."""
    if total < 1 or warmup < 0:
        raise ValueError(f"warmup_cosine: got total={total!r}, warmup={warmup!r}; need total >= 1, warmup >= 0")

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        progress = (s - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_constant(total: int, warmup: int = 0) -> Callable[[int], float]:
    """LR factor of step s: linear warmup over ``warmup`` steps, then 1 until ``total`` (a constant
    learning rate, as the official LinOSS recipe; ``total`` is checked like :func:`warmup_cosine`'s)."""
    if total < 1 or warmup < 0:
        raise ValueError(f"warmup_constant: got total={total!r}, warmup={warmup!r}; need total >= 1, warmup >= 0")

    def factor(s: int) -> float:
        return (s + 1) / warmup if s < warmup else 1.0

    return factor


#: The values of ``trainer.schedule``: name -> factor builder ``(total, warmup) -> (step -> factor)``.
SCHEDULES = {"cosine": warmup_cosine, "constant": warmup_constant}


def _bad_parameters(model: nn.Module) -> List[str]:
    return [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]


def fit(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    task: Any = "classification",
    *,
    epochs: int = 1,
    scheduler: Optional[Any] = None,
    start_step: int = 0,
    net: Optional[nn.Module] = None,
    device: torch.device = _CPU,
    amp: bool = False,
    grad_clip: float = 0.0,
    callbacks: Sequence[Callback] = (),
    divergence_hint: str = "lower the learning rate or clip the gradients",
    augment: Optional[Any] = None,
    mixup: Optional[Callable[[Tensor, Tensor, Optional[Tensor], int],
                             Tuple[Tensor, Optional[Tensor], Tensor, float]]] = None,
) -> FitState:
    """Train ``model`` for ``epochs`` passes over ``loader`` (an iterable of batches with a length;
    a ``DataLoader`` or a list) and return the final :class:`FitState`.

    Each step: ``task.train_output`` of the batch (under bf16 autocast when ``amp``), its
    ``task.train_loss`` (in float32, outside autocast), a
    finite-loss check, ``zero_grad``, backward, clipping of the global gradient norm to ``grad_clip``
    (when > 0), ``optimizer.step()``, ``scheduler.step()``. ``net`` is the module the forward runs
    through (a DDP or compiled wrapper of ``model``; default ``model``). ``augment(x, lengths, step)``
    transforms each training input and its lengths before the forward
    (:class:`statespaces.data.augment.SeriesAugment`; seeded by the step, so a resumed run draws what
    the uninterrupted one would); an ``augment`` with a method ``with_targets(x, y, lengths, step)`` transforms
    the targets too (:class:`~statespaces.data.augment.TokenWindows`: random windows of a language model's
    tokens). ``mixup(x, y, lengths, step)`` returns a mixed batch, its lengths, the partners' labels
    and the weight ``lam`` of ``y`` (:class:`statespaces.train.mixup.MixUp`, after ``augment``); the step's
    loss is then ``lam * loss(y) + (1 - lam) * loss(partners)``, and the running score counts hits against ``y``.
    Divergence raises ``FloatingPointError`` naming the step, the epoch and the non-finite parameters, followed by
    ``divergence_hint``. The model is left in training mode.
    """
    task = get_task(task)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"fit: epochs={epochs!r}; allowed: an int >= 0")
    if grad_clip < 0 or not math.isfinite(grad_clip):
        raise ValueError(f"fit: grad_clip={grad_clip!r}; allowed: a finite number >= 0 (0: no clipping)")
    net = model if net is None else net
    steps_per_epoch = len(loader)  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise ValueError("fit: the loader yields no batch; give it at least batch_size examples")
    state = FitState(step=start_step, steps_per_epoch=steps_per_epoch, epochs=epochs)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    # the epoch's order: a sampler's (DistributedSampler) or a batch sampler's (length buckets)
    set_epoch = (getattr(getattr(loader, "sampler", None), "set_epoch", None)
                 or getattr(getattr(loader, "batch_sampler", None), "set_epoch", None))
    total = epochs * steps_per_epoch
    while state.step < total and not state.stop:
        state.epoch, offset = divmod(state.step, steps_per_epoch)
        if set_epoch is not None:
            set_epoch(state.epoch)
        net.train()
        for cb in callbacks:
            cb.on_epoch_start(state)
        seen, loss_sum = 0, 0.0
        for i, batch in enumerate(loader):
            if i < offset:
                continue  # resuming inside an epoch: the sampler order is a function of (seed, epoch)
            x, y, lengths = task.unpack(batch, device)
            if augment is not None and hasattr(augment, "with_targets"):   # cuts the aligned targets too (tokens)
                x, y, lengths = augment.with_targets(x, y, lengths, state.step)
            elif augment is not None:
                x, lengths = augment(x, lengths, state.step)
            partners, lam = None, 1.0
            if mixup is not None:
                x, lengths, partners, lam = mixup(x, y, lengths, state.step)

            def diverged(what: str) -> FloatingPointError:
                bad = _bad_parameters(model)
                return FloatingPointError(f"{what} at step {state.step} (epoch {state.epoch + 1}); non-finite "
                                          f"parameters: {bad or 'none'}. {divergence_hint[:1].upper()}"
                                          f"{divergence_hint[1:]}")

            try:
                with autocast:
                    out = task.train_output(net, x, y, lengths)
            except FloatingPointError as e:
                raise diverged(f"the forward pass failed ({e})") from e
            loss = task.train_loss(out, y)
            if partners is not None:
                loss = lam * loss + (1 - lam) * task.train_loss(out, partners)
            if not torch.isfinite(loss):
                raise diverged(f"loss became {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            state.step += 1
            state.loss = loss.item()
            state.output = out.detach()
            state.target = y
            n = task.count(y) if y is not None else 1
            seen += n
            loss_sum += state.loss * n
            for cb in callbacks:
                cb.on_step_end(state)
            if state.stop:
                break
        state.epoch_losses.append(loss_sum / max(seen, 1))
        for cb in callbacks:
            cb.on_epoch_end(state)
    return state


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device = _CPU,
             task: Any = "classification") -> Dict[str, Any]:
    """Mean loss and score over ``loader``: ``{"loss", "acc"}``, ``acc`` being the task's score
    (accuracy per example or per token, R^2, or minus the NLL; :meth:`Task.score`), and what else the
    task's :meth:`~statespaces.train.tasks.Task.summary` reports (forecasts: ``r2_channels``). The model's
    training mode is restored afterwards."""
    task = get_task(task)
    was_training = model.training
    model.eval()
    sums: Dict[str, Any] = {"loss": 0.0, "hits": 0.0, "count": 0}
    ys = []
    for batch in loader:
        part = task.eval_sums(model, batch, device)
        for k, v in part.items():                  # a task's further sums (Forecast: per-channel errors) add up too
            sums[k] = sums[k] + v if k in sums else v
        if task.needs_targets():
            y = task.unpack(batch, device)[1]
            ys.append(upcast_half(y) if y.is_floating_point() else y.float())   # float64 keeps its digits
    model.train(was_training)
    if not sums["count"]:
        raise ValueError("evaluate: the loader yields no example; a loss and score of nothing would read as "
                         "a perfect 0.0")
    targets = torch.cat(ys) if ys else None
    return task.summary(sums, targets)
