"""``statespaces train`` in Python: :func:`train` (``statespaces evaluate`` is :mod:`statespaces.train.evaluation`).

:func:`train` puts the pieces together for one config: the data (with a validation split), the
model, AdamW over :func:`statespaces.param_groups` (SSM parameters with their own LR, no weight
decay; thesis §7.1) with linear warmup then cosine decay, a :class:`~statespaces.train.run.Run`
(folder, run id, checkpoints, resume, DDP) and :func:`~statespaces.train.engine.fit` (steps, bf16
autocast, gradient clipping, divergence check) with the task of the dataset
(:mod:`statespaces.train.tasks`). A callback shows progress (:mod:`statespaces.train.monitor`),
evaluates at each epoch end, prints one line per epoch, logs to TensorBoard and writes a
checkpoint at every epoch end and optionally every N steps, and rewrites ``metrics.csv``; ``curves.png`` and
``summary.json`` are written at the end. Resume is exact: model, optimizer, schedule, RNG and
position in the epoch.

Model selection never looks at the test split: with ``trainer.val_fraction > 0`` (default 0.1) a
stratified, seeded part of the training split is held out (or the dataset's own validation split is used,
where it has one: ``SequenceData.valid``, e.g. the chorales' held-out pieces) and ``best/`` is the epoch with the
highest validation score; with ``val_fraction = 0`` ``best/`` is the last epoch. ``summary.json``,
every checkpoint's metadata (``selection``) and ``statespaces evaluate`` say which epoch was chosen
and how; the test score of every epoch is reported, never used to choose, or not computed at all with
``trainer.test_eval = "off"`` (blind tuning: nothing about the test split is printed or stored).

Under ``torchrun --nproc_per_node=N`` the same code runs DistributedDataParallel (gloo on CPU,
NCCL on GPU); ``trainer.batch_size`` is the global batch, split evenly over ranks; rank 0 logs,
evaluates and writes checkpoints. The training loss and score of an epoch are summed over every rank's
examples; each rank draws its own dropout masks and augmentations (rank 0 those of a one-process run, the
others from :func:`rank_seed`), and every checkpoint keeps each rank's RNG state, so a resumed run is exact.
With dropout 0 and a training split divisible by N, N processes see the global batches of one, and train
like it to rounding. Otherwise they differ as DDP does: ``DistributedSampler`` repeats a few examples so
that every rank gets as many (one per epoch with 1293 images on 2 ranks), and ``norm = "batch"`` keeps
per-rank batch statistics (no SyncBatchNorm; the running statistics are rank 0's, which DDP broadcasts).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from ..data.augment import SeriesAugment, TokenWindows
from ..data.augment import from_spec as augmentation_from_spec
from ..data.base import TokenDataset
from ..data.sampler import BucketBatchSampler, dataset_lengths, passes_for, trim_collate
from ..models import SequenceClassifier
from ..optim import param_groups
from .averaging import WeightEMA
from .checkpoint import CorruptCheckpointError, file_sha256, pack_state
from .config import ConfigError, ModelConfig, TrainConfig, TrainerConfig
from .engine import SCHEDULES, Callback, FitState, evaluate, fit
from .mixup import MixUp
from .monitor import (
    TENSORBOARD_MODES,
    Progress,
    check_tensorboard,
    tensorboard_writer,
    write_metrics,
    write_metrics_csv,
)
from .run import (  # noqa: F401  (re-exported: the names of the run folder's pieces)
    RESUME_KEYS,
    RUN_FILE,
    RUN_OUTPUTS,
    Run,
    RunExistsError,
    _Checkpoints,
    checkpoint_dir,
    stored_config,
)
from .selection import (  # noqa: F401  (re-exported)
    SELECTION_LAST,
    per_class_round_counts,
    select_epoch,
    stratified_counts,
    validation_split,
)
from .tasks import Classification, Task, get_task

if TYPE_CHECKING:
    from ..data.base import SequenceData

#: Tasks whose datasets ``statespaces train`` trains (the others are trained with :func:`fit` directly).
TRAINER_TASKS = ("classification", "regression", "seq2seq", "lm")

__all__ = ["train", "evaluate", "build_model", "load_data", "use_compile", "data_digest", "validation_split",
           "select_epoch", "RunExistsError", "Progress", "TENSORBOARD_MODES", "checkpoint_dir", "stored_config"]


def use_compile(setting: str, model: nn.Module) -> bool:
    """Whether the training forward runs under ``torch.compile`` (``trainer.compile``).

    ``"auto"`` compiles a model on the CPU with a LinOSS layer in ``mode="scan"``, where it was measured to
    help: fwd+bwd (B=8, H=128, N=64, L=1024, one thread, ``benchmarks/bench_compile.py``) LinOSS-IMEX 2.7x,
    LinOSS-IM 2.9x, against S4D 1.13x and S4 0.80x (slower). LinOSS's default mode on the CPU is the chunked
    convolution (``mode="auto"``), one fused autograd node that a trace replaces by its unfused twin: compiled,
    the README's LinOSS command (4 blocks, H=64, P=32, sequential digits) took 1.9 s per epoch once compiled
    and 36 s of compiling in its first two epochs, against 0.8 s per epoch eager (2026-12-07, one thread), so
    ``"auto"`` leaves it eager. On CUDA nothing is compiled by ``"auto"`` (not measured there). The environment
    variable ``STATESPACES_COMPILE=on|off`` overrides the setting (the test suite turns it off). D-LinOSS is not
    compiled by ``"auto"``: inductor has no code generation for its complex-valued scan, and compiling the
    ``digits-dlinoss`` preset spent minutes before its first step.
    """
    setting = os.environ.get("STATESPACES_COMPILE", setting)
    if setting == "off" or not hasattr(torch, "compile"):
        return False
    if setting == "on":
        return True
    from ..layers.dlinoss import DLinOSS
    from ..layers.linoss import LinOSS

    return any(isinstance(m, LinOSS) and not isinstance(m, DLinOSS) and m.mode == "scan"
               and m.D.device.type == "cpu" for m in model.modules())


class CompiledOrEager(nn.Module):
    """The training forward under ``torch.compile``, or eager once compiling has failed.

    A compile failure (a :class:`torch._dynamo.exc.TorchDynamoException`, e.g. an inductor lowering error
    such as the one LinOSS met on length-bucketed JapaneseVowels batches with torch 2.13) is reported once
    as a :class:`UserWarning` naming the error, and that call and every later one run the eager module, so
    a run never dies of its compiler. Errors of the model itself (bad input, NaN) propagate unchanged.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.compiled = torch.compile(module)
        self.failure: Optional[str] = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.failure is None:
            try:
                return self.compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as e:
                cause = getattr(e, "inner_exception", None) or e      # a backend failure wraps the real error
                first = (str(cause).strip().splitlines() or [""])[0][:200]
                self.failure = f"{type(cause).__name__}: {first}"
                warnings.warn(f"trainer.compile: torch.compile failed ({self.failure}); training continues without "
                              "compiling (set trainer.compile off to skip the attempt)", UserWarning, stacklevel=2)
        return self.module(*args, **kwargs)


