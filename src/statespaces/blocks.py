r"""The residual SSM block of the deep SSM architecture (thesis §7.2, Fig. 7.1).

    x -> [norm] -> SSM layer -> GELU -> dropout -> mixing (GLU or linear) -> dropout -> + x -> [norm]

Pre-norm applies the norm before the layer, post-norm after the residual sum. Dropout is tied
across the sequence (one mask per (batch, channel), §7.2) when ``tie_dropout``.

Padding. ``forward(x, mask=...)`` takes a boolean mask (B, L), True at valid steps (see
:func:`length_mask` for right-padded batches with ``lengths``). The input of the SSM layer is zeroed
at masked steps (after the norm: a norm's bias would turn zeros into nonzeros), and BatchNorm takes
its statistics over valid steps only. An LTI layer -- causal, anti-causal (bidirectional) or
MIMO -- maps a zero input to a zero contribution, so masked steps cannot influence valid outputs in
either direction; a nonzero initial state only adds the zero-input response, which does not read
the input at all. Outputs at masked steps are unspecified.

Irregular sampling. ``forward(x, dt=...)`` or ``forward(x, timestamps=...)`` ((B, L), thesis §4.2.4;
:mod:`statespaces.layers.irregular`) is handed to the layer, which validates it and runs its
time-varying scan (S4D, S5, LinOSS, D-LinOSS); a layer without that path (S4, an N-D layer such as
S4ND) or a bidirectional one raises ``ValueError`` naming the layer. The norm, mixing and residual
act per step and are unchanged.

Images and video. The same block serves a channels-last N-D layer (:class:`~statespaces.layers.s4nd.S4ND`,
or any module with ``d_model``, ``dims`` and ``forward(x, rate=...)`` on (B, *spatial, H), such as
the Conv baseline of :mod:`statespaces.models.image`): the norm is over channels (BatchNorm over
batch and every spatial axis), tied dropout shares one mask per (batch, channel) over all spatial
axes, and ``step``/``state`` stream frames along the first (causal) axis of an S4ND.
"""
from __future__ import annotations

import numbers
import os
import sys
import warnings
from types import FrameType
from typing import Any, Dict, Optional, Tuple, Union, cast

import torch
from torch import nn

from ._checks import (
    check_batch,
    check_choice,
    check_device,
    check_dtype_compatible,
    check_flag,
    check_real_float,
    check_result,
    check_sequence,
    check_step_input,
    public,
    tracing,
)
from .layers.base import SSMLayer, no_irregular_path
from .layers.irregular import check_intervals
from .layers.s4nd import S4ND, check_rates
from .serialization import Pretrained

Tensor = torch.Tensor


def check_lengths(lengths: Any, batch: int, L: int, device: Union[str, torch.device],
                  name: str = "lengths") -> Tensor:
    """The lengths (B,) of a right-padded batch, checked (an integer tensor with values in [1, L]) and moved to
    ``device``; ``TypeError`` / ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(lengths, torch.Tensor) or lengths.is_floating_point() or lengths.is_complex() \
            or lengths.dtype == torch.bool:
        got = lengths.dtype if isinstance(lengths, torch.Tensor) else type(lengths).__name__
        raise TypeError(f"{name} must be an integer tensor (B,), got {got}")
    if lengths.device.type == "meta" and torch.device(device).type != "meta":
        raise ValueError(f"{name} is on the meta device (no values); give a tensor of the lengths on a real device")
    lengths = lengths.to(device)
    if lengths.shape != (batch,) or (not tracing() and (bool((lengths < 1).any()) or bool((lengths > L).any()))):
        # (values read on the host only when not traced: torch.export of a model taking lengths has no values)
        raise ValueError(f"{name} must be (B={batch},) integers in [1, L={L}], got {lengths.tolist()}")
    return lengths


def length_mask(lengths: Optional[Tensor], batch: int, L: int, device: torch.device) -> Optional[Tensor]:
    """Boolean mask (B, L), True at the valid steps ``t < lengths[b]`` of a right-padded batch.

    ``lengths``: integer tensor (B,) with values in [1, L], or None (no padding: returns None).
    """
    if lengths is None:
        return None
    lengths = check_lengths(lengths, batch, L, device)
    return torch.arange(L, device=device)[None, :] < lengths[:, None]


def check_mask(mask: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
    """Validate a padding mask for x (B, L, H): a bool tensor (B, L) on x's device, or None."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool tensor (B, L) (True at valid steps), got {got}")
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mask must have shape (B, L) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    return mask.to(x.device)


