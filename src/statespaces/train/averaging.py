r"""An exponential moving average of the weights, evaluated in place of the trained weights.

After every optimizer step the average moves towards the current weights, :math:`\bar\theta \leftarrow \beta_n
\bar\theta + (1 - \beta_n)\,\theta` with :math:`\beta_n = \min(\beta, (1 + n) / (10 + n))` after :math:`n \ge
1` updates (the first update copies the weights; the warm-up keeps the first steps' weights -- the random init
-- from dominating a short run: a run of a few hundred steps is shorter than the window :math:`1 / (1 -
\beta)` of the usual :math:`\beta = 0.999`). Buffers (BatchNorm statistics) are averaged the same way. The
copy is a :class:`torch.optim.swa_utils.AveragedModel`; what this module adds is the warm-up and a
:class:`~statespaces.train.engine.Callback` that updates it, so that ``fit(..., callbacks=[ema])`` trains as
before and ``ema.module`` is the model to evaluate and save.
"""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .engine import Callback, FitState

__all__ = ["WeightEMA", "ema_factor"]


def ema_factor(decay: float, updates: int) -> float:
    """The weight of the old average in the update that follows ``updates`` earlier ones:
    ``min(decay, (1 + n) / (10 + n))`` (the first update, n = 0, copies the weights)."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightEMA(Callback):
    """The moving average of ``model``'s parameters and buffers (module docstring), updated at every
    optimizer step of :func:`~statespaces.train.engine.fit` when passed among its ``callbacks``.

    ``decay`` in (0, 1). ``module`` is the averaged copy (a deep copy of ``model`` made at construction);
    :meth:`state_dict` / :meth:`load_state_dict` carry the copy and the update count (resume).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not (0 < decay < 1) \
                or not math.isfinite(decay):
            raise ValueError(f"ema: decay={decay!r}; allowed: a number in (0, 1) (e.g. 0.99; 0 in a config "
                             "turns the average off)")
        self.decay = float(decay)
        self.averaged = AveragedModel(model, avg_fn=self._avg, use_buffers=True)
        self.source = model
        self._updates = 0            # a host copy of averaged.n_averaged: no device read per step
        self._beta = 0.0

    def _avg(self, avg: torch.Tensor, current: torch.Tensor, n: Union[torch.Tensor, int]) -> torch.Tensor:
        if not (avg.is_floating_point() or avg.is_complex()):
            return current           # counters (BatchNorm's num_batches_tracked): the current value
        return avg * self._beta + current * (1 - self._beta)

    @property
    def module(self) -> nn.Module:
        """The averaged model (same class and state-dict keys as the trained one)."""
        return self.averaged.module

    @property
    def updates(self) -> int:
        """Updates so far (the first copies the weights)."""
        return self._updates

    def update(self) -> None:
        """One step of the average towards the current weights."""
        self._beta = ema_factor(self.decay, self._updates)     # (the first update copies: beta unused)
        self.averaged.update_parameters(self.source)
        self._updates += 1

    def on_step_end(self, state: FitState) -> None:
        self.update()

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self._updates = int(state["updates"])
        self.averaged.n_averaged.fill_(self._updates)
