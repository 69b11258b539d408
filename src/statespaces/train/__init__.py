"""Training: configuration, the engine (``fit`` with ``Task`` objects), runs (checkpoints, resume,
DDP) and ``statespaces train`` itself (``train``, ``evaluate_checkpoint``)."""
from .checkpoint import CorruptCheckpointError, load_checkpoint, save_checkpoint
from .config import PRESETS, ConfigError, TrainConfig, build_config
from .engine import Callback, FitState, fit
from .ensemble import evaluate_ensemble
from .evaluation import evaluate_checkpoint, load_trained
from .generation import generate_from_checkpoint
from .loop import RunExistsError, build_model, evaluate, train
from .mixup import MixUp
from .run import Run
from .tasks import TASKS, Classification, Forecast, LanguageModel, Regression, Seq2Seq, Task, get_task

__all__ = [
    "TrainConfig", "build_config", "PRESETS", "train", "evaluate", "evaluate_checkpoint", "evaluate_ensemble",
    "load_trained", "build_model", "save_checkpoint", "load_checkpoint", "CorruptCheckpointError", "ConfigError",
    "RunExistsError", "fit", "Callback", "FitState", "Run", "Task", "TASKS", "get_task", "Classification",
    "Regression", "Seq2Seq", "Forecast", "LanguageModel", "MixUp", "generate_from_checkpoint",
]
