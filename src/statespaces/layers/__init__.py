"""Linear SSM layers sharing one contract (see :mod:`statespaces.layers.base`)."""
from .base import DiagonalSSM, DiagonalSystem, SSMLayer
from .dlinoss import DLinOSS
from .linoss import LinOSS
from .modes import Modes
from .s4 import S4, S4_INITS, DiagonalizedS4, s4_init
from .s4d import S4D
from .s4nd import S4ND
from .s5 import S5

__all__ = ["SSMLayer", "DiagonalSSM", "DiagonalSystem", "S4D", "S4", "DiagonalizedS4", "S4_INITS", "s4_init",
           "LinOSS", "DLinOSS", "S4ND", "S5", "Modes"]
