r"""Sequence classifier: encoder -> stack of residual SSM blocks -> pooling -> decoder (thesis §7.2).

A deliberately small model for the main job; the full backbone (heads, masks, bidirectional
stacks) is built on the same blocks.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn

from .._checks import check_choice, check_flag, check_positive_int, check_result, check_sequence, public
from ..blocks import ResidualBlock, length_mask
from ..layers.base import SSMLayer
from ..layers.config import LayerSpec, sequence_layer, upgrade_layer_arguments
from ..layers.irregular import check_intervals
from ..layers.s4nd import S4ND
from ..serialization import Pretrained

Tensor = torch.Tensor


class ConvStem(nn.Module):
    """Convolutional stem: (B, L, d_input) -> GELU(Conv1d over time) (B, L, d_model), "same" zero padding.

    The output channels are split evenly over ``dilations`` (one Conv1d per dilation, kernel ``kernel``):
    a multi-scale bank of learned local filters, as in the convolutional classifiers the thesis compares
    against (§7.3). Padding-aware: with ``mask`` (B, L) the input is zeroed at masked steps first, which
    is what the convolution's own zero padding assumes, so a valid output never sees padded values.
    """

    def __init__(self, d_input: int, d_model: int, kernel: int, dilations: Union[int, Sequence[int]] = 1) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"stem must be an odd kernel size (centred, 'same' padding), got {kernel}")
        one = isinstance(dilations, numbers.Integral)
        given: Tuple[Any, ...] = (dilations,) if one else tuple(cast(Any, dilations))
        if not given or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in given):
            raise ValueError(f"stem_dilations must be a non-empty list of positive ints, got {dilations!r}")
        dilations = tuple(int(d) for d in given)
        if d_model % len(dilations):
            raise ValueError(f"stem_dilations: d_model = {d_model} must split evenly over {len(dilations)} "
                             "dilations")
        width = d_model // len(dilations)
        self.kernel, self.dilations = kernel, dilations
        self.convs = nn.ModuleList(
            nn.Conv1d(d_input, width, kernel, dilation=d, padding=d * (kernel // 2)) for d in dilations)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x (B, L, d_input), mask (B, L) bool or None -> (B, L, d_model)."""
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        xt = x.transpose(1, 2)
        h = torch.cat([conv(xt) for conv in self.convs], dim=1)
        return torch.nn.functional.gelu(h).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, dilations={self.dilations}"


#: The ways :func:`pool_over_time` reduces (B, L, H) features to (B, H) (``meanmax``: (B, 2H)).
POOLS = ("mean", "max", "meanmax", "last")