def masked_batch_norm(bn: nn.BatchNorm1d, x: Tensor, mask: Tensor) -> Tensor:
    """``bn`` applied to x (B, L, H) with its batch statistics (and running-stat updates) taken over
    the steps where ``mask`` (B, L) is True only; identical to ``bn`` when every step is valid.
    In eval mode (running statistics) every step is normalized independently, as usual."""
    if not bn.training and bn.track_running_stats and bn.running_mean is not None:
        return bn(x.transpose(1, 2)).transpose(1, 2)
    valid = mask.unsqueeze(-1)
    n = int(mask.sum())
    if n <= 1:
        raise ValueError(f"BatchNorm in training needs more than 1 valid step per channel, got {n}")
    xv = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
    mean = xv.sum((0, 1)) / n
    d = torch.where(valid, x - mean, torch.zeros((), dtype=x.dtype, device=x.device))
    var = (d * d).sum((0, 1)) / n
    if bn.training and bn.track_running_stats and bn.running_mean is not None:
        assert bn.num_batches_tracked is not None and bn.running_var is not None   # track_running_stats
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            f = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - f).add_(f * mean.detach().to(bn.running_mean.dtype))
            bn.running_var.mul_(1 - f).add_(f * (var.detach() * n / (n - 1)).to(bn.running_var.dtype))
    y = (x - mean) * torch.rsqrt(var + bn.eps)
    if bn.affine:
        y = y * bn.weight + bn.bias
    return y


