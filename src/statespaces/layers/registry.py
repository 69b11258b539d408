"""Build an SSM layer from its name, so models and the CLI can take ``layer="s4d"`` etc."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .._checks import check_choice
from .base import SSMLayer

#: name -> (module, class) of each layer; imported on first use.
LAYERS = {
    "s4d": ("statespaces.layers.s4d", "S4D"),
    "s4": ("statespaces.layers.s4", "S4"),
    "linoss": ("statespaces.layers.linoss", "LinOSS"),
    "dlinoss": ("statespaces.layers.dlinoss", "DLinOSS"),
    "s5": ("statespaces.layers.s5", "S5"),
}


def available_layers() -> tuple:
    """Names of the layers this installation provides."""
    names = []
    for name, (module, _) in LAYERS.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return tuple(names)


def make_layer(name: str, d_model: int, **kwargs: Any) -> SSMLayer:
    """``make_layer("s4d", 64, d_state=64, init="inv")`` -> an :class:`SSMLayer`."""
    name = check_choice("layer", name, available_layers())
    module, cls = LAYERS[name]
    return getattr(importlib.import_module(module), cls)(d_model, **kwargs)
