r"""Mixup of training batches (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization").

Each optimizer step draws one weight :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` and one
permutation :math:`\pi` of the batch, trains on the convex combinations
:math:`\tilde x_b = \lambda x_b + (1 - \lambda) x_{\pi(b)}` and takes the same combination of the two
losses, :math:`\lambda\,\ell(f(\tilde x), y) + (1 - \lambda)\,\ell(f(\tilde x), y_\pi)` (for
cross-entropy, the loss against the mixed one-hot target). A small :math:`\alpha` (0.1-0.4) keeps most
mixtures close to one of the two series; the aim is a smoother decision function on the small
training splits of the UCR/UEA archive, where the layers fit every series long before they generalise.

A batch is x (B, L, C) of float series, right-padded with ``lengths`` (B,) (None: all L steps valid);
a mixed series is valid up to the longer of its two sources (beyond a series' own length its padded
steps, zero, enter the mixture). Draws come from a generator seeded by ``(seed, step)``, so a resumed
run mixes as an uninterrupted one. Evaluation never mixes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["MixUp"]


@dataclass(frozen=True)
class MixUp:
    """Batch mixup with weight ``Beta(alpha, alpha)`` (module docstring); ``alpha > 0``.

    Call as ``mix(x, y, lengths, step)`` with x (B, L, C) floating, labels y (B,), ``lengths`` (B,) or
    None and the optimizer step; returns ``(x', lengths', y_other, lam)``: the mixed (B, L, C) batch,
    its valid lengths, the labels of the partners and the weight ``lam`` of ``y`` (a float).
    """

    alpha: float
    seed: int = 0

    def __post_init__(self) -> None:
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
            raise ValueError(f"mixup: alpha={a!r}; allowed: a finite number > 0 (the Beta(alpha, alpha) "
                             "parameter; 0 in a config turns mixup off)")

    def __call__(self, x: Tensor, y: Tensor, lengths: Optional[Tensor],
                 step: int) -> Tuple[Tensor, Optional[Tensor], Tensor, float]:
        if x.dim() != 3 or not x.is_floating_point():
            raise ValueError(f"mixup: expected float series (B, L, C), got a {x.dtype} tensor of shape "
                             f"{tuple(x.shape)}; mixup applies to time-series inputs, not tokens")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"mixup: expected one class label per series, labels of shape (B,) = ({x.shape[0]},); "
                             f"got {tuple(y.shape)}")
        key = (self.seed * 1_000_003 + step + 7_919) % 2**63
        lam = float(np.random.default_rng(key).beta(self.alpha, self.alpha))
        gen = torch.Generator().manual_seed(key)
        perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
        mixed = lam * x + (1 - lam) * x[perm]
        new_lengths = None if lengths is None else torch.maximum(lengths, lengths[perm])
        return mixed, new_lengths, y[perm], lam
