"""Linear SSM layers sharing one contract (see :mod:`statespaces.layers.base`)."""
from .base import DiagonalSSM, DiagonalSystem, SSMLayer
from .config import LayerConfig, layer_config
from .diagonalized_s4 import DiagonalizedS4
from .dlinoss import DLinOSS, DLinOSSConfig
from .linoss import LinOSS, LinOSSConfig
from .modes import Modes
from .registry import make_layer, register_layer
from .s4 import S4, S4_INITS, S4Config, s4_init
from .s4d import S4D, S4DConfig
from .s4nd import S4ND, S4NDConfig
from .s5 import S5, S5Config

__all__ = ["SSMLayer", "DiagonalSSM", "DiagonalSystem", "S4D", "S4", "DiagonalizedS4", "S4_INITS", "s4_init",
           "LinOSS", "DLinOSS", "S4ND", "S5", "Modes", "LayerConfig", "layer_config", "make_layer", "register_layer",
           "S4DConfig",
           "S4Config", "LinOSSConfig", "DLinOSSConfig", "S4NDConfig", "S5Config"]
