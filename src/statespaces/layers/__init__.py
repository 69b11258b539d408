"""Linear SSM layers sharing one contract (see :mod:`statespaces.layers.base`)."""
from .base import DiagonalSSM, DiagonalSystem, SSMLayer
from .linoss import LinOSS
from .s4d import S4D
from .s4nd import S4ND

__all__ = ["SSMLayer", "DiagonalSSM", "DiagonalSystem", "S4D", "LinOSS", "S4ND"]