def build_model(cfg: TrainConfig, d_input: int, n_classes: int, task: Any = "classification",
                clock_scale: int = 1) -> nn.Module:
    """The model of ``cfg``: a pooled classifier/regressor, per-step outputs for a task that is not
    pooled (``task="seq2seq"``), or for ``task="lm"`` an :class:`~statespaces.models.SSMLanguageModel` over
    ``d_input`` token streams of ``n_classes`` values (``model.backbone``: flat or SaShiMi, thesis ch. 8).
    ``clock_scale``: with ``model.intervals``, L - 1 of the data's training grid, the scale of the clock channel
    (a checkpoint's own is restored with its weights)."""
    m = cfg.model
    task = get_task(task)
    if m.intervals and not cfg.data.time_channel:
        raise ConfigError("model.intervals: the layers step over the sample times of the clock channel; set "
                          "data.time_channel true too")
    if m.intervals:
        _check_interval_layer(m.layer)
    if m.intervals and cfg.trainer.mixup:
        raise ConfigError("model.intervals with trainer.mixup: mixup mixes the clock channels of two series, which is "
                          "no time axis (past the shorter series it can run backwards); use one or the other")
    if task.name == "lm":
        if m.intervals:
            raise ConfigError("model.intervals: a language model reads tokens on a regular grid; remove it")
        return _build_language_model(cfg, d_input, n_classes)
    if m.backbone != "flat" or m.backbone_kwargs:
        raise ConfigError(f"model.backbone={m.backbone!r}, model.backbone_kwargs={m.backbone_kwargs!r}: they build "
                          f"language models (a dataset of task lm, e.g. chorales), not a {task.name} model; remove "
                          "them (a classifier is a flat stack)")
    pool = m.pool if task.pooled else "none"
    return SequenceClassifier(
        d_input, n_classes, d_model=m.d_model, n_layers=m.n_layers, layer=m.layer,     # the layer's one config
        pool=pool, norm=m.norm, prenorm=m.prenorm, dropout=m.dropout, mixing=m.mixing, stem=m.stem,
        stem_dilations=m.stem_dilations, clock_intervals=m.intervals, clock_scale=clock_scale,
    )


def _check_interval_layer(layer: Any) -> None:
    """``model.intervals`` needs a layer that steps over varying intervals: S4D, S5 or LinOSS with IM (D-LinOSS and
    IMEX take one interval per sequence; S4 and S4ND none)."""
    kind = getattr(layer, "kind", None)
    disc = str(getattr(layer, "discretization", "")).lower()
    if kind in ("s4", "s4nd"):
        why = f"{kind.upper()} has no irregular-sampling path"
    elif kind == "dlinoss":
        why = "D-LinOSS takes one interval per sequence only (its stability bound holds for one step size)"
    elif kind == "linoss" and disc == "imex":
        why = "LinOSS-IMEX takes one interval per sequence only; --model.layer.discretization IM steps over any"
    else:
        return
    raise ConfigError(f"model.intervals with model.layer {kind!r}: {why}; use s4d, s5 or linoss (IM), or remove "
                      "model.intervals")


def _build_language_model(cfg: TrainConfig, n_streams: int, vocab_size: int) -> nn.Module:
    """``SSMLanguageModel(vocab_size, ..., n_streams)`` of ``cfg.model``; the classifier-only settings refused."""
    from ..models.lm import SSMLanguageModel

    m = cfg.model
    if m.pool != ModelConfig.pool:
        raise ConfigError(f"model.pool={m.pool!r}: a language model predicts every step (nothing is pooled); "
                          "remove it")
    if m.stem or m.stem_dilations != 1:
        raise ConfigError(f"model.stem={m.stem!r} / model.stem_dilations={m.stem_dilations!r}: a language model embeds "
                          "its tokens (no convolutional stem); remove them")
    if not m.prenorm:
        raise ConfigError("model.prenorm=false: the language models' residual blocks are pre-norm; remove it")
    try:
        return SSMLanguageModel(vocab_size, d_model=m.d_model, n_layers=m.n_layers, layer=m.layer,
                                backbone=m.backbone, backbone_kwargs=dict(m.backbone_kwargs), n_streams=n_streams,
                                dropout=m.dropout, mixing=m.mixing, norm=m.norm)
    except (TypeError, ValueError) as e:      # the backbone's own argument names: say where they were set
        where = (f"model (backbone {m.backbone!r}, backbone_kwargs {dict(m.backbone_kwargs)})" if m.backbone_kwargs
                 else "model")
        raise ConfigError(f"{where}: {' '.join(str(e).split())}") from None



