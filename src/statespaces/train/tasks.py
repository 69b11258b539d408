"""What a training task means: how to unpack a batch, the loss, and the score.

One :class:`Task` object per kind of problem, used by :func:`statespaces.train.engine.fit` and
:func:`statespaces.train.engine.evaluate` (and so by ``statespaces train``):

* :class:`Classification`: pooled logits (B, C) against int64 labels (B,); cross-entropy, accuracy.
* :class:`Regression`: pooled outputs (B, 1) against float targets (B,); MSE, R^2.
* :class:`Seq2Seq`: per-step logits (B, L, C) against int64 labels (B, k) for the last k steps
  (the model emits its answer at the end); cross-entropy per token, per-token accuracy.
* :class:`Forecast`: outputs (B, F, D) against targets (B, F, D) (e.g. the forecast region of
  §7.3.5); MSE, R^2 over every entry, and each channel's own R^2 in evaluations (``r2_channels``).
* :class:`LanguageModel`: token sequences (B, L) through a model with its own ``loss`` / ``nll``
  (:class:`statespaces.models.SSMLanguageModel`, §7.3.3 / Ch. 8); next-step NLL in nats.

A batch is ``(x, y[, lengths])`` (``(x[, lengths])`` for a language model); ``lengths`` (B,) are
the valid steps of padded sequences. The score of :meth:`Task.score` is higher-is-better
(accuracy, R^2, or minus the NLL), so model selection can compare it directly.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Subset

from ..ops._amp import upcast_half

#: Default device (a module-level constant, not a call in the argument defaults).
_CPU = torch.device("cpu")

Tensor = torch.Tensor
#: ``(x, y, lengths)``; ``y`` is None for a language model without explicit targets.
Batch = Tuple[Tensor, Any, Optional[Tensor]]


class Task:
    """A training objective: batch layout, loss, and score. Subclasses override the pieces they change.

    Statistics of evaluation are sums over examples (``loss``, ``hits``, ``count``), so a split can be
    scored batch by batch; :meth:`score` turns them into the reported number.
    """

    name = "task"
    #: Short name of the score in logs ("acc", "R2", "-nll"), and in sentences.
    score_name = "acc"
    score_label = "accuracy"
    #: How a validation split chooses the model, in words (``summary.json`` / checkpoint metadata).
    selection = "validation accuracy"
    #: Whether the score is the loss itself (a language model's NLL): logs then print it once.
    score_is_loss = False
    #: What the loss is, in words (the axis of ``curves.png``).
    loss_label = "cross-entropy"
    #: Whether the model pools over time (one output per sequence) or emits one output per step.
    pooled = True
    #: Whether a validation split is stratified by class (:func:`statespaces.train.selection.validation_split`).
    stratify = False

    def __init__(self, forward: Optional[Callable[..., Tensor]] = None) -> None:
        """``forward(model, x, lengths)``: how the model is called (default ``model(x[, lengths])``),
        e.g. ``lambda m, x, lengths: m(x, rate=2.0)`` to evaluate at another sampling rate."""
        if forward is not None and not callable(forward):
            raise TypeError(f"forward: got {type(forward).__name__}; expected a function (model, x, lengths) -> output")
        self.forward = forward

    def unpack(self, batch, device: torch.device = _CPU) -> Batch:
        """``(x, y, lengths)`` of a batch ``(x, y[, lengths])``, on ``device`` (``lengths`` None if absent)."""
        x, y, *rest = (t.to(device) for t in batch)
        return x, y, (rest[0] if rest else None)

    def output(self, model: nn.Module, x: Tensor, lengths: Optional[Tensor]) -> Tensor:
        """The model's output for ``x`` (``lengths`` passed only when given)."""
        if self.forward is not None:
            return self.forward(model, x, lengths)
        return model(x, lengths) if lengths is not None else model(x)

    def loss(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        raise NotImplementedError

    def hits(self, out: Tensor, y: Tensor) -> float:
        """The batch's contribution to the score (sum over examples)."""
        raise NotImplementedError

    def count(self, y: Tensor) -> int:
        """Examples in a batch (the unit of :meth:`hits` and of the summed loss)."""
        return len(y)

    def train_output(self, model: nn.Module, x: Tensor, y: Optional[Tensor], lengths: Optional[Tensor]) -> Tensor:
        """The forward pass of one training step (run under autocast; feeds :meth:`train_loss` and
        :meth:`hits` for the running score)."""
        return self.output(model, x, lengths)

    def train_loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The mean loss of one training step from :meth:`train_output`."""
        return self.loss(out, y)

    def loss_unit(self, y: Tensor) -> int:
        """Terms per example in the summed loss (the evaluated loss is per term, like the training loss)."""
        return 1

    def eval_sums(self, model: nn.Module, batch, device: torch.device) -> Dict[str, float]:
        """Summed loss (per :meth:`loss_unit`), hits and example count of one evaluation batch."""
        x, y, lengths = self.unpack(batch, device)
        return self.output_sums(self.output(model, x, lengths), y)

    def output_sums(self, out: Tensor, y: Tensor) -> Dict[str, float]:
        """Summed loss (per :meth:`loss_unit`), hits and example count of outputs ``out`` against ``y``."""
        loss = self.loss(out, y, reduction="sum").item() / self.loss_unit(y)
        return {"loss": loss, "hits": self.hits(out, y), "count": self.count(y)}

    def score(self, sums: Dict[str, float], targets: Optional[Tensor] = None) -> float:
        """The score of summed statistics (``targets``: every target seen, for scores that need them)."""
        return sums["hits"] / max(sums["count"], 1)

    def summary(self, sums: Dict[str, float], targets: Optional[Tensor] = None) -> Dict[str, float]:
        """``{"loss", "acc"}`` of summed statistics: the mean loss per term and the :meth:`score`."""
        return {"loss": sums["loss"] / max(sums["count"], 1), "acc": self.score(sums, targets)}

    def needs_targets(self) -> bool:
        """Whether :meth:`score` needs the evaluated targets."""
        return False

    def format_score(self, value: float) -> str:
        """The score as printed (accuracy: a percentage)."""
        return f"{100 * value:.2f}%"

    @property
    def score_in_percent(self) -> bool:
        """Whether :meth:`format_score` prints the score as a percentage (accuracy; not R^2 nor an NLL)."""
        return self.format_score(0.5).endswith("%")

    def check_targets(self, y: Tensor, n_classes: int, what: str) -> None:
        """Raise ValueError when the targets ``y`` of a dataset do not fit the task (``what`` names them):
        class labels must be int64 in ``[0, n_classes)``."""
        if y.dtype != torch.int64 or int(y.min()) < 0 or int(y.max()) >= n_classes:
            raise ValueError(f"{what}: labels must be int64 in [0, {n_classes}); got dtype {y.dtype}, range "
                             f"[{y.min().item()}, {y.max().item()}]")

    def running_score(self, hits: float, seen: int, dataset) -> float:
        """The training score of an epoch from the summed :meth:`hits` of its ``seen`` examples of
        ``dataset`` (a ``TensorDataset`` or a ``Subset`` of one)."""
        return hits / seen

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Classification(Task):
    """Cross-entropy on pooled logits (B, C) against labels (B,); score: accuracy.

    ``label_smoothing`` in [0, 1) (Szegedy et al. 2016): the training loss is the cross-entropy
    against targets ``(1 - eps) * onehot + eps / C``; evaluation losses stay the plain cross-entropy,
    so validation and test losses of runs with and without it compare directly.
    """

    name = "classification"
    stratify = True

    def __init__(self, forward: Optional[Callable[..., Tensor]] = None, label_smoothing: float = 0.0) -> None:
        super().__init__(forward)
        eps = label_smoothing
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
            raise ValueError(f"label_smoothing: got {eps!r}; allowed: a number in [0, 1) (0: plain cross-entropy)")
        self.label_smoothing = float(eps)

    def loss(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        return _cross_entropy(out, y, reduction=reduction)

    def train_loss(self, out: Tensor, y: Tensor) -> Tensor:
        return _cross_entropy(out, y, label_smoothing=self.label_smoothing)

    def __repr__(self) -> str:
        eps = f"label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return f"{type(self).__name__}({eps})"

    def hits(self, out: Tensor, y: Tensor) -> float:
        return float((out.argmax(-1) == y).sum())


_NO_IGNORE = -(2 ** 63)          # an ignore_index no int64 label below the range check can hold in practice


def _cross_entropy(out: Tensor, y: Tensor, **kw: Any) -> Tensor:
    """``F.cross_entropy`` of logits (B, C) against labels (B,), the pair checked first (shapes and dtype: no host
    sync); a label outside [0, C) is named in the error that cross_entropy raises (on CPU)."""
    if out.dim() != 2 or y.dim() != 1 or y.shape[0] != out.shape[0]:
        raise ValueError(f"classification: the model's logits must be (B, C) and the labels (B,); got logits "
                         f"{tuple(out.shape)} and labels {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"classification: labels must be integer class indices (int64) in [0, {out.shape[1]}); "
                         f"got dtype {y.dtype} (float targets: task='regression')")
    try:
        # no label is ignored: cross_entropy's default ignore_index (-100) skipped such labels silently
        return F.cross_entropy(upcast_half(out), y.long(), ignore_index=_NO_IGNORE, **kw)
    except IndexError as e:                       # CPU: "Target 7 is out of bounds."
        raise ValueError(f"classification: labels must be in [0, {out.shape[1]}) for a model with {out.shape[1]} "
                         f"outputs (n_classes / d_output); {e}") from None


class _R2Task(Task):
    """A task on float targets scored by R^2 = 1 - SSE / SST, ``hits`` being the sum of squared errors."""

    score_name = "R2"
    score_label = "R^2"
    loss_label = "mean squared error"
    selection = "validation R^2"

    def format_score(self, value: float) -> str:
        return f"{value:.4f}"

    def check_targets(self, y: Tensor, n_classes: int, what: str) -> None:
        _check_float_targets(y, what)

    def needs_targets(self) -> bool:
        return True

    def score(self, sums: Dict[str, float], targets: Optional[Tensor] = None) -> float:
        if targets is None:
            raise ValueError(f"{self.name}: the score (R^2) needs the evaluated targets; got targets=None")
        return r_squared(sums["hits"], targets)


class Regression(_R2Task):
    """MSE of the output (B, 1) against float targets (B,) or (B, 1); score: R^2 = 1 - SSE / SST."""

    name = "regression"

    def loss(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        return F.mse_loss(*_regression_pair(out, y), reduction=reduction)

    def hits(self, out: Tensor, y: Tensor) -> float:
        """Sum of squared errors (turned into R^2 by :meth:`score`)."""
        o, t = _regression_pair(out, y)
        return float(((o - t) ** 2).sum())

    def running_score(self, hits: float, seen: int, dataset) -> float:
        """R^2 of the epoch: mean squared error over the variance of the dataset's targets."""
        return 1.0 - hits / seen / float(target_variance(dataset))


def _regression_pair(out: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    """Predictions (B,) and targets (B,) of :class:`Regression` from outputs (B, 1) and targets (B,) or (B, 1).
    Anything else is refused: a (B, 1) target against (B,) predictions broadcast to a (B, B) error matrix, and a
    model with several outputs had all but the first ignored."""
    if out.dim() != 2 or out.shape[1] != 1:
        raise ValueError(f"regression: the model must give one output per example, (B, 1); got {tuple(out.shape)} "
                         "(build it with d_output = 1)")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1 or y.shape[0] != out.shape[0]:
        raise ValueError(f"regression: targets must be (B,) or (B, 1), one per example; got {tuple(y.shape)} for "
                         f"{out.shape[0]} outputs")
    _check_float_targets(y, "regression")
    return _in_output_precision(out[:, 0], y)


def _in_output_precision(out: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    """Outputs and float targets for a squared error: the outputs' precision, at least float32 (:func:`upcast_half`)."""
    o = upcast_half(out)
    return o, y.to(o.dtype)


def target_variance(ds: Any) -> float:
    """Mean squared deviation of the targets of a ``TensorDataset`` or a ``Subset`` of one."""
    base: Any = ds.dataset if isinstance(ds, Subset) else ds
    y = upcast_half(base.tensors[1])
    if isinstance(ds, Subset):
        y = y[torch.as_tensor(ds.indices)]
    return float(((y - y.mean()) ** 2).mean())


def _check_float_targets(y: Tensor, what: str) -> None:
    if not y.is_floating_point():
        raise ValueError(f"{what}: regression targets must be floats; got dtype {y.dtype}")


def r_squared(sse: float, targets: Tensor) -> float:
    """``1 - SSE / sum((y - mean y)^2)`` over every entry of ``targets``."""
    y = upcast_half(targets)
    return 1.0 - sse / max(float(((y - y.mean()) ** 2).sum()), 1e-12)


class Seq2Seq(Task):
    """Cross-entropy over the last ``k = y.shape[1]`` steps of per-step logits (B, L, C) against
    labels (B, k); loss and score are per token (a batch counts B examples, each the mean of k tokens)."""

    name = "seq2seq"
    pooled = False

    def loss(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        k = y.shape[1]
        return F.cross_entropy(upcast_half(out[:, -k:]).flatten(0, 1), y.flatten(), reduction=reduction)

    def hits(self, out: Tensor, y: Tensor) -> float:
        return float((out[:, -y.shape[1]:].argmax(-1) == y).float().mean(-1).sum())

    def loss_unit(self, y: Tensor) -> int:
        return y.shape[1]


class Forecast(_R2Task):
    """MSE of outputs (B, F, D) against targets of the same shape (every entry counts); score: R^2."""

    name = "forecast"
    pooled = False

    def loss(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        err = self._squared_errors(out, y)
        return err.sum() if reduction == "sum" else err.mean()

    def hits(self, out: Tensor, y: Tensor) -> float:
        return float(self._squared_errors(out, y).sum())

    @staticmethod
    def _squared_errors(out: Tensor, y: Tensor) -> Tensor:
        """``(out - y)^2`` (B, F, D) in the outputs' precision (at least float32); the shapes must agree."""
        if out.shape != y.shape:
            raise ValueError(f"forecast: output shape {tuple(out.shape)} differs from the target shape "
                             f"{tuple(y.shape)}; the model must emit one value per target entry")
        o, t = _in_output_precision(out, y)
        return (o - t).pow(2)

    def loss_unit(self, y: Tensor) -> int:
        return max(y[0].numel(), 1)

    def output_sums(self, out: Tensor, y: Tensor) -> Dict[str, Any]:
        """As :meth:`Task.output_sums` (the squared errors formed once), plus ``sse_channels`` (D,) float64: each
        channel's summed squared error."""
        err = self._squared_errors(out, y)
        total = float(err.sum())
        return {"loss": total / self.loss_unit(y), "hits": total, "count": self.count(y),
                "sse_channels": err.to(torch.float64).reshape(-1, y.shape[-1]).sum(0).cpu()}

    def summary(self, sums: Dict[str, Any], targets: Optional[Tensor] = None) -> Dict[str, Any]:
        """``{"loss", "acc"}`` with ``acc`` the R^2 pooled over every entry, and ``r2_channels``: each channel's
        R^2 against its own variance (a pooled R^2 can hide a channel worse than its mean when the channels'
        scales differ). A channel with constant targets has R^2 ``nan`` (no variance to explain)."""
        res: Dict[str, Any] = dict(super().summary(sums, targets))
        sse = sums.get("sse_channels")
        if sse is not None and targets is not None:
            y = targets.to(torch.float64).reshape(-1, targets.shape[-1])
            sst = ((y - y.mean(0)) ** 2).sum(0).cpu()
            r2 = torch.where(sst > 0, 1.0 - sse / torch.where(sst > 0, sst, torch.ones_like(sst)),
                             torch.full_like(sst, math.nan))
            res["r2_channels"] = [float(v) for v in r2]
        return res


class LanguageModel(Task):
    """Next-step NLL (nats per step) of token sequences (B, L) through the model's own ``loss(x, y,
    lengths)`` and ``nll(x, y, lengths) -> (total, count)``; a batch is ``(x[, lengths])`` or
    ``(x, y[, lengths])`` with explicit targets. Score: minus the mean NLL (higher is better)."""

    name = "lm"
    score_name = "nll"
    score_label = "NLL"
    score_is_loss = True
    loss_label = "NLL (nats/step)"
    selection = "validation NLL"

    def format_score(self, value: float) -> str:
        """The score (minus the NLL) shown as the NLL itself: ``"2.9460 nats/step"``."""
        return f"{-value:.4f} nats/step"

    def unpack(self, batch, device: torch.device = _CPU) -> Batch:
        if isinstance(batch, Tensor):
            batch = (batch,)
        parts = [t.to(device) for t in batch]
        x = parts[0]
        if len(parts) == 1:
            return x, None, None
        if len(parts) == 2:   # (tokens, lengths) when the second is 1-D integers, else (inputs, targets)
            second = parts[1]
            if second.dim() == 1 and not second.is_floating_point():
                return x, None, second
            return x, second, None
        return x, parts[1], parts[2]

    def train_output(self, model: Any, x: Tensor, y: Optional[Tensor], lengths: Optional[Tensor]) -> Tensor:
        """The model's mean next-step NLL (a scalar): a language model's output is its loss. ``model`` may be a
        wrapper (DistributedDataParallel, a compiled module) of the language model, in ``.module``: the forward
        runs through the wrapper, the loss is the inner model's."""
        inner = model
        while not hasattr(inner, "wrapped_loss") and hasattr(inner, "module"):
            inner = inner.module
        if inner is model:
            return model.loss(x, y, lengths)
        return inner.wrapped_loss(model, x, y, lengths)

    def train_loss(self, out: Tensor, y: Optional[Tensor]) -> Tensor:
        return out

    def eval_sums(self, model: Any, batch, device: torch.device) -> Dict[str, float]:
        x, y, lengths = self.unpack(batch, device)
        total, count = model.nll(x, y, lengths)
        return {"loss": float(total), "hits": -float(total), "count": int(count)}

    def hits(self, out, y) -> float:
        """Minus the batch's mean NLL times its number of sequences, so that the running training score of an
        epoch (:meth:`running_score`: hits / sequences seen) is minus its mean training NLL."""
        return -float(out) * (len(y) if y is not None else 1)

    def count(self, y) -> int:
        return 1


#: The tasks by name (``data.task`` of a dataset, ``task`` in a checkpoint's metadata).
TASKS: Dict[str, Task] = {t.name: t for t in (Classification(), Regression(), Seq2Seq(), Forecast(), LanguageModel())}


def get_task(task) -> Task:
    """A :class:`Task` from itself or its name (one of :data:`TASKS`)."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str) and task in TASKS:
        return TASKS[task]
    raise ValueError(f"task: got {task!r}; allowed: a Task object or one of {', '.join(TASKS)}")
