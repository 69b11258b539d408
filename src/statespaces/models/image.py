r"""Isotropic image (and video) classifiers with S4ND or convolution mixers (thesis §9.4.3, app. I.2.3).

Backbone choice: the **isotropic** deep SSM backbone of §7.2 (the one the thesis uses for its
CIFAR-10 continuous-capability experiments, Table 9.3), not ConvNeXt. Every layer keeps the input
grid: a pointwise encoder, ``n_layers`` residual blocks, global mean pooling, a linear head. With
the S4ND mixer every operation is either pointwise or a continuous-kernel convolution, so the
whole network is resolution-agnostic: running it on another grid only needs the per-axis
step multiplier ``rate = L_train / L_new`` (:func:`statespaces.layers.s4nd.resolution_rate`). A
strided/patchified stem (ConvNeXt, ViT) would bake the training resolution into its weights.

The Conv baseline is the same network with the S4ND layer replaced by a ``kernel_size``^D
convolution (``groups=1`` by default, so its parameter count 9H^2 per layer at k = 3 roughly
matches S4ND's ~4NH + 2H per layer for N = 64 at H = 64; ``depthwise=True`` gives the depthwise
variant). It ignores ``rate``: a discrete kernel has no notion of the sampling step, which is
exactly the contrast of Table 9.4.

Block: :class:`statespaces.blocks.ResidualBlock` (pre-norm, untied dropout) on (B, *spatial, H)::

    x -> LayerNorm -> layer (S4ND / Conv) -> GELU -> dropout -> Linear(H, 2H) -> GLU -> dropout -> + x

Models saved before the blocks were ResidualBlocks (``ImageBlock``, ``layer_kwargs``, ``d_state``)
load unchanged: their arguments and weight names are translated (:meth:`ImageClassifier.upgrade_config`,
:meth:`ImageClassifier.upgrade_state_dict`).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .._checks import (
    check_batch,
    check_device,
    check_dtype_compatible,
    check_finite,
    check_positive_int,
    check_real_float,
    check_result,
    public,
)
from ..blocks import ResidualBlock
from ..layers.config import LayerSpec, layer_config
from ..layers.s4nd import S4ND, S4NDConfig, check_rates
from ..serialization import Pretrained

Tensor = torch.Tensor


class ConvND(nn.Module):
    r"""Channels-last ``kernel_size``^D convolution with 'same' zero padding; (B, *spatial, H) -> same.

    ``rate`` is accepted for interface parity with :class:`S4ND` and ignored.
    """

    def __init__(self, d_model: int, dims: int = 2, kernel_size: int = 3, depthwise: bool = False) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        if dims not in (1, 2, 3):
            raise ValueError(f"ConvND supports dims 1, 2, 3, got {dims}")
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.d_model, self.dims = d_model, dims
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
        self.conv = conv(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model if depthwise else 1)

    def forward(self, x: Tensor, rate: Union[float, Sequence[float]] = 1.0) -> Tensor:
        """(B, L_1, ..., L_D, H) -> (B, L_1, ..., L_D, H). ``rate`` is accepted for the SSM layers' signature and
        ignored: a convolution of fixed taps has no resolution to change (the baseline of thesis §9.4.3)."""
        return self.conv(x.movedim(-1, 1)).movedim(1, -1)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, dims={self.dims}, kernel_size={self.conv.kernel_size[0]}, "
                f"depthwise={self.conv.groups > 1}")


class ImageClassifier(Pretrained, nn.Module):
    r"""Classify images (B, L_1, ..., L_D, d_input), D = ``dims`` (2 for images, 3 for video).

    Args:
        d_input: input channels (1 for Fashion-MNIST).
        n_classes: number of classes.
        dims: spatial axes D.
        d_model: width H.
        n_layers: residual blocks.
        layer: ``"conv"`` (the Conv1D/Conv2D/Conv3D baseline), or the S4ND layer: ``"s4nd"`` (default), an
            :class:`~statespaces.layers.s4nd.S4NDConfig` or a mapping ``{"kind": "s4nd", "d_state": 32,
            "bandlimit": 0.5, ...}``. A kind or mapping gets ``dims`` from this model and ``conv="auto"``
            (exact Toeplitz matmuls on small grids) unless it sets them; a config's ``dims`` must equal
            ``dims``. With a ``seed``, block i's layer is seeded with ``seed + 16 i``.
        kernel_size: kernel size of the Conv baseline.
        depthwise: depthwise convolutions in the Conv baseline.
        dropout: in every block.

    Shapes: forward(x (B, *spatial, d_input), rate) -> logits (B, n_classes). ``rate`` is one number
    or one per axis (``L_train / L_new``), used by S4ND and ignored by the Conv baseline.
    """

    def __init__(
        self,
        d_input: int = 1,
        n_classes: int = 10,
        dims: int = 2,
        d_model: int = 64,
        n_layers: int = 4,
        layer: Union[str, LayerSpec] = "s4nd",
        kernel_size: int = 3,
        depthwise: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.d_input = check_positive_int("d_input", d_input)
        check_positive_int("n_classes", n_classes, 2)
        check_positive_int("d_model", d_model)
        self.dims = check_positive_int("dims", dims)
        check_positive_int("n_layers", n_layers)
        if isinstance(layer, str) and layer.lower() == "conv":
            self.layer, self.layer_config = "conv", None
        else:
            if isinstance(layer, str):
                layer = {"kind": layer}
            if isinstance(layer, Mapping):
                layer = {"dims": dims, "conv": "auto", **layer}
            spec = layer_config(layer)
            if not isinstance(spec, S4NDConfig):
                raise ValueError(f"ImageClassifier takes layer='conv' or an S4ND layer (kind 's4nd'), "
                                 f"got kind {spec.kind!r}")
            if spec.dims != dims:
                raise ValueError(f"the S4ND layer has dims={spec.dims} but the model has dims={dims}; make them equal")
            self.layer, self.layer_config = "s4nd", spec

        def mixer(i: int) -> Any:             # an S4ND, or the ConvND baseline (same N-D layer interface)
            if self.layer_config is None:
                return ConvND(d_model, dims, kernel_size, depthwise)
            return self.layer_config.build(d_model, i)   # seeded config: layer i gets seed + BLOCK_SEED_STRIDE i

        self.encoder = nn.Linear(d_input, d_model)
        self.blocks = nn.ModuleList(
            ResidualBlock(mixer(i), norm="layer", prenorm=True, dropout=dropout, mixing="glu", tie_dropout=False)
            for i in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, n_classes)

    def extra_repr(self) -> str:
        return (f"d_input={self.d_input}, n_classes={self.decoder.out_features}, dims={self.dims}, "
                f"d_model={self.encoder.out_features}, n_layers={len(self.blocks)}, layer={self.layer!r}")

    @staticmethod
    def upgrade_config(config: Dict[str, Any]) -> Dict[str, Any]:
        """Arguments saved before the layer configs (``layer="s4nd"``, ``d_state``, ``bandlimit``,
        ``layer_kwargs``) -> ``layer`` as one S4ND table; newer arguments are returned unchanged."""
        old = {k: config[k] for k in ("d_state", "bandlimit", "layer_kwargs") if k in config}
        if not old:
            return config
        config = {k: v for k, v in config.items() if k not in old}
        if str(config.get("layer", "s4nd")).lower() != "conv":
            table: Dict[str, Any] = {"kind": "s4nd", "conv": "auto"}
            if "d_state" in old:
                table["d_state"] = old["d_state"]
            if old.get("bandlimit") is not None:
                table["bandlimit"] = old["bandlimit"]
            table.update(old.get("layer_kwargs") or {})
            config["layer"] = table
        return config

    @staticmethod
    def upgrade_state_dict(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Weights saved with the former ``ImageBlock`` (``blocks.i.mixer.*``, ``blocks.i.norm.*``) ->
        the :class:`ResidualBlock` names (``blocks.i.layer.*``, ``blocks.i.norm.norm.*``)."""
        if not any(re.match(r"blocks\.\d+\.mixer\.", k) for k in state):
            return state
        out = {}
        for k, v in state.items():
            k = re.sub(r"^(blocks\.\d+\.)mixer\.", r"\1layer.", k)
            k = re.sub(r"^(blocks\.\d+\.)norm\.(weight|bias)$", r"\1norm.norm.\2", k)
            out[k] = v
        return out

    def set_bandlimit(self, alpha: Optional[float]) -> None:
        """Set (or with None remove) the bandlimit α of every S4ND layer, e.g. for evaluation only."""
        for m in self.modules():
            if isinstance(m, S4ND):
                m.bandlimit = alpha

    @public
    def forward(self, x: Tensor, rate: Union[float, Sequence[float]] = 1.0) -> Tensor:
        """Images (B, L_1, ..., L_D, d_input) -> logits (B, n_classes); ``rate`` per axis (or one for all) changes
        the resolution the S4ND layers assume (thesis §9.3.2: 0.5 for an image sampled twice as finely)."""
        check_real_float("input", x)
        check_device("input", x, self.encoder.weight.device)
        if x.dim() != self.dims + 2 or x.shape[-1] != self.d_input:
            raise ValueError(
                f"input must have shape (batch, {self.dims} spatial axes, d_input={self.d_input}) (channels last), "
                f"got {tuple(x.shape)}"
            )
        check_batch("input", x)
        if any(s == 0 for s in x.shape[1:-1]):
            raise ValueError(f"input of shape {tuple(x.shape)} has an empty spatial axis; every axis needs >= 1 point")
        check_dtype_compatible("input", x, self.encoder.weight.dtype)
        check_finite("input", x)
        check_rates(rate, self.dims)
        h = self.encoder(x.to(self.encoder.weight.dtype))    # half precision: computed in the module's precision
        for block in self.blocks:
            h = block(h, rate=rate)
        h = self.final_norm(h)
        out = self.decoder(h.flatten(1, -2).mean(1))
        check_result(self, out, "logits", input=x)       # NaN/inf: names the parameters or an overflow
        return out