def pool_over_time(h: Tensor, mask: Optional[Tensor], how: str) -> Tensor:
    """Reduce features h (B, L, H) over time, counting only the valid steps of ``mask`` (B, L) bool
    (None: all valid): ``mean`` and ``max`` (B, H), ``meanmax`` their concatenation (B, 2H), ``last``
    the last valid step (B, H). The pooling between the residual blocks and the decoder (thesis §7.2)."""
    if how == "meanmax":
        return torch.cat([pool_over_time(h, mask, "mean"), pool_over_time(h, mask, "max")], dim=-1)
    if how == "max":
        return (h if mask is None else h.masked_fill(~mask[..., None], float("-inf"))).amax(1)
    if how == "mean":
        if mask is None:
            return h.mean(1)
        hv = torch.where(mask[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        return hv.sum(1) / mask.sum(1, keepdim=True).to(h.dtype)
    if how == "last":
        return h[:, -1] if mask is None else h[torch.arange(h.shape[0], device=h.device), mask.sum(1) - 1]
    raise ValueError(f"pool: {how!r} is not one of {POOLS}")


class SequenceClassifier(Pretrained, nn.Module):
    """Classify sequences (B, L, d_input) into ``n_classes``.

    Args:
        d_input: input channels per step.
        n_classes: number of classes.
        d_model: width H of the SSM blocks.
        n_layers: number of residual blocks.
        layer: the SSM layer: a kind (``"s4d"``, ``"s4"``, ``"linoss"``, ``"dlinoss"``, ``"s4nd"``) with
            its defaults, a config (``S4DConfig(d_state=32)``) or a mapping
            ``{"kind": "s4d", "d_state": 32}`` (see :mod:`statespaces.layers.config`).
        pool: ``"mean"`` over time (padding-aware with ``lengths``), ``"max"`` over time per channel
            (padding-aware; a pattern detected anywhere in the series counts), ``"meanmax"`` both side by side
            (2H features into the head: "concat pooling"), ``"last"`` step, or ``"none"`` for per-step
            outputs (B, L, n_classes): per-step regression or sequence-to-sequence heads.
        norm: ``"layer"`` or ``"batch"``, passed to every :class:`ResidualBlock`.
        prenorm: normalize before the layer (default) or after the residual, passed to every
            :class:`ResidualBlock`.
        dropout: dropout probability, passed to every :class:`ResidualBlock`.
        mixing: ``"glu"`` (default) or ``"linear"``, passed to every :class:`ResidualBlock`.
        stem: kernel size K of a convolutional stem (0, the default: none). With K > 0 the encoder is a
            convolution over time, ``Conv1d(d_input, d_model, K)`` with "same" zero padding, followed by
            GELU, instead of the pointwise linear map: local shape detectors ahead of the SSM blocks
            (cf. the convolutional time-series classifiers of thesis §7.3's baselines). K must be odd.
        stem_dilations: with ``stem``, the dilations of the stem's kernels; the d_model output channels
            are split evenly over them (multi-scale: ``(1, 2, 4, 8)`` sees K, 2K, 4K, 8K steps).

    Shapes: forward(x (B, L, d_input), lengths (B,) optional) -> logits (B, n_classes), or
    (B, L, n_classes) with ``pool="none"``. ``n_classes=1`` gives a scalar regression head.

    Irregular sampling (thesis §4.2.4): ``forward(x, dt=...)`` with (B, L) positive multipliers of
    the step of each interval, or ``timestamps=`` (B, L) strictly increasing sample times (converted
    once by :func:`~statespaces.layers.irregular.check_intervals`, the check every layer uses), is
    passed to every block (:class:`~statespaces.blocks.ResidualBlock`); layers without an
    irregular-sampling path (S4, S4ND) raise ``ValueError`` naming the layer; bidirectional layers run their
    anti-causal half in mirrored time (:func:`~statespaces.layers.irregular.reversed_steps`).

    ``clock_intervals=True``: input channel 0 is a clock, ``time / clock_scale`` (``data.time_channel``:
    ``clock_scale`` = L - 1 of the training grid, an integer, times in units of the median interval), and the
    layers step over its intervals, ``timestamps = x[..., 0] * clock_scale`` (an int64 buffer saved with the
    weights).

    Padding: with ``lengths`` (right-padded batch), steps ``t >= lengths[b]`` never influence the
    output of sequence b -- neither the pooling nor any block, in either direction of a
    bidirectional layer, nor BatchNorm statistics: every block zeroes its layer's input there
    (:class:`~statespaces.blocks.ResidualBlock`). With ``pool="none"`` the outputs at padded steps are
    unspecified.
    """

    upgrade_config = staticmethod(upgrade_layer_arguments)    # reads models saved with layer_kwargs

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        d_model: int = 64,
        n_layers: int = 4,
        layer: LayerSpec = "s4d",
        pool: str = "mean",
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        mixing: str = "glu",
        stem: int = 0,
        stem_dilations: Union[int, Sequence[int]] = (1,),
        clock_intervals: bool = False,
        clock_scale: int = 1,
    ) -> None:
        super().__init__()
        self.d_input = check_positive_int("d_input", d_input)
        self.clock_intervals = check_flag("clock_intervals", clock_intervals)
        if self.clock_intervals:
            # saved with the weights: a checkpoint keeps the scale of the clock it was trained on; an integer, which
            # model.to(dtype) leaves exact (a bfloat16 1459 reads 1456)
            self.register_buffer("clock_scale", torch.tensor(check_positive_int("clock_scale", clock_scale)))
            if stem:
                raise ValueError("clock_intervals: a convolutional stem assumes a regular grid; use stem=0")
        check_positive_int("n_classes", n_classes, 1)
        check_positive_int("d_model", d_model)
        check_positive_int("n_layers", n_layers)
        self.pool = check_choice("pool", pool, POOLS + ("none",))
        self.stem = check_positive_int("stem", stem, 0)
        if self.stem:
            self.encoder: nn.Module = ConvStem(d_input, d_model, self.stem, stem_dilations)
        else:
            self.encoder = nn.Linear(d_input, d_model)
        self.layer_config = sequence_layer(layer)
        self.blocks = nn.ModuleList(
            # build() is typed nn.Module; ResidualBlock checks at run time that it is an SSM layer
            ResidualBlock(cast(Union[SSMLayer, S4ND], self.layer_config.build(d_model, i)), norm=norm,
                          prenorm=prenorm, dropout=dropout, mixing=mixing)
            for i in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if check_flag("prenorm", prenorm) else nn.Identity()
        self.decoder = nn.Linear(2 * d_model if self.pool == "meanmax" else d_model, n_classes)

    def extra_repr(self) -> str:
        clock = f", clock_intervals=True, clock_scale={int(self._clock_scale())}" if self.clock_intervals else ""
        return f"d_input={self.d_input}, pool={self.pool!r}{clock}"

    def _clock_scale(self) -> Tensor:
        return cast(Tensor, self.clock_scale)

    @public
    def forward(self, x: Tensor, lengths: Optional[Tensor] = None, rate: float = 1.0,
                dt: Optional[Tensor] = None, timestamps: Optional[Tensor] = None) -> Tensor:
        """Logits for x (B, L, d_input); ``lengths`` (B,) of a right-padded batch; ``rate`` multiplies
        every layer's step; ``dt`` / ``timestamps`` (B, L): irregular sampling (see the class notes)."""
        weight = self.decoder.weight
        check_sequence(x, self.d_input, weight.dtype, device=weight.device, channels="d_input")
        mask = length_mask(lengths, x.shape[0], x.shape[1], x.device)
        if self.clock_intervals:
            if dt is not None or timestamps is not None:
                raise ValueError("clock_intervals: the sample times are input channel 0 (the clock); give no dt= or "
                                 "timestamps= beside it")
            timestamps = x[..., 0].to(torch.float64) * self._clock_scale().to(torch.float64)
        steps = check_intervals(x, dt, timestamps, mask)    # timestamps -> intervals once, for every block
        if self.stem and steps is not None:
            raise ValueError("stem: a convolution over steps assumes a regular grid; irregular sampling (dt= or "
                             "timestamps=) needs stem=0")
        u = x.to(weight.dtype)                               # half precision: computed in the module's precision
        h = self.encoder(u) if not self.stem else self.encoder(u, mask)
        for block in self.blocks:
            h = block(h, rate=rate, mask=mask) if steps is None else block(h, rate=rate, mask=mask, dt=steps)
        h = self.final_norm(h)
        if self.pool == "none":
            out = self.decoder(h)
            check_result(self, out, "logits", input=x)       # NaN/inf: names the parameters or an overflow
            return out
        out = self.decoder(pool_over_time(h, mask, self.pool))
        check_result(self, out, "logits", input=x)
        return out