def _check_pooling(cfg: TrainConfig, model: nn.Module, data: Any) -> None:
    """Refuse a SaShiMi whose pools multiply past the sequence length: every sequence would be padded to their
    product (pools of 4^9 on 128-step windows: 262,144 steps each, a 4.6 GB run that learns nothing more)."""
    backbone = getattr(model, "backbone", None)
    multiple = int(getattr(backbone, "length_multiple", 1))
    length = int(getattr(data, "length", 0) or 0)
    window = cfg.data.augment.get("window") if isinstance(cfg.data.augment, dict) else None
    if isinstance(window, int) and 0 < window < length:       # a language model trains on windows of that many steps
        length = window
    if length and multiple > length:
        pools = getattr(backbone, "pools", ())
        raise ConfigError(f"model.backbone_kwargs {dict(cfg.model.backbone_kwargs)}: the pools {list(pools)} multiply "
                          f"to {multiple:,}, past the sequence length {length:,}: each sequence would be padded to "
                          f"{multiple:,} steps; use fewer or smaller pools (their product at most {length:,})")


def load_data(cfg: TrainConfig, clock: Optional[str] = None, clock_scale: Optional[int] = None,
              time_unit: Optional[float] = None) -> "SequenceData":
    """The dataset of ``cfg.data`` (name, kwargs, normalize), with its splits checked. ``clock="steps"``: the clock of
    ``data.time_channel`` counts steps even where the files carry time stamps (a checkpoint trained so: its
    ``meta["clock"]``, absent before the clock carried them); ``clock_scale``, ``time_unit``: the clock's divisor and
    the time stamps' unit (default the data's L - 1 and the training split's median interval; a checkpoint
    evaluated on other data passes its own, ``meta["clock_scale"]``, ``meta["time_unit"]``)."""
    from ..data import canonical_name, get_dataset, is_time_series
    from ..data.base import normalize_series, with_time_channel

    name, mode, kwargs = canonical_name(cfg.data.name), cfg.data.normalize, dict(cfg.data.kwargs)
    if is_time_series(name):
        if "normalize" in kwargs and mode != "global":
            raise ConfigError(f"data.normalize={mode!r} and data.kwargs normalize={kwargs['normalize']!r} both set; "
                              "use data.normalize only")
        kwargs.setdefault("normalize", mode)
        if time_unit is not None and cfg.data.time_channel:
            kwargs["time_unit"] = time_unit
    if "seed" in kwargs:
        raise ConfigError("data.kwargs.seed: the data's seed is trainer.seed (it draws the split where there is one); "
                          "set --trainer.seed instead")
    try:
        with warnings.catch_warnings():
            if cfg.data.time_channel:       # the clock carries a .ts file's time stamps: the gaps are seen
                warnings.filterwarnings("ignore", message=r".*@timeStamps true, and the samples of")
            data = get_dataset(name, seed=cfg.trainer.seed, **kwargs)
    except TypeError as e:
        if not cfg.data.kwargs or "data.kwargs" in str(e) or "takes no setting" in str(e):
            raise
        # a value of the wrong type inside the loader ('<' between float and str): say it came from data.kwargs
        raise ConfigError(f"data.kwargs {dict(cfg.data.kwargs)} for dataset {cfg.data.name!r}: {e}; check each "
                          "value's type (docs/data.md lists every dataset's settings)") from None
    if data.task == "lm" and (mode != "global" or cfg.data.time_channel):
        what = f"data.normalize={mode!r}" if mode != "global" else "data.time_channel=true"
        raise ConfigError(f"{what}: dataset {name!r} holds a language model's tokens, which are neither scaled nor "
                          "given a clock; remove it (data.normalize global, the default; data.time_channel false)")
    if mode == "none" and not is_time_series(name):
        raise ConfigError(f"data.normalize: got 'none' for dataset {name!r}; valid for it: global (its own "
                          "preprocessing), series; 'none' applies to time-series files (ucr:...)")
    if mode == "series" and not is_time_series(name):
        data = normalize_series(data)
    if cfg.data.time_channel:
        if clock == "steps" and "times" in data.info:
            data = dataclasses.replace(data, info={k: v for k, v in data.info.items() if k != "times"})
        try:
            data = with_time_channel(data, clock_scale)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _check_clock(cfg, data)
    for split in ("train", "test"):
        ds = getattr(data, split)
        if len(ds) == 0:
            raise ValueError(f"dataset {cfg.data.name!r} has an empty {split} split")
        get_task(data.task).check_targets(ds.tensors[1], data.n_classes, f"{split} targets of {cfg.data.name!r}")
    return data


#: The largest relative error of an interval read back from the clock channel that ``model.intervals`` accepts.
CLOCK_TOLERANCE = 1e-2


