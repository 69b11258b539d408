"""Layer kinds: ``kind -> (layer class, config class)``, so models and the CLI take ``layer="s4d"``,
``{"kind": "linoss", "n_oscillators": 32}`` or an :class:`~statespaces.layers.config.LayerConfig`."""
from __future__ import annotations

import importlib.util

from torch import nn

from .config import LAYERS, LayerSpec, config_class, layer_class, layer_config, register_layer

__all__ = ["LAYERS", "available_layers", "config_class", "layer_class", "make_layer", "register_layer"]


def available_layers() -> tuple:
    """Kinds of the layers this installation provides."""
    return tuple(kind for kind, (module, layer, _) in LAYERS.items()
                 if isinstance(layer, type) or importlib.util.find_spec(module) is not None)


def make_layer(layer: LayerSpec, d_model: int) -> nn.Module:
    """``make_layer(S4DConfig(d_state=32), 64)``, ``make_layer("s4d", 64)`` or
    ``make_layer({"kind": "s4d", "init": "inv"}, 64)`` -> the layer (see :func:`layer_config`)."""
    return layer_config(layer).build(d_model)
