r"""Sequence classifier: encoder -> stack of residual SSM blocks -> pooling -> decoder (thesis §7.2).

A deliberately small model for the main job; the full backbone (heads, masks, bidirectional
stacks) is built on the same blocks.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from .._checks import check_choice, check_positive_int, check_sequence
from ..blocks import ResidualBlock
from ..layers.registry import make_layer

Tensor = torch.Tensor


class SequenceClassifier(nn.Module):
    """Classify sequences (B, L, d_input) into ``n_classes``.

    Args:
        d_input: input channels per step.
        n_classes: number of classes.
        d_model: width H of the SSM blocks.
        n_layers: number of residual blocks.
        layer: SSM layer name (``"s4d"``, ``"s4"``, ``"linoss"``) and ``layer_kwargs`` for it.
        pool: ``"mean"`` over time (padding-aware with ``lengths``), ``"last"`` step, or ``"none"``
            for per-step outputs (B, L, n_classes): per-step regression or sequence-to-sequence heads.
        norm: ``"layer"`` or ``"batch"``, passed to every :class:`ResidualBlock`.
        prenorm: normalize before the layer (default) or after the residual, passed to every
            :class:`ResidualBlock`.
        dropout: dropout probability, passed to every :class:`ResidualBlock`.
        mixing: ``"glu"`` (default) or ``"linear"``, passed to every :class:`ResidualBlock`.

    Shapes: forward(x (B, L, d_input), lengths (B,) optional) -> logits (B, n_classes), or
    (B, L, n_classes) with ``pool="none"``. ``n_classes=1`` gives a scalar regression head.
    """

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        d_model: int = 64,
        n_layers: int = 4,
        layer: str = "s4d",
        layer_kwargs: Optional[Dict[str, Any]] = None,
        pool: str = "mean",
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        mixing: str = "glu",
    ) -> None:
        super().__init__()
        self.d_input = check_positive_int("d_input", d_input)
        check_positive_int("n_classes", n_classes, 1)
        check_positive_int("n_layers", n_layers)
        self.pool = check_choice("pool", pool, ("mean", "last", "none"))
        self.encoder = nn.Linear(d_input, d_model)
        kwargs = dict(layer_kwargs or {})
        self.blocks = nn.ModuleList(
            ResidualBlock(make_layer(layer, d_model, **kwargs), norm=norm, prenorm=prenorm, dropout=dropout, mixing=mixing)
            for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if prenorm else nn.Identity()
        self.decoder = nn.Linear(d_model, n_classes)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None, rate: float = 1.0) -> Tensor:
        check_sequence(x, self.d_input, self.encoder.weight.dtype)
        h = self.encoder(x)
        for block in self.blocks:
            h = block(h, rate=rate)
        h = self.final_norm(h)
        if self.pool == "none":
            return self.decoder(h)
        if lengths is None:
            pooled = h.mean(1) if self.pool == "mean" else h[:, -1]
        else:
            if not isinstance(lengths, torch.Tensor) or lengths.is_floating_point() or lengths.is_complex() \
                    or lengths.dtype == torch.bool:
                got = lengths.dtype if isinstance(lengths, torch.Tensor) else type(lengths).__name__
                raise TypeError(f"lengths must be an integer tensor (B,), got {got}")
            lengths = lengths.to(h.device)
            if lengths.shape != (x.shape[0],) or bool((lengths < 1).any()) or bool((lengths > x.shape[1]).any()):
                raise ValueError(f"lengths must be (B,) integers in [1, L={x.shape[1]}], got {lengths.tolist()}")
            mask = torch.arange(x.shape[1], device=h.device)[None, :] < lengths[:, None]
            if self.pool == "mean":
                pooled = (h * mask[..., None]).sum(1) / lengths[:, None].to(h.dtype)
            else:
                pooled = h[torch.arange(x.shape[0], device=h.device), lengths - 1]
        return self.decoder(pooled)
