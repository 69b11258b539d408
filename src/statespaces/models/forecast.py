r"""Time-series forecasting with mask tokens (thesis §7.3.5).

The thesis forecasts F future steps from C context steps without a decoder or any
forecasting-specific machinery: the input is the C context steps followed by F *mask tokens*
(length C + F), the same deep S4 model maps it to a sequence of length C + F, and its last F outputs
are the forecast. Since the whole window is given at once, the SSM layers may be bidirectional.

Here a mask token is an input step whose values are zero and whose extra "mask" channel is 1, so
the encoder ``Linear(d_input + 1, H)`` learns one mask embedding.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .._checks import check_positive_int, check_result, check_sequence, public
from ..layers.config import LayerSpec, sequence_layer, upgrade_layer_arguments
from ..serialization import Pretrained
from .lm import SSMStack

Tensor = torch.Tensor

__all__ = ["SSMForecaster"]


class SSMForecaster(Pretrained, nn.Module):
    """Forecast ``horizon`` steps of a (B, C, d_input) context (thesis §7.3.5).

    Args:
        d_input: channels of the series.
        horizon: F, the number of forecast steps (mask tokens appended to the context).
        d_model: width of the SSM stack.
        n_layers: depth of the SSM stack.
        layer: the SSM layer: a kind (``"s4d"``, ``"s4"``, ``"linoss"``, ``"dlinoss"``, ``"s4nd"``) with
            its defaults, a config (``S4DConfig(d_state=32)``) or a mapping
            ``{"kind": "s4d", "d_state": 32}`` (see :mod:`statespaces.layers.config`).
            A kind or a mapping that does not set ``bidirectional`` gets ``bidirectional=True`` (the
            whole window is given at once); a config object is used as it is.
        mixing: residual-block option of :class:`~statespaces.models.lm.SSMStack`.
        norm: residual-block option of :class:`~statespaces.models.lm.SSMStack`.
        dropout: residual-block option of :class:`~statespaces.models.lm.SSMStack`.

    Shapes: forward(context (B, C, d_input)) -> forecast (B, horizon, d_input).
    """

    upgrade_config = staticmethod(upgrade_layer_arguments)    # reads models saved with layer_kwargs

    def __init__(
        self,
        d_input: int,
        horizon: int,
        d_model: int = 64,
        n_layers: int = 4,
        layer: LayerSpec = "s4d",
        mixing: str = "glu",
        norm: str = "layer",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.d_input = check_positive_int("d_input", d_input)
        self.horizon = check_positive_int("horizon", horizon)
        if isinstance(layer, str):
            layer = {"kind": layer}
        if isinstance(layer, Mapping):
            layer = {"bidirectional": True, **layer}
        self.layer_config = sequence_layer(layer)
        self.encoder = nn.Linear(d_input + 1, d_model)
        self.backbone = SSMStack(d_model, n_layers, layer=self.layer_config, mixing=mixing, norm=norm,
                                 dropout=dropout, causal=False)      # the whole window is given at once
        self.decoder = nn.Linear(d_model, d_input)

    def extra_repr(self) -> str:
        return f"d_input={self.d_input}, horizon={self.horizon}"

    def masked_input(self, context: Tensor) -> Tensor:
        """Context followed by F mask tokens, with the mask channel: (B, C + F, d_input + 1)."""
        check_sequence(context, self.d_input, self.decoder.weight.dtype, "context", device=self.decoder.weight.device,
                       channels="d_input")
        return self._masked(context.to(self.decoder.weight.dtype))

    def _masked(self, context: Tensor) -> Tensor:
        B, C, _ = context.shape
        values = torch.cat([context, context.new_zeros(B, self.horizon, self.d_input)], 1)
        mask = torch.cat([context.new_zeros(B, C, 1), context.new_ones(B, self.horizon, 1)], 1)
        return torch.cat([values, mask], -1)

    @public
    def forward(self, context: Tensor) -> Tensor:
        """Context (B, C, d_input) -> forecast (B, horizon, d_input): the context followed by ``horizon`` mask tokens
        (zeros, flagged by an extra input channel) goes through the stack, and its outputs at the mask tokens are
        the forecast (thesis §7.3.5)."""
        check_sequence(context, self.d_input, self.decoder.weight.dtype, "context", device=self.decoder.weight.device,
                       channels="d_input")
        u = context.to(self.decoder.weight.dtype)            # half precision: computed in the module's precision
        y = self.decoder(self.backbone(self.encoder(self._masked(u))))[:, -self.horizon:]
        check_result(self, y, "forecast", context=context)
        return y
