"""Layer kinds: ``kind -> (layer class, config class)``, so models and the CLI take ``layer="s4d"``,
``{"kind": "linoss", "n_oscillators": 32}`` or an :class:`~statespaces.layers.config.LayerConfig`."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Tuple, Type

from .._config import ConfigError
from .config import LayerConfig, LayerSpec, layer_config

#: kind -> (module, layer class, config class); imported on first use.
LAYERS = {
    "s4d": ("statespaces.layers.s4d", "S4D", "S4DConfig"),
    "s4": ("statespaces.layers.s4", "S4", "S4Config"),
    "linoss": ("statespaces.layers.linoss", "LinOSS", "LinOSSConfig"),
    "dlinoss": ("statespaces.layers.dlinoss", "DLinOSS", "DLinOSSConfig"),
    "s4nd": ("statespaces.layers.s4nd", "S4ND", "S4NDConfig"),
    "s5": ("statespaces.layers.s5", "S5", "S5Config"),
}


def available_layers() -> tuple:
    """Kinds of the layers this installation provides."""
    return tuple(kind for kind, (module, _, _) in LAYERS.items() if importlib.util.find_spec(module) is not None)


def _entry(kind: str) -> Tuple[type, Type[LayerConfig]]:
    if not isinstance(kind, str) or kind.lower() not in LAYERS:
        raise ConfigError(f"unknown layer kind {kind!r}; valid: {', '.join(LAYERS)}")
    module, layer, config = LAYERS[kind.lower()]
    mod = importlib.import_module(module)
    return getattr(mod, layer), getattr(mod, config)


def layer_class(kind: str) -> type:
    """The layer class of ``kind``."""
    return _entry(kind)[0]


def config_class(kind: str) -> Type[LayerConfig]:
    """The config class of ``kind``."""
    return _entry(kind)[1]


def make_layer(layer: LayerSpec, d_model: int):
    """``make_layer(S4DConfig(d_state=32), 64)``, ``make_layer("s4d", 64)`` or
    ``make_layer({"kind": "s4d", "init": "inv"}, 64)`` -> the layer (see :func:`layer_config`)."""
    return layer_config(layer).build(d_model)