def _check_clock(cfg: TrainConfig, data: "SequenceData") -> None:
    """The clock of ``data.time_channel`` against the file's time stamps: refused for ``model.intervals`` (warned
    otherwise) when they cannot be used (``info["times_issue"]``: the clock falls back to steps) or when the
    float32 clock cannot resolve them (``info["clock_error"]``); ``model.intervals`` on padded series needs their
    lengths."""
    issue, error = data.info.get("times_issue"), data.info.get("clock_error", 0.0)
    split, row = data.info.get("clock_worst", ("", -1))
    if issue is not None:
        msg = f"data.time_channel: the time stamps of {cfg.data.name!r} cannot be used ({issue})"
        if cfg.model.intervals:
            raise ConfigError(f"{msg}; model.intervals needs them: fix the file, or remove model.intervals (the "
                              "clock then counts steps)")
        warnings.warn(f"{msg}; the clock counts steps instead", UserWarning, stacklevel=3)
    if error > CLOCK_TOLERANCE:
        msg = (f"data.time_channel: the clock channel ({data.train.tensors[0].dtype}, about 7 significant digits of "
               f"a series' span) cannot resolve the time stamps of {cfg.data.name!r}: in the {split} split, series "
               f"{row} (from 0) has an interval that reads back "
               + ("as 0" if math.isinf(error) else f"off by {error:.1%}")
               + " (long series with short intervals, or long gaps)")
        if cfg.model.intervals:
            raise ConfigError(f"{msg}; model.intervals needs them: cut the series or their gaps, or remove "
                              "model.intervals")
        warnings.warn(msg, UserWarning, stacklevel=3)
    times = data.info.get("times")
    if cfg.model.intervals and times is None and issue is None:
        warnings.warn(f"model.intervals: {cfg.data.name!r} has no time stamps, so every interval is one step: the "
                      "regular layers' answer by the irregular path, several times slower; remove model.intervals "
                      "(it is for .ts files with @timeStamps true)", UserWarning, stacklevel=3)
    padded = isinstance(times, dict) and any(
        lengths is None and bool((times[name][:, 1:] == 0).any())
        for name, lengths in (("train", data.lengths_train), ("test", data.lengths_test)))
    if cfg.model.intervals and padded:
        raise ConfigError("model.intervals on series of different lengths needs their lengths, to leave the padding "
                          "out of the intervals: remove data.kwargs return_lengths = false")


class _EpochReport(Callback):
    """The trainer's view of :func:`fit`: progress bar, running loss/score, TensorBoard scalars,
    periodic checkpoints, and at each epoch end the evaluation, the history record, the epoch line
    and the epoch checkpoint (``best/`` by :func:`select_epoch`)."""

    def __init__(self, trainer: "_Trainer", progress: bool) -> None:
        self.t, self.progress = trainer, progress
        self.bar: Optional[Progress] = None
        self.t0 = time.time()

    def on_epoch_start(self, state: FitState) -> None:
        self.t0 = time.time()
        self.bar = Progress(state.steps_per_epoch, state.step % state.steps_per_epoch,
                            f"epoch {state.epoch + 1}/{state.epochs}", enabled=self.progress and self.t.run.main)

    def on_step_end(self, state: FitState) -> None:
        t, r = self.t, self.t.running
        assert state.target is not None and state.output is not None and self.bar is not None
        n = len(state.target)
        r["loss"] += state.loss * n
        r["correct"] += t.task.hits(state.output, state.target)
        r["seen"] += n
        self.bar.update(1, loss=r["loss"] / r["seen"])
        if t.tb is not None:
            t.tb.add_scalar("train/loss_step", state.loss, state.step)
            t.tb.add_scalar("train/lr", t.sched.get_last_lr()[0], state.step)
        every = t.cfg.trainer.checkpoint_every
        if every and state.step % every == 0 and state.step % state.steps_per_epoch:
            t.checkpoint(state.step, is_best=False, shared=t.shared())

    def on_epoch_end(self, state: FitState) -> None:
        t = self.t
        if self.bar is not None:
            self.bar.close()
        t.run.barrier()
        shared = t.shared()
        if t.run.main:
            t.running = shared["running"]       # the epoch's training loss and score over every rank's examples
            t.end_epoch(state, self.t0, shared)
        t.running = {"loss": 0.0, "correct": 0, "seen": 0}


