"""Training: configuration, loop, checkpoints."""
from .checkpoint import CorruptCheckpointError, load_checkpoint, save_checkpoint
from .config import PRESETS, ConfigError, TrainConfig, build_config
from .loop import RunExistsError, build_model, evaluate, evaluate_checkpoint, load_trained, train

__all__ = [
    "TrainConfig", "build_config", "PRESETS", "train", "evaluate", "evaluate_checkpoint", "load_trained",
    "build_model", "save_checkpoint", "load_checkpoint", "CorruptCheckpointError", "ConfigError", "RunExistsError",
]
