"""``statespaces evaluate`` in Python: a trained run's model rebuilt from its checkpoint and scored.

:func:`load_trained` rebuilds the model of a checkpoint folder (a run folder stands for its ``best/``) from its
safetensors weights and the config in ``meta.json``; :func:`load_for_evaluation` adds the data it is scored on (its
own, or the same files moved elsewhere, ``--data.name``), warning when the files differ from the SHA-256 digests
stored at training time; :func:`evaluate_checkpoint` scores the test split and says which epoch the checkpoint holds
and how it was chosen (:func:`describe_selection`: validation, last epoch, never the test set). ``generate``,
``export`` and ensembles load their checkpoints through the same functions.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from torch import nn
from torch.utils.data import DataLoader

from . import loop
from .checkpoint import CorruptCheckpointError, file_sha256, load_checkpoint, with_prefix
from .config import TrainConfig
from .engine import evaluate
from .loop import TRAINER_TASKS, data_digest, load_data
from .run import MODEL_KEYS, _check_meta, checkpoint_dir
from .selection import SELECTION_LAST

__all__ = ["load_trained", "load_for_evaluation", "evaluate_checkpoint", "describe_selection"]


def load_trained(path: str) -> Tuple[nn.Module, TrainConfig]:
    """Rebuild the model stored in a checkpoint directory (weights only read through safetensors);
    a run folder stands for its ``best/`` checkpoint. The model is returned in eval mode, as
    :meth:`~statespaces.serialization.Pretrained.from_pretrained` returns one (dropout off: a trained model is
    loaded to be used; call ``.train()`` to fine-tune it).

    Raises :class:`CorruptCheckpointError` naming what failed: a checksum (weights or metadata), a
    missing metadata entry, an invalid stored config, or weights that do not fit the model."""
    model, cfg, _ = _load_trained(path)
    return model, cfg


def _load_trained(path) -> Tuple[nn.Module, TrainConfig, Dict[str, Any]]:
    path = checkpoint_dir(path)
    tensors, meta = load_checkpoint(path)
    _check_meta(path, meta, MODEL_KEYS)
    try:
        cfg = TrainConfig.from_dict(meta["config"], legacy=True)   # runs saved before the layer configs too
    except ValueError as e:
        raise CorruptCheckpointError(f"{path}: meta.json holds an invalid config ({e})") from None
    task = meta.get("task", "classification")
    if task not in TRAINER_TASKS:
        raise CorruptCheckpointError(f"{path}: meta.json entry 'task' is {task!r}, not {', '.join(TRAINER_TASKS)}")
    # looked up on the module at call time: a script that replaces loop.build_model (experiments/reference_layer.py
    # builds the official layer into every block) reloads its checkpoints with the same model
    model = loop.build_model(cfg, meta["d_input"], meta["n_classes"], task)
    try:
        model.load_state_dict(with_prefix(tensors, "model."))
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise CorruptCheckpointError(f"{path}: the weights do not fit the model of its config ({msg})") from None
    return model.eval(), cfg, meta


def describe_selection(meta: Dict[str, Any], path) -> str:
    """How the model of a checkpoint was chosen, in words (from its ``selection`` metadata), and, for a run with
    ``trainer.ema``, that its weights are the moving average."""
    config = meta.get("config")
    trainer = config.get("trainer", {}) if isinstance(config, dict) else {}
    text = _chosen(meta, trainer, path)
    updates = meta.get("ema_updates")
    if isinstance(updates, int):
        text += f"; weights: the moving average (decay {trainer.get('ema')}) over {updates} steps"
    return text


def _chosen(meta: Dict[str, Any], trainer: Dict[str, Any], path) -> str:
    """The selection part of :func:`describe_selection` (``trainer``: the checkpoint config's trainer section)."""
    epoch, step = meta.get("epoch"), meta.get("step")
    sel = meta.get("selection")
    of = f" of {sel['epochs']}" if isinstance(sel, dict) and isinstance(sel.get("epochs"), int) else ""
    where = f"epoch {epoch}{of} (step {step})"
    if isinstance(sel, dict):
        if not sel.get("selected"):
            return f"{where}, a periodic checkpoint (not a selected model)"
        if Path(path).name != "best":
            rule = "the newest epoch" if sel.get("by") == SELECTION_LAST else f"best by {sel.get('by')}"
            return f"{where}, {rule} when it was written (the run's best/ holds the final choice)"
        if sel.get("by") == SELECTION_LAST:
            return f"{where}, the last epoch (no validation split; chosen without the test set)"
        val, val_text = sel.get("val_acc"), ""
        if isinstance(val, (int, float)):
            by = sel.get("by")
            val_text = (f" {val:.4f}" if by == "validation R^2" else f" {-val:.4f} nats/step" if by == "validation NLL"
                        else f" {100 * val:.2f}%")
        return f"{where}, chosen by {sel.get('by')}{val_text}"
    if Path(path).name == "best" and trainer.get("val_fraction", 0) == 0:
        return (f"{where}, chosen by TEST accuracy by an older version of statespaces: this number is optimistic, "
                "not a held-out estimate")
    return f"{where}, selection not recorded (older checkpoint)"


def _problem_of(stored: str) -> Optional[str]:
    """The problem a stored ``data.name`` refers to, for comparing two of them (lower case): a registered name
    itself, ``ucr:<problem>`` for a UCR/UEA problem or a ``<Name>_TRAIN`` / ``<Name>_TEST`` file wherever it is (so
    the same files in another place compare equal) or an existing folder's problem; None when that cannot be told
    (a folder that is gone)."""
    from ..data.tokens import PREFIX as TOKENS
    from ..data.ucr import _split_of, looks_like_path, resolve

    if stored.startswith(TOKENS):      # token arrays: the same content wherever the file is
        try:
            return TOKENS + file_sha256(stored[len(TOKENS):])
        except OSError:
            return None
    body = stored[len("ucr:"):] if stored.startswith("ucr:") else stored
    if not looks_like_path(body):
        return stored.lower()
    split = _split_of(Path(body).name)
    if split is not None:
        return "ucr:" + split[0].lower()
    try:
        return "ucr:" + resolve(body)[0].lower()
    except (OSError, ValueError):
        return None


def load_for_evaluation(path, data_name: Optional[str] = None) -> Tuple[nn.Module, TrainConfig,
                                                                       Dict[str, Any], Any]:
    """``(model, cfg, meta, data)`` of a checkpoint (a run folder stands for its ``best/``) and the data
    it is evaluated on: its own, or ``data_name`` (e.g. the same files moved elsewhere), which must have
    the checkpoint's number of channels and classes (and class names, when recorded)."""
    folder = checkpoint_dir(path)
    model, cfg, meta = _load_trained(folder)
    trained_on = cfg.data.name
    if data_name is not None:
        from ..data import canonical_name

        cfg.data.name = canonical_name(data_name)
    try:
        # the clock the run was trained with: a run from before the clock carried time stamps (no meta["clock"]) saw
        # steps, unless it stepped over intervals (which only time stamps give); the training grid's scale, also on
        # other data (an intervals model multiplies its clock by the scale saved with its weights)
        scale = meta.get("clock_scale")
        if scale is None and getattr(model, "clock_intervals", False):
            scale = int(model.get_buffer("clock_scale"))
        clock = meta.get("clock", "times" if cfg.model.intervals else "steps")
        data = load_data(cfg, clock=clock if cfg.data.time_channel else None, clock_scale=scale,
                         time_unit=meta.get("time_unit"))
    except FileNotFoundError as e:
        if data_name is not None:
            raise
        raise FileNotFoundError(f"{folder} was trained on data that is no longer where it was "
                                f"({' '.join(str(e).split(';')[0].split())}); if it moved, give its new place: "
                                "statespaces evaluate (or generate, or export) RUN ... --data.name NEW_PATH "
                                "(evaluate_checkpoint(..., data_name=NEW_PATH) in Python)") from None
    if data_name is not None:
        if meta.get("task") is not None and data.task != meta["task"]:
            raise ValueError(f"--data.name {data_name}: {data.name} is data of task {data.task!r}, but {folder} holds "
                             f"a model of task {meta['task']!r}; give data of the kind it was trained on "
                             f"({trained_on})")
        classes = meta.get("classes")
        if meta.get("task") == "lm":
            if data.d_input != meta["d_input"] or data.n_classes > meta["n_classes"]:
                raise ValueError(f"--data.name {data_name}: {data.name} has {data.d_input} token(s) per step and a "
                                 f"vocabulary of {data.n_classes}; the model takes {meta['d_input']} per step and "
                                 f"{meta['n_classes']} token values")
        elif (data.d_input, data.n_classes) != (meta["d_input"], meta["n_classes"]):
            raise ValueError(f"--data.name {data_name}: {data.name} has {data.d_input} channels and {data.n_classes} "
                             f"classes, the checkpoint {meta['d_input']} and {meta['n_classes']}")
        if isinstance(classes, list) and data.classes is not None and [str(c) for c in data.classes] != classes:
            raise ValueError(f"--data.name {data_name}: its classes {list(data.classes)} differ from the "
                             f"checkpoint's {classes}")
        trained = _problem_of(trained_on)
        now = data.name.lower() if data.name.startswith("ucr:") else _problem_of(cfg.data.name)
        if trained is not None and now != trained:       # after the checks above: it is scored
            warnings.warn(f"--data.name {data_name}: not the data {folder} was trained on ({trained_on}); scored "
                          "anyway (--data.name is meant for the same data moved elsewhere)", stacklevel=2)
            return model, cfg, meta, data
    changed = _changed_files(meta.get("data_digest"), data_digest(data))
    if changed:
        verb = "differs" if len(changed) == 1 else "differ"
        warnings.warn(f"{folder}: {' and '.join(changed)} {verb} from the content it was trained on (the SHA-256 "
                      "digests in its checkpoint); scored anyway, on the data as they are now, normalised with "
                      "statistics of the training file as it is now", stacklevel=2)
    return model, cfg, meta, data


def _changed_files(stored: Any, now: Optional[Dict[str, str]]) -> List[str]:
    """The files of ``now`` (``{path: SHA-256}``, :func:`~statespaces.train.loop.data_digest`) whose content is not
    the stored one of the same role: both list the files in the same order (the train file, then the test file), so
    a test file replaced by a copy of the train file, or the two swapped, is caught; paths may differ (the data may
    have moved). Empty when either side has no digests."""
    if not isinstance(stored, dict) or not stored or not now:
        return []
    before = list(stored.values())
    if len(before) != len(now):                  # another kind of data: compare contents only
        return [f for f, digest in now.items() if digest not in set(before)]
    return [f for (f, digest), was in zip(now.items(), before) if digest != was]


def evaluate_checkpoint(path: str, data_name: Optional[str] = None) -> Dict[str, Any]:
    """Test-set loss and score of a saved model (a run folder stands for its ``best/``).

    ``data_name`` points the checkpoint at other data (see :func:`load_for_evaluation`).
    The result also says which epoch the checkpoint holds and how it was chosen (``selection``)."""
    folder = checkpoint_dir(path)
    model, cfg, meta, data = load_for_evaluation(folder, data_name)
    res: Dict[str, Any] = evaluate(model, DataLoader(data.test, batch_size=256), task=data.task)
    res.update(checkpoint=str(folder), dataset=data.name, task=data.task, n_test=len(data.test),
               epoch=meta.get("epoch"), selection=describe_selection(meta, folder))
    return res