class _Trainer:
    """The state of one :func:`train` call that its callback and checkpoints share."""

    def __init__(self, cfg: TrainConfig, run: Run, data, task: Task, model: nn.Module, opt, sched,
                 train_set, val_set, selection: str, ema: Optional[WeightEMA] = None) -> None:
        self.cfg, self.run, self.data, self.task, self.model = cfg, run, data, task, model
        self.ema = ema
        # the weights evaluated and saved as the model: the moving average when trainer.ema > 0
        self.eval_model: nn.Module = model if ema is None else ema.module
        self.opt, self.sched, self.train_set, self.selection = opt, sched, train_set, selection
        self.steps_per_epoch = 1
        self.history: list = []
        self.best_acc = -1.0
        self.running: Dict[str, Any] = {"loss": 0.0, "correct": 0, "seen": 0}
        self.seconds_before = 0.0     # training time of the earlier segments of a resumed run
        self.data_digest = data_digest(data)      # the files the data came from (None: generated or packaged data)
        self.t_start = time.time()
        self.tb = None
        # None under trainer.test_eval "off": the test split is not looked at during training. Own generators:
        # starting a loader's iterator draws a seed from its generator, and from the global RNG without one, which
        # would move every later dropout mask; scoring the test split (or not) must not change the trained model
        self.test_loader = (DataLoader(data.test, batch_size=256, generator=torch.Generator().manual_seed(0))
                            if cfg.trainer.test_eval == "epoch" else None)
        self.val_loader = (DataLoader(val_set, batch_size=256, generator=torch.Generator().manual_seed(0))
                           if val_set is not None else None)

    def shared(self) -> Dict[str, Any]:
        """What a checkpoint needs from every rank, gathered (a collective: every rank calls it at the same point):
        the ranks' RNG states and the running training sums over all ranks (rank 0 alone writes)."""
        r = self.running
        loss, correct, seen = self.run.all_sum([r["loss"], r["correct"], r["seen"]])
        return {"rng": self.run.gather_rng(), "running": {"loss": loss, "correct": correct, "seen": int(seen)}}

    def checkpoint(self, step: int, is_best: bool, shared: Optional[Dict[str, Any]] = None) -> None:
        """Write the checkpoint of ``step`` (rank 0); ``shared``: :meth:`shared`, gathered by every rank."""
        if not self.run.main:
            return
        t_cfg, history = self.cfg.trainer, self.history
        tensors = {f"model.{k}": v for k, v in self.eval_model.state_dict().items()}
        if self.ema is not None:     # the trained weights, for resuming (model.* are the averaged ones)
            tensors.update({f"train.{k}": v for k, v in self.model.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        for rank, state in enumerate((shared or {}).get("rng") or []):
            if rank:
                tensors[f"rng.torch.rank{rank}"] = state
        meta = {
            "config": self.cfg.to_dict(), "step": step, "epoch": step // self.steps_per_epoch, "history": history,
            "best_acc": self.best_acc, "running": (shared or {}).get("running", self.running),
            "scheduler": self.sched.state_dict(),
            "optimizer": pack_state("optim", self.opt.state_dict(), tensors),
            "d_input": self.data.d_input, "n_classes": self.data.n_classes, "task": self.task.name,
            "train_seconds": self.seconds_before + time.time() - self.t_start,
            # how best/ is chosen, and whether this checkpoint is the one chosen so far
            "selection": {"by": self.selection, "selected": bool(is_best), "epochs": t_cfg.epochs,
                          "val_acc": history[-1]["val_acc"] if is_best and history else None},
        }
        if self.ema is not None:
            meta["ema_updates"] = self.ema.updates
        if self.cfg.data.time_channel:       # what the clock channel counted: evaluation rebuilds the same inputs
            meta["clock"] = "times" if "times" in self.data.info else "steps"
            meta["clock_scale"] = int(self.data.info["clock_scale"])         # set by with_time_channel
            if "time_unit" in self.data.info:
                meta["time_unit"] = float(self.data.info["time_unit"])
        if self.data_digest is not None:
            meta["data_digest"] = self.data_digest
        if self.data.classes is not None:
            meta["classes"] = [str(c) for c in self.data.classes]
        self.run.save(step, tensors, meta, is_best)

    def end_epoch(self, state: FitState, t0: float, shared: Optional[Dict[str, Any]] = None) -> None:
        """Evaluate (validation when held out, test unless ``trainer.test_eval`` is off), record, print the
        epoch line, checkpoint."""
        t_cfg, task, r, device = self.cfg.trainer, self.task, self.running, self.run.device
        test = evaluate(self.eval_model, self.test_loader, device, task.name) if self.test_loader is not None else None
        val = evaluate(self.eval_model, self.val_loader, device, task.name) if self.val_loader is not None else None
        record = {
            "epoch": state.epoch + 1, "step": state.step, "train_loss": r["loss"] / r["seen"],
            "train_acc": task.running_score(r["correct"], r["seen"], self.train_set),
            "val_acc": val["acc"] if val else None, "val_loss": val["loss"] if val else None,
            "test_loss": test["loss"] if test else None, "test_acc": test["acc"] if test else None,
            "seconds": time.time() - t0,
        }
        self.history.append(record)
        # best/: the epoch with the highest validation score, or the last epoch without a validation
        # split; the test score is reported, never used to choose
        chosen = select_epoch(self.history, self.selection)
        is_best = chosen is record
        if val is not None:
            self.best_acc = chosen["val_acc"]
        name = task.score_name
        # a percentage for the scores the task prints as one (accuracy), else the task's own form (R^2 was "-322.6%")
        fmt = (lambda v: f"{100 * v:5.1f}%") if task.score_in_percent else task.format_score
        print(
            f"epoch {state.epoch + 1:3d}/{t_cfg.epochs}  train loss {record['train_loss']:.4f}"
            + ("" if task.score_is_loss else f" {name} {fmt(record['train_acc'])}")
            + (f"  |  val {name} {fmt(val['acc'])}" if val else "")
            + ((f"  |  test {name} {fmt(test['acc'])}" if task.score_is_loss
                else f"  |  test loss {test['loss']:.4f} {name} {fmt(test['acc'])}") if test else "")
            + f"  |  {record['seconds']:.1f}s",
            flush=True,
        )
        self.running = {"loss": 0.0, "correct": 0, "seen": 0}
        if shared is not None:       # the epoch is over: its checkpoint resumes into a new epoch, with empty sums
            shared = dict(shared, running=self.running)
        if self.tb is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
                if record[key] is not None and not (task.score_is_loss and key.endswith("_acc")):
                    self.tb.add_scalar(key.replace("_", "/", 1), record[key], state.step)
            self.tb.flush()
        self.checkpoint(state.step, is_best, shared)
        if self.run.main:
            write_metrics_csv(self.run.out, self.history)      # every finished epoch, for a live or killed run


def _data_files(data: Any) -> List[str]:
    """The files a dataset was read from, as its ``info`` records them (token files, UCR/UEA train and test files)."""
    info = getattr(data, "info", None) or {}
    files = [info.get(k) for k in ("file", "train_file", "test_file")] if isinstance(info, dict) else []
    return list(dict.fromkeys(str(f) for f in files if f))


def data_digest(data: Any) -> Optional[Dict[str, str]]:
    """``{file: SHA-256 of its content}`` for the files :func:`_data_files` names (None when the data come from no
    file, or a file cannot be read): stored in every checkpoint, so that a resume on changed files is refused."""
    files = _data_files(data)
    if not files:
        return None
    try:
        return {f: file_sha256(f) for f in files}
    except OSError:
        return None


def _a_task(name: str) -> str:
    """A task's name in a sentence: "a classification task", "a language-model (lm) task"."""
    return "a language-model (lm) task" if name == "lm" else f"a {name} task"


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank`` of a data-parallel run: ``seed`` for rank 0 (a one-process run's), another
    stream for each other rank, so that ranks draw different dropout masks and augmentations."""
    return seed if rank == 0 else (seed * 1_000_003 + 7_919 * rank) % 2**63


def _augmentation(cfg: TrainConfig, data: Any) -> Optional[Union[SeriesAugment, TokenWindows]]:
    """``data.augment`` as a :class:`SeriesAugment` seeded by ``trainer.seed`` (None when off), refused
    for data that are not float series (tokens, images), the clock channel of ``data.time_channel`` left as it
    is; or, for a language model's token sequences, a :class:`TokenWindows` (``{"window": W}``), refused for
    any other task."""
    aug = augmentation_from_spec(cfg.data.augment, seed=cfg.trainer.seed, keep_channels=int(cfg.data.time_channel))
    is_lm = getattr(data, "task", "classification") == "lm"
    if isinstance(aug, TokenWindows) != is_lm and aug.active:
        raise ConfigError(f"data.augment={cfg.data.augment!r}: dataset {cfg.data.name!r} is {_a_task(data.task)}; "
                          + ("a language model's tokens take {'window': W} only (random windows)" if is_lm else
                             "window (random windows of tokens) applies to language models (task lm) only")
                          + "; change or remove data.augment")
    if not aug.active:
        return None
    if is_lm:
        return aug
    what = _not_float_series(data)
    if what:
        raise ConfigError(f"data.augment={cfg.data.augment!r}: dataset {cfg.data.name!r} gives {what} per "
                          "example; augmentation applies to float time series (L, C) only; remove data.augment")
    moves = [k for k, off in (("crop", 1.0), ("roll", 0.0)) if cfg.data.augment.get(k, off) != off]
    if cfg.data.time_channel and "times" in data.info and moves:
        raise ConfigError(f"data.augment {', '.join(moves)} with a time-stamped file and data.time_channel: the clock "
                          "carries each sample's own time and stays where it is while the signal moves, so samples "
                          f"would take other samples' times; remove {' and '.join(moves)} (scale and jitter are fine)")
    return aug


def _not_float_series(data: Any) -> Optional[str]:
    """What a training example of ``data`` is, in words, when it is not a float series (L, C); else None."""
    base = data.train
    while isinstance(base, Subset):
        base = base.dataset
    if isinstance(base, TokenDataset):          # float (L, V - 1) items, but one-hot token ids: not a series
        return f"token ids (one-hot encoded, vocabulary {base.vocab_size})"
    x = data.train[0][0]
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 2:
        return None
    return f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _objective(cfg: TrainConfig, data: Any) -> Tuple[Task, Optional[MixUp]]:
    """The task of ``data`` with ``trainer.label_smoothing``, and ``trainer.mixup`` as a :class:`MixUp`
    seeded by ``trainer.seed`` (None when off); both refused for tasks other than classification, and
    mixup for inputs that are not float series."""
    t_cfg, task = cfg.trainer, get_task(data.task)
    for key in ("label_smoothing", "mixup"):
        value = getattr(t_cfg, key)
        if value and task.name != "classification":
            raise ConfigError(f"trainer.{key}={value!r}: dataset {cfg.data.name!r} is {_a_task(task.name)}; "
                              f"trainer.{key} applies to classification only; set it to 0")
    if t_cfg.label_smoothing:
        task = Classification(label_smoothing=t_cfg.label_smoothing)
    if not t_cfg.mixup:
        return task, None
    what = _not_float_series(data)
    if what:
        raise ConfigError(f"trainer.mixup={t_cfg.mixup!r}: dataset {cfg.data.name!r} gives {what} per example; "
                          "mixup applies to float time series (L, C) only; set it to 0")
    return task, MixUp(t_cfg.mixup, seed=t_cfg.seed)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, replace: bool = False,
          announce: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
    """Train ``cfg`` and return the final summary (also written to ``<out>/summary.json``).

    With ``resume=True``, training continues from the newest valid checkpoint of this run in
    ``<out>`` and produces the same result as an uninterrupted run with the same config (a folder that holds
    no run yet gets a new one, with a note on stderr). Without
    it, a folder that already holds checkpoints is refused (:class:`RunExistsError`), unless
    ``replace=True``, which deletes that run's outputs (:data:`RUN_OUTPUTS`) first. ``announce()`` is called
    once the data, the model and the folder are ready, just before the first step (the command line prints
    its "training ..." line there, so that a data or folder error is not preceded by it).
    """
    cfg = cfg.validated()
    t_cfg = cfg.trainer
    check_tensorboard(t_cfg.tensorboard)          # a missing package is named before the run takes its folder
    fresh = resume and stored_config(t_cfg.out) is None
    run = Run(t_cfg.out, t_cfg.keep_last, resume=resume, replace=replace, device=t_cfg.device)
    if fresh and run.main:                        # a typo in trainer.out must not pass for a resume
        print(f"note: {t_cfg.out} holds no run yet; starting a new one", file=sys.stderr)
    try:
        return _train_in(run, cfg, resume, progress, announce)
    finally:
        run.unlock()          # the folder's lock, also when training fails (a retry in this process may resume)


def _train_in(run: Run, cfg: TrainConfig, resume: bool, progress: bool,
              announce: Optional[Callable[[], None]]) -> Dict[str, Any]:
    """The body of :func:`train`, once ``run`` holds its folder."""
    t_cfg = cfg.trainer
    world, device, out = run.world, run.device, run.out
    if t_cfg.batch_size % world:
        raise ValueError(f"trainer.batch_size={t_cfg.batch_size} must be divisible by the {world} processes")

    torch.manual_seed(t_cfg.seed)
    data = load_data(cfg)
    train_set: Union[TensorDataset, Subset] = data.train
    val_set: Optional[Union[TensorDataset, Subset]] = None
    if t_cfg.val_fraction > 0 and data.valid is not None:
        val_set = data.valid          # the dataset's own validation split (chorales: held-out pieces, not windows)
        if t_cfg.val_fraction != TrainerConfig.val_fraction and run.rank == 0:
            warnings.warn(f"trainer.val_fraction = {t_cfg.val_fraction}: dataset {data.name!r} has its own validation "
                          f"split ({len(val_set)} examples), used whole; the fraction only switches validation on "
                          "(> 0) or off (0)", stacklevel=2)
    elif t_cfg.val_fraction > 0:
        fit_idx, held = validation_split(data, t_cfg.val_fraction, t_cfg.seed, t_cfg.val_split)
        train_set, val_set = Subset(data.train, fit_idx), Subset(data.train, held)
    task, mixup = _objective(cfg, data)
    selection = SELECTION_LAST if val_set is None else task.selection
    augment = _augmentation(cfg, data)
    # clock_scale by keyword and only with intervals: scripts that replace build_model (experiments/reference_layer.py)
    # keep the (cfg, d_input, n_classes[, task]) signature
    # (with data.time_channel off there is no clock: build_model refuses intervals with its reason)
    clock = {"clock_scale": int(data.info["clock_scale"])} if cfg.model.intervals and cfg.data.time_channel else {}
    model = build_model(cfg, data.d_input, data.n_classes, task.name, **clock).to(device)
    _check_pooling(cfg, model, data)
    ema = WeightEMA(model, t_cfg.ema) if t_cfg.ema else None
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if run.rank:
        # each rank its own dropout masks and augmentation draws (DDP has broadcast rank 0's initial weights);
        # rank 0 keeps the stream of a single-process run
        seed = rank_seed(t_cfg.seed, run.rank)
        torch.manual_seed(seed)
        augment = None if augment is None else dataclasses.replace(augment, seed=seed)
        mixup = None if mixup is None else dataclasses.replace(mixup, seed=seed)
    if use_compile(t_cfg.compile, model):
        net = CompiledOrEager(net)
    opt = torch.optim.AdamW(param_groups(model, lr=t_cfg.lr, weight_decay=t_cfg.weight_decay, ssm_lr=t_cfg.ssm_lr))
    if t_cfg.bucket or t_cfg.min_steps > 0:
        # length-bucketed batches cut to their longest series, and/or several passes per epoch so
        # that the run takes at least trainer.min_steps steps (statespaces.data.sampler)
        if world > 1:
            raise ConfigError(f"trainer.bucket / trainer.min_steps: not supported with {world} processes (here "
                              f"bucket = {t_cfg.bucket}, min_steps = {t_cfg.min_steps}, perhaps from the preset); "
                              "allowed: bucket = false and min_steps = 0 under torchrun (--trainer.bucket false "
                              "--trainer.min_steps 0)")
        lengths = dataset_lengths(train_set) if t_cfg.bucket else None
        # a 1-D tensor of lengths serves as the sampler's sequence of ints
        sampler: Any = BucketBatchSampler(cast(Optional[Sequence[int]], lengths), t_cfg.batch_size, n=len(train_set),
                                          window=50 if t_cfg.bucket else 1, seed=t_cfg.seed)
        sampler.passes = passes_for(t_cfg.min_steps, t_cfg.epochs, sampler.batches_per_pass())
        loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=trim_collate,
                            generator=torch.Generator().manual_seed(t_cfg.seed))   # own generator: see below
    else:
        sampler = DistributedSampler(train_set, num_replicas=world, rank=run.rank, shuffle=True, seed=t_cfg.seed)
        # own generator: creating the loader iterator must not consume the global RNG (dropout), or a
        # run resumed mid-epoch would draw different dropout masks than the uninterrupted run
        loader = DataLoader(train_set, batch_size=t_cfg.batch_size // world, sampler=sampler,
                            generator=torch.Generator().manual_seed(t_cfg.seed))
    steps_per_epoch = len(loader)
    total_steps = t_cfg.epochs * steps_per_epoch
    if t_cfg.warmup_steps >= total_steps and run.rank == 0:
        warnings.warn(f"trainer.warmup_steps = {t_cfg.warmup_steps} is not shorter than the whole run "
                      f"({total_steps} optimizer steps): the learning rate never reaches trainer.lr; lower "
                      "warmup_steps or train longer", stacklevel=2)
    factor = SCHEDULES[t_cfg.schedule](total_steps, t_cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    trainer = _Trainer(cfg, run, data, task, model, opt, sched, train_set, val_set, selection, ema)
    trainer.steps_per_epoch = steps_per_epoch
    step = 0
    def same_data(meta: Dict[str, Any]) -> None:
        """Refuse a checkpoint whose data files have changed since (before anything is restored or announced)."""
        stored, now = meta.get("data_digest"), trainer.data_digest
        if not isinstance(stored, dict) or now is None:
            return
        changed = [f for f in now if f in stored and stored[f] != now[f]]
        if changed:
            raise ConfigError(f"the data of the run in {out} changed since its checkpoint {meta.get('step')}: "
                              f"{', '.join(changed)} holds other content now; resuming would mix two datasets in "
                              "one run; restore the file(s), or start a new run (another --trainer.out)")

    meta = run.restore(model, opt, sched, cfg.to_dict(), steps_per_epoch, ema, check=same_data)
    if meta is not None:
        step, trainer.history, trainer.best_acc = meta["step"], meta["history"], meta["best_acc"]
        trainer.seconds_before = meta["train_seconds"]
        # the stored sums cover every rank's examples so far: rank 0 carries them, the others start from 0
        trainer.running = meta["running"] if run.main else {"loss": 0.0, "correct": 0, "seen": 0}
    run.start(cfg)
    if run.main and meta is not None:   # a run killed between its last save and the prune holds one too many
        chosen = select_epoch(trainer.history, selection)
        lost = run.ckpts.ensure_best(chosen.get("step"), chosen.get("epoch"))   # before the prune: a copy may be kept
        if lost:
            print(f"warning: {lost}; the run goes on, and unless a later epoch is selected it will end without "
                  "the selected model", file=sys.stderr)
        run.ckpts.prune(step)

    n_params = sum(p.numel() for p in model.parameters())
    if announce is not None:
        announce()
    trainer.t_start = time.time()
    trainer.tb = tensorboard_writer(t_cfg.tensorboard, out, step) if run.main else None
    hint = "lower trainer.lr / trainer.ssm_lr or set trainer.grad_clip"
    callbacks: List[Callback] = [ema] if ema is not None else []     # the average first: checkpoints see it
    try:
        done = fit(model, loader, opt, task, epochs=t_cfg.epochs, scheduler=sched, start_step=step, net=net,
                   device=device, amp=t_cfg.amp, grad_clip=t_cfg.grad_clip,
                   callbacks=[*callbacks, _EpochReport(trainer, progress)],
                   divergence_hint=hint, augment=augment, mixup=mixup)
    except FloatingPointError as e:
        saved = run.ckpts.entries()
        where = (f" The newest checkpoint, written before the divergence, is {saved[0][1]}; --resume would continue "
                 "from it with the stored settings, so to try another learning rate start a new run (another "
                 "--trainer.out)." if saved else " It diverged before its first checkpoint: start again with other "
                 "settings (another --trainer.out, or this one once deleted).")
        text = str(e).rstrip()
        raise FloatingPointError(f"{text}{'' if text.endswith('.') else '.'}{where}") from None
    summary: Dict[str, Any] = {}
    if trainer.tb is not None:
        trainer.tb.close()
    if run.main:
        history = trainer.history
        this_run = time.time() - trainer.t_start
        write_metrics(out, history, task)
        final = history[-1] if history else {}
        chosen = select_epoch(history, selection)
        summary = {
            "dataset": data.name, "task": task.name, "layer": cfg.model.layer.kind, "params": n_params,
            "epochs": t_cfg.epochs,
            # the model in best/: which epoch, chosen how (never on the test split), and its scores
            "selection": selection, "weights": f"moving average (decay {t_cfg.ema})" if ema else "trained",
            "selected_epoch": chosen.get("epoch"), "selected_val_acc": chosen.get("val_acc"),
            "test_acc": chosen.get("test_acc"), "final_test_acc": final.get("test_acc"),
            "steps": done.step, "passes_per_epoch": getattr(sampler, "passes", 1),
            "val_fraction": t_cfg.val_fraction,
            "val_split": _split_rule(t_cfg, data, task, val_set),
            "n_train": len(train_set), "n_val": len(val_set) if val_set else 0,
            "n_test": len(data.test), "test_eval": t_cfg.test_eval, "processes": world,
            "train_seconds": trainer.seconds_before + this_run, "train_seconds_this_run": this_run,
            "checkpoints": str(run.ckpts.dir), "best": str(run.ckpts.best),
        }
        if task.score_is_loss:    # a language model: its scores (the *_acc keys) are minus the NLL; said so by name
            summary["score"] = "the *_acc entries are minus the NLL (nats/step), higher is better"
            for key, acc in (("selected_val_nll", "selected_val_acc"), ("test_nll", "test_acc"),
                             ("final_test_nll", "final_test_acc")):
                summary[key] = None if summary[acc] is None else -summary[acc]
        lost = run.ckpts.ensure_best(chosen.get("step"), chosen.get("epoch"))
        if lost:                      # summary.json and the done line must not name weights that are gone
            summary["best"] = None
            summary["best_problem"] = lost
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if lost:
            newest = run.ckpts.entries()
            del net
            run.close()
            raise CorruptCheckpointError(
                f"training finished, but {lost}. summary.json says so; the newest checkpoint is "
                f"{newest[0][1] if newest else 'none'} (statespaces evaluate takes a step checkpoint's folder)")
    del net     # the DDP wrapper's reducer holds the process group: freed before the group (see Run.close)
    run.close()
    return summary


def _split_rule(t_cfg: Any, data: Any, task: Task, val_set: Any) -> Optional[str]:
    """How the validation split of a run was drawn, for ``summary.json``: ``trainer.val_split`` (classification),
    "random" (other tasks draw a plain seeded sample), "the dataset's own", or None without validation."""
    if val_set is None:
        return None
    if data.valid is not None:
        return "the dataset's own"
    return t_cfg.val_split if task.stratify else "random"
