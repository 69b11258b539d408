r"""The residual SSM block of the deep SSM architecture (thesis §7.2, Fig. 7.1).

    x -> [norm] -> SSM layer -> GELU -> dropout -> mixing (GLU or linear) -> dropout -> + x -> [norm]

Pre-norm applies the norm before the layer, post-norm after the residual sum. Dropout is tied
across the sequence (one mask per (batch, channel), §7.2) when ``tie_dropout``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ._checks import check_choice
from .layers.base import SSMLayer

Tensor = torch.Tensor


class DropoutNd(nn.Module):
    """Dropout with one mask per (batch, channel), shared across the length axis of (B, L, H)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = torch.rand(x.shape[0], 1, x.shape[2], device=x.device) >= self.p
        return x * mask.to(x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _SeqNorm(nn.Module):
    """LayerNorm over channels, or BatchNorm over (batch, length), for (B, L, H) input."""

    def __init__(self, d_model: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.norm = nn.LayerNorm(d_model) if kind == "layer" else nn.BatchNorm1d(d_model)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "layer":
            return self.norm(x)
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ResidualBlock(nn.Module):
    """One residual block around any SSM layer.

    Args:
        layer: an :class:`~statespaces.layers.base.SSMLayer` of width H.
        norm: ``"layer"`` or ``"batch"``.
        prenorm: normalize before the layer (default) or after the residual.
        dropout: dropout probability (tied across length if ``tie_dropout``).
        mixing: ``"glu"`` (Linear H->2H then GLU, default) or ``"linear"`` (H->H).

    Shapes: (B, L, H) -> (B, L, H). ``step`` maps (B, H) -> (B, H) with the layer's state.
    """

    def __init__(
        self,
        layer: SSMLayer,
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        mixing: str = "glu",
        tie_dropout: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(layer, SSMLayer):
            raise TypeError(f"layer must be an SSMLayer (S4D, S4, LinOSS, ...), got {type(layer).__name__}")
        H = layer.d_model
        self.layer = layer
        self.prenorm = prenorm
        self.norm = _SeqNorm(H, check_choice("norm", norm, ("layer", "batch")))
        self.mixing = check_choice("mixing", mixing, ("glu", "linear"))
        self.activation = nn.GELU()
        self.dropout = DropoutNd(dropout) if tie_dropout else nn.Dropout(dropout)
        self.output = nn.Linear(H, 2 * H if self.mixing == "glu" else H)

    def _mix(self, y: Tensor) -> Tensor:
        y = self.output(self.dropout(self.activation(y)))
        return nn.functional.glu(y, dim=-1) if self.mixing == "glu" else y

    def forward(self, x: Tensor, state: Optional[Tensor] = None, return_state: bool = False, rate: float = 1.0):
        z = self.norm(x) if self.prenorm else x
        out = self.layer(z, state=state, return_state=return_state, rate=rate)
        y, new_state = out if return_state else (out, None)
        x = x + self.dropout(self._mix(y))
        if not self.prenorm:
            x = self.norm(x)
        return (x, new_state) if return_state else x

    def step(self, x: Tensor, state: Tensor, rate: float = 1.0) -> Tuple[Tensor, Tensor]:
        """Recurrent step on x (B, H); valid with LayerNorm (BatchNorm in eval mode also works)."""
        z = self.norm(x.unsqueeze(1)).squeeze(1) if self.prenorm else x
        y, state = self.layer.step(z, state, rate)
        x = x + self.dropout(self._mix(y.unsqueeze(1))).squeeze(1)
        if not self.prenorm:
            x = self.norm(x.unsqueeze(1)).squeeze(1)
        return x, state