def _dropout_p(p: Any) -> float:
    """A dropout probability: a real number in [0, 1) (1 would zero every activation)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"dropout probability must be a number in [0, 1), got {p!r} ({type(p).__name__})")
    q = float(p)
    if not 0.0 <= q < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return q


class DropoutNd(nn.Module):
    """Dropout with one mask per (batch, channel), shared across the length axis of (B, L, H) (every
    spatial axis of (B, *spatial, H))."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p: float = _dropout_p(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = torch.rand(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1], device=x.device) >= self.p
        return x * mask.to(x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _SeqNorm(nn.Module):
    """LayerNorm over channels, or BatchNorm over (batch, length), for (B, L, H) input (over batch and
    every spatial axis for (B, *spatial, H))."""

    def __init__(self, d_model: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.norm = nn.LayerNorm(d_model) if kind == "layer" else nn.BatchNorm1d(d_model)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if self.kind == "layer":
            return self.norm(x)      # per step: padding cannot reach valid steps
        if mask is not None:
            return masked_batch_norm(cast(nn.BatchNorm1d, self.norm), x, mask)
        if x.dim() != 3:                                   # (B, *spatial, H): statistics over all positions
            return self.norm(x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)).transpose(1, 2).reshape(x.shape)
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def noncausal_reason(layer: nn.Module) -> Optional[str]:
    """Why ``layer``'s output at step t can depend on steps after t, or None for a causal layer.

    A bidirectional layer (``bidirectional=True``: S4D, S4, S5, LinOSS, D-LinOSS) adds an
    anti-causal kernel; an N-D layer (:class:`~statespaces.layers.s4nd.S4ND`) is non-causal when it
    is two-sided along its first axis, the sequence axis of a (B, L, H) input. These are the settings
    that make the layers refuse a recurrent state (``return_state`` / ``step``), which is how
    generation noticed before the models checked them when built."""
    if getattr(layer, "bidirectional", False):
        mode = getattr(layer, "bidirectional_mode", None)         # LinOSS / D-LinOSS: "sum" or "concat"
        return f"bidirectional={mode!r}" if isinstance(mode, str) else "bidirectional=True"
    two_sided = getattr(layer, "two_sided", None)
    if two_sided is not None and len(two_sided) and bool(two_sided[0]):
        return f"two-sided along the sequence axis, bidirectional={tuple(two_sided)}"
    return None


def check_causal(model: nn.Module, what: str) -> None:
    """Refuse a model meant to be causal (its output at step t sees only steps <= t) whose residual
    blocks hold a non-causal layer, and warn once if any block uses BatchNorm.

    Raises ``ValueError`` naming the first offending layer and the setting to change: trained on
    next-step prediction, such a model reads the answer from later steps and its loss means nothing.
    BatchNorm is only warned about (``UserWarning``): in training mode its batch statistics include
    later steps, so earlier outputs move slightly with later inputs; eval mode (running statistics) is
    causal, and ``norm="layer"`` is causal in both modes.
    """
    batch_norm = False
    for name, module in model.named_modules():
        if not isinstance(module, ResidualBlock):
            continue
        why = noncausal_reason(module.layer)
        if why is not None:
            fix = "bidirectional=(False, ...)" if "two-sided" in why else "bidirectional=False"
            raise ValueError(
                f"{what} must be causal, but its layer {name}.layer ({type(module.layer).__name__}) is not: "
                f"{why}, so its output at step t sees later steps and a next-step loss would read the answer; "
                f"set {fix} in the layer setting (layer={{'kind': ..., 'bidirectional': False}}), or use a model "
                "that sees the whole sequence at once (SequenceClassifier, SSMForecaster)"
            )
        batch_norm = batch_norm or module.norm.kind == "batch"
    if batch_norm:
        warnings.warn(
            f"{what} uses norm='batch': in training mode BatchNorm's batch statistics include later steps, so "
            "outputs before step t depend on step t while training (eval mode, with running statistics, is "
            "causal); norm='layer' keeps the model causal in training too",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )


def _user_stacklevel() -> int:
    """``stacklevel`` for a warning raised by this function's caller that points at the first frame
    outside this package (the user's line building the model, however deeply the package built it)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame: Optional[FrameType] = sys._getframe(1)          # the caller of warnings.warn: stacklevel 1
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


class ResidualBlock(Pretrained, nn.Module):
    """One residual block around any SSM layer.

    Args:
        layer: an :class:`~statespaces.layers.base.SSMLayer` of width H, or a channels-last N-D layer
            (:class:`~statespaces.layers.s4nd.S4ND`; see the module docstring).
        norm: ``"layer"`` or ``"batch"``.
        prenorm: normalize before the layer (default) or after the residual.
        dropout: dropout probability (tied across length if ``tie_dropout``).
        mixing: ``"glu"`` (Linear H->2H then GLU, default) or ``"linear"`` (H->H).

    Shapes: (B, L, H) -> (B, L, H), or (B, *spatial, H) -> same with an N-D layer. ``step`` maps
    (B, H) -> (B, H) with the layer's state (a frame (B, *frame, H) with an S4ND).
    ``forward(x, mask=m)`` with a bool mask (B, L) (True = valid step): masked steps never influence
    the outputs at valid steps (see the module docstring); their own outputs are unspecified.
    """

    def __init__(
        self,
        layer: Union[SSMLayer, S4ND],
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        mixing: str = "glu",
        tie_dropout: bool = True,
    ) -> None:
        super().__init__()
        self.spatial = not isinstance(layer, SSMLayer)
        if self.spatial and not (isinstance(layer, nn.Module) and isinstance(getattr(layer, "d_model", None), int)
                                 and isinstance(getattr(layer, "dims", None), int)):
            raise TypeError(f"layer must be an SSMLayer (S4D, S4, LinOSS, ...) or an N-D layer with d_model and dims "
                            f"(S4ND), got {type(layer).__name__}")
        H = layer.d_model
        self.spatial_dims: int = int(cast(int, layer.dims)) if self.spatial else 1     # axes of an N-D input
        self.layer = layer
        self.prenorm = check_flag("prenorm", prenorm)
        self.norm = _SeqNorm(H, check_choice("norm", norm, ("layer", "batch")))
        self.mixing = check_choice("mixing", mixing, ("glu", "linear"))
        self.activation = nn.GELU()
        self.dropout = DropoutNd(dropout) if check_flag("tie_dropout", tie_dropout) else nn.Dropout(_dropout_p(dropout))
        self.output = nn.Linear(H, 2 * H if self.mixing == "glu" else H)

    @public
    def initial_state(self, batch_size: int, *shape) -> Tensor:
        """The layer's zero state for ``step`` / ``forward(x, state=...)`` (its ``initial_state``; an
        S4ND also takes the frame shape)."""
        return self.layer.initial_state(batch_size, *shape)

    def _mix(self, y: Tensor) -> Tensor:
        y = self.output(self.dropout(self.activation(y)))
        return nn.functional.glu(y, dim=-1) if self.mixing == "glu" else y

    @public
    def forward(
        self,
        x: Tensor,
        state: Optional[Tensor] = None,
        return_state: bool = False,
        rate: float = 1.0,
        mask: Optional[Tensor] = None,
        dt: Optional[Tensor] = None,
        timestamps: Optional[Tensor] = None,
    ) -> Union[Tensor, Tuple[Tensor, Any]]:
        """Apply the block to x (B, L, H) -> (B, L, H) (an N-D layer: (B, *spatial, H)).

        Args:
            x: input. state, return_state, rate: as the layer's ``forward``.
            mask: bool (B, L), True at valid steps (see the module docstring).
            dt: irregular sampling, (B, L) positive multipliers of the layer's step per interval
                (thesis §4.2.4); passed to the layer, which validates it.
            timestamps: irregular sampling, (B, L) strictly increasing sample times (instead of dt).
        """
        irregular = dt is not None or timestamps is not None
        if irregular and self.spatial:
            raise no_irregular_path(self.layer)
        if self.spatial_dims != 1:      # a 1-D S4ND takes the sequence path (masks included)
            return self._forward_nd(x, state, return_state, rate, mask)
        check_sequence(x, self.layer.d_model, self.output.weight.dtype, device=self.output.weight.device, finite=False)
        x_in = x
        x = x.to(self.output.weight.dtype)    # half precision: computed in the block's precision, returned in x's
        mask = check_mask(mask, x)
        if mask is not None and return_state and not bool(mask.all()):
            raise ValueError("a state (state= or return_state=True) with a padding mask (lengths): the state after "
                             "the last step would include the padded steps; run each sequence's valid part (or "
                             "unpadded batches) to carry states")
        if irregular and mask is not None:       # padding of dt / timestamps: the row's first interval
            dt, timestamps = check_intervals(x, dt, timestamps, mask), None
        z = self.norm(x, mask) if self.prenorm else x
        if mask is not None:
            z = z.masked_fill(~mask.unsqueeze(-1), 0.0)   # after the norm, whose bias makes zeros nonzero
        out = self._run_layer(z, state, return_state, rate, dt, timestamps)
        y, new_state = out if return_state else (out, None)
        x = x + self.dropout(self._mix(y))
        if not self.prenorm:
            x = self.norm(x, mask)
        x = x.to(x_in.dtype)                  # cast first: a float16 output that overflows is refused too
        check_result(self, (x, new_state), input=x_in, state=state)     # NaN/inf: names the culprit
        return (x, new_state) if return_state else x

    def _run_layer(self, z: Tensor, state: Optional[Tensor], return_state: bool, rate,
                   dt: Optional[Tensor] = None, timestamps: Optional[Tensor] = None):
        """The layer on z, given only the keywords in use: a layer without a recurrent state (the
        ConvND baseline, also with ``dims=1``) takes no ``state`` / ``return_state``, and one without
        irregular sampling (custom modules) no ``dt`` / ``timestamps``. A stateful or irregular call
        still reaches the layer, which then names what it cannot do."""
        kw: Dict[str, Any] = {}
        if state is not None or return_state:
            kw.update(state=state, return_state=return_state)
        if dt is not None or timestamps is not None:
            kw.update(dt=dt, timestamps=timestamps)
        return self.layer(z, rate=rate, **kw)

    def _forward_nd(self, x: Tensor, state: Optional[Tensor], return_state: bool, rate, mask: Optional[Tensor]):
        """The block around an N-D layer on x (B, *spatial, H) (the layer checks x and rate)."""
        dims = self.spatial_dims
        if mask is not None:
            raise ValueError("mask pads (B, L, H) sequences; an N-D layer's input has no padding mask")
        self._check_nd("input", x, dims + 2)
        check_rates(rate, dims)
        x_in = x
        x = x.to(self.output.weight.dtype)    # half precision: computed in the block's precision, returned in x's
        z = self.norm(x) if self.prenorm else x
        out = self._run_layer(z, state, return_state, rate)
        y, new_state = out if return_state else (out, None)
        x = x + self.dropout(self._mix(y))
        if not self.prenorm:
            x = self.norm(x)
        x = x.to(x_in.dtype)
        check_result(self, (x, new_state), input=x_in, state=state)
        return (x, new_state) if return_state else x

    def extra_repr(self) -> str:
        return f"norm={self.norm.kind!r}, prenorm={self.prenorm}, mixing={self.mixing!r}"

    def _check_nd(self, name: str, x: Tensor, rank: int) -> None:
        """x must be a real float tensor (B, *spatial, H) of ``rank`` dims on the block's device."""
        check_real_float(name, x)
        check_device(name, x, self.output.weight.device)
        H = self.layer.d_model
        if x.dim() != rank or x.shape[-1] != H:
            want = "(batch, " + "".join(f"L{i + 1}, " for i in range(rank - 2)) + f"d_model={H})"
            raise ValueError(f"{name} must have shape {want} (channels last), got {tuple(x.shape)}")
        check_batch(name, x)
        check_dtype_compatible(name, x, self.output.weight.dtype)

    @public
    def step(self, x: Tensor, state: Tensor, rate: Optional[float] = None) -> Tuple[Tensor, Tensor]:
        """Recurrent step on x (B, H) (a frame (B, *frame, H) with an S4ND, which checks it); valid
        with LayerNorm (BatchNorm in eval mode also works).

        ``rate`` is handed to the layer's step; None (default) leaves the layer's own default: 1.0 for
        a layer, the frozen rate of a streaming step (:class:`statespaces.export.RealStep`)."""
        if self.spatial:
            self._check_nd("frame", x, self.spatial_dims + 1)
        else:
            check_step_input(x, self.layer.d_model, self.output.weight.dtype, self.output.weight.device)
        new = []

        def layer_step(z: Tensor) -> Tensor:
            y, s = self.layer.step(z, state) if rate is None else self.layer.step(z, state, rate)
            new.append(s)
            return y

        y = self.step_with(x, layer_step)
        check_result(self, (y, new[0]), "step output", x=x, state=state)
        return y, new[0]

    def step_with(self, x: Tensor, layer_step) -> Tensor:
        """The block's step around any one-step map of the layer, ``layer_step(z (B, H)) -> (B, H)``
        (a frame (B, *frame, H) with an S4ND): :meth:`step` passes ``layer.step``, a generation
        stepper (:mod:`statespaces.models.stepper`) passes the layer's stepper.

        In training mode with dropout it warns once: a step draws a new (batch, channel) mask each time, where
        ``forward`` ties one mask over the whole sequence, so stepping then is not the convolution view; so it does
        with BatchNorm, whose batch statistics are then one step's, not the sequence's."""
        if self.training and isinstance(self.dropout, DropoutNd) and self.dropout.p > 0 \
                and not self.__dict__.get("_warned_step_dropout", False):
            warnings.warn(f"{type(self).__name__}.step in training mode draws a new dropout mask at every step, while "
                          "forward ties one mask over the whole sequence (DropoutNd); the two views differ. Call "
                          ".eval() before stepping for inference", UserWarning, stacklevel=3)
            self.__dict__["_warned_step_dropout"] = True
        if self.training and self.norm.kind == "batch" and not self.__dict__.get("_warned_step_batchnorm", False):
            warnings.warn(f"{type(self).__name__}.step in training mode normalizes each step by the statistics of "
                          "that step's batch (and updates the running ones), while forward uses the whole "
                          "sequence's; the two views differ. Call .eval() before stepping for inference",
                          UserWarning, stacklevel=3)
            self.__dict__["_warned_step_batchnorm"] = True
        z = self.norm(x.unsqueeze(1)).squeeze(1) if self.prenorm else x
        y = layer_step(z)
        x = x + self.dropout(self._mix(y.unsqueeze(1))).squeeze(1)
        if not self.prenorm:
            x = self.norm(x.unsqueeze(1)).squeeze(1)
        return x
