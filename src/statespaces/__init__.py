"""statespaces: structured state space sequence models (HiPPO, S4, S4D, LinOSS) in PyTorch.

The public API is re-exported here; see the README for a quickstart.
"""
from ._version import __version__  # noqa: F401  (statespaces.__version__)
from .blocks import ResidualBlock
from .discretize import DISCRETIZATIONS, discretize_dense, discretize_diagonal
from .layers import S4, S4D, S4ND, LinOSS, SSMLayer
from .models import SaShiMi, SequenceClassifier, SSMLanguageModel
from .optim import param_groups
from .serialization import load_pretrained, register_trainer_loader


def _load_trained(path: str):
    """``statespaces train`` checkpoints for :func:`load_pretrained` (the trainer is imported on use)."""
    from .train import load_trained

    return load_trained(path)[0]


register_trainer_loader(_load_trained)

#: Subpackages reachable as attributes (``statespaces.hippo.transition``), imported on first use.
SUBPACKAGES = ("hippo", "discretize", "kernels", "ops", "layers", "blocks", "models", "data", "train",
               "analysis", "reproduce", "export", "serialization", "optim", "backend", "cli")


def __getattr__(name: str):
    if name in SUBPACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'statespaces' has no attribute {name!r}")

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
    "load_pretrained",
]
