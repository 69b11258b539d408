"""statespaces: structured state space sequence models (HiPPO, S4, S4D, LinOSS) in PyTorch.

The public API is re-exported here; see the README for a quickstart.
"""
from .blocks import ResidualBlock
from .discretize import DISCRETIZATIONS, discretize_dense, discretize_diagonal
from .layers import S4, S4D, S4ND, LinOSS, SSMLayer
from .models import SaShiMi, SequenceClassifier, SSMLanguageModel
from .optim import param_groups

__version__ = "0.1.0"

__all__ = [
    "S4D",
    "S4",
    "LinOSS",
    "S4ND",
    "SSMLayer",
    "ResidualBlock",
    "SequenceClassifier",
    "SSMLanguageModel",
    "SaShiMi",
    "param_groups",
    "discretize_diagonal",
    "discretize_dense",
    "DISCRETIZATIONS",
]
