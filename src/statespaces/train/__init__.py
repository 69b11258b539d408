"""Training: configuration, loop, checkpoints."""
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .loop import build_model, evaluate, train

__all__ = ["TrainConfig", "train", "evaluate", "build_model", "save_checkpoint", "load_checkpoint"]
