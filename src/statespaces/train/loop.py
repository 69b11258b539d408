"""The training loop.

AdamW over :func:`statespaces.param_groups` (SSM parameters with their own LR, no weight decay;
thesis §7.1), linear warmup then cosine decay, optional gradient clipping and bf16 autocast,
a progress bar (periodic plain lines when its stream is not a terminal) and one line per epoch,
``metrics.csv``, TensorBoard event files (when the ``tensorboard`` package is installed;
``trainer.tensorboard``) and a learning-curve PNG, checkpoints (safetensors + JSON, atomic,
checksummed) at every epoch end and optionally every N steps, keep the last k plus ``best/``, and
exact resume: model, optimizer, schedule, RNG and position in the epoch.

Model selection never looks at the test split: with ``trainer.val_fraction > 0`` (default 0.1) a
stratified, seeded part of the training split is held out and ``best/`` is the epoch with the
highest validation score; with ``val_fraction = 0`` ``best/`` is the last epoch. ``summary.json``,
every checkpoint's metadata (``selection``) and ``statespaces evaluate`` say which epoch was chosen
and how; the test score of every epoch is reported, never used to choose.

Each run has an id (``<out>/run.json``, and ``run_id`` in every checkpoint's metadata). A new run
refuses a folder that already holds checkpoints (resume it with ``--resume`` or choose another
``--trainer.out``); resuming picks the newest checkpoint of this run that passes its integrity
check (weights and metadata) and holds every entry a resume needs, falling back to older ones;
pruning only ever deletes valid checkpoints of this run older than the one just written, never
anything it cannot verify or that belongs to another run.

Under ``torchrun --nproc_per_node=N`` the same code runs DistributedDataParallel (gloo on CPU,
NCCL on GPU); ``trainer.batch_size`` is the global batch, split evenly over ranks; rank 0 logs,
evaluates and writes checkpoints.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from ..data import DATASETS
from ..data.sampler import BucketBatchSampler, dataset_lengths, passes_for, trim_collate
from ..models import SequenceClassifier
from ..optim import param_groups
from .checkpoint import CorruptCheckpointError, load_checkpoint, pack_state, save_checkpoint, unpack_state
from .config import ConfigError, TrainConfig, config_conflicts


def use_compile(setting: str, model: nn.Module) -> bool:
    """Whether the training forward runs under ``torch.compile`` (``trainer.compile``).

    ``"auto"`` compiles models with a LinOSS layer, where it was measured to help: fwd+bwd on CPU
    (B=8, H=128, N=64, L=1024, one thread, ``benchmarks/bench_compile.py``) LinOSS-IMEX 2.7x,
    LinOSS-IM 2.9x, against S4D 1.13x and S4 0.80x (slower). The environment variable
    ``STATESPACES_COMPILE=on|off`` overrides the setting (the test suite turns it off).
    """
    setting = os.environ.get("STATESPACES_COMPILE", setting)
    if setting == "off" or not hasattr(torch, "compile"):
        return False
    if setting == "on":
        return True
    from ..layers.linoss import LinOSS

    return any(isinstance(m, LinOSS) for m in model.modules())


def build_model(cfg: TrainConfig, d_input: int, n_classes: int, task: str = "classification") -> SequenceClassifier:
    """The model of ``cfg``: a pooled classifier/regressor, or per-step outputs for ``task="seq2seq"``."""
    m = cfg.model
    pool = "none" if task == "seq2seq" else m.pool
    layer_kwargs = dict(d_state=m.d_state)
    if m.layer in ("s4d", "s4"):  # LinOSS keeps the paper's own dt init (sigmoid-parameterized)
        layer_kwargs.update(init=m.init, dt_min=m.dt_min, dt_max=m.dt_max)
    layer_kwargs.update(m.layer_kwargs)
    return SequenceClassifier(
        d_input, n_classes, d_model=m.d_model, n_layers=m.n_layers, layer=m.layer, layer_kwargs=layer_kwargs,
        pool=pool, norm=m.norm, prenorm=m.prenorm, dropout=m.dropout, mixing=m.mixing,
    )


def load_data(cfg: TrainConfig):
    """The dataset of ``cfg.data`` (name, kwargs, normalize), with its splits checked."""
    from ..data import canonical_name, is_time_series
    from ..data.base import normalize_series

    name, mode, kwargs = canonical_name(cfg.data.name), cfg.data.normalize, dict(cfg.data.kwargs)
    if is_time_series(name):
        if "normalize" in kwargs and mode != "global":
            raise ConfigError(f"data.normalize={mode!r} and data.kwargs normalize={kwargs['normalize']!r} both set; "
                              "use data.normalize only")
        kwargs.setdefault("normalize", mode)
    elif mode == "none":
        raise ConfigError(f"data.normalize: got 'none' for dataset {name!r}; valid for it: global (its own "
                          "preprocessing), series; 'none' applies to time-series files (ucr:...)")
    data = DATASETS[name](seed=cfg.trainer.seed, **kwargs)
    if mode == "series" and not is_time_series(name):
        data = normalize_series(data)
    for split in ("train", "test"):
        ds = getattr(data, split)
        if len(ds) == 0:
            raise ValueError(f"dataset {cfg.data.name!r} has an empty {split} split")
        y = ds.tensors[1]
        if data.task == "regression":
            if not y.is_floating_point():
                raise ValueError(f"{split} targets of the regression task {cfg.data.name!r} must be floats")
        elif y.dtype != torch.int64 or int(y.min()) < 0 or int(y.max()) >= data.n_classes:
            raise ValueError(f"{split} labels of {cfg.data.name!r} must be int64 in [0, {data.n_classes})")
    return data


def task_loss(task: str, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Loss of one batch: cross-entropy (classification), MSE (scalar regression), or cross-entropy
    over the last ``y.shape[1]`` steps of per-step outputs (seq2seq: emit the answer at the end)."""
    if task == "regression":
        return nn.functional.mse_loss(out[:, 0].float(), y.float(), reduction=reduction)
    if task == "seq2seq":
        k = y.shape[1]
        return nn.functional.cross_entropy(out[:, -k:].float().flatten(0, 1), y.flatten(), reduction=reduction)
    return nn.functional.cross_entropy(out.float(), y, reduction=reduction)


def task_hits(task: str, out: torch.Tensor, y: torch.Tensor) -> float:
    """Correct predictions in a batch (classification: examples; seq2seq: tokens / k per example);
    for regression the sum of squared errors, turned into R^2 by :func:`_score`."""
    if task == "regression":
        return float(((out[:, 0].float() - y.float()) ** 2).sum())
    if task == "seq2seq":
        return float((out[:, -y.shape[1]:].argmax(-1) == y).float().mean(-1).sum())
    return float((out.argmax(-1) == y).sum())


def _unpack(batch, device):
    x, y, *rest = (t.to(device) for t in batch)
    return x, y, (rest[0] if rest else None)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device = torch.device("cpu"), task: str = "classification"
) -> Dict[str, float]:
    """Mean loss and score over ``loader`` (batches (x, y[, lengths])). The score ``acc`` is the
    accuracy (classification: per example; seq2seq: per token) or R^2 (regression)."""
    was_training = model.training
    model.eval()
    total, loss, hits, ys = 0, 0.0, 0.0, []
    for batch in loader:
        x, y, lengths = _unpack(batch, device)
        out = model(x, lengths)
        loss += task_loss(task, out, y, reduction="sum").item() / (y.shape[1] if task == "seq2seq" else 1)
        hits += task_hits(task, out, y)
        total += len(y)
        if task == "regression":
            ys.append(y.float())
    model.train(was_training)
    return {"loss": loss / max(total, 1), "acc": _score(task, hits, total, ys)}


def _score(task: str, hits: float, total: int, ys) -> float:
    if task != "regression":
        return hits / max(total, 1)
    y = torch.cat(ys)
    return 1.0 - hits / max(float(((y - y.mean()) ** 2).sum()), 1e-12)


def _distributed() -> Tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def _device(name: str, rank: int) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: got {name!r} but CUDA is not available here; allowed: auto or cpu")
    return device


RUN_FILE = "run.json"
#: Metadata entries (and their types) a checkpoint needs to resume a run / to rebuild its model.
RESUME_KEYS = {"config": dict, "step": int, "epoch": int, "history": list, "best_acc": (int, float),
               "running": dict, "scheduler": dict, "optimizer": (dict, list), "d_input": int, "n_classes": int,
               "task": str, "run_id": str}
MODEL_KEYS = {"config": dict, "d_input": int, "n_classes": int}


def _check_meta(path, meta: Dict[str, Any], required: Dict[str, Any]) -> None:
    """Raise :class:`CorruptCheckpointError` naming the first missing or mistyped entry of ``meta``."""
    for key, typ in required.items():
        if key not in meta:
            raise CorruptCheckpointError(f"{path}: meta.json has no {key!r} entry")
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, typ):
            raise CorruptCheckpointError(f"{path}: meta.json entry {key!r} is {value!r}, not a {typ}")


def _step_of(path: Path) -> Optional[int]:
    name = path.name
    if not name.startswith("step-") or not name[5:].isdigit():
        return None
    return int(name[5:])


class _Checkpoints:
    """Epoch/step checkpoints in ``<out>/checkpoints``: keep the last k of this run, plus ``<out>/best``.

    ``run_id`` (None: any) selects the checkpoints of one run; those of other runs, and any
    checkpoint that fails its integrity check, are never deleted and never resumed from.
    """

    def __init__(self, out: Path, keep_last: int, run_id: Optional[str] = None) -> None:
        self.dir = out / "checkpoints"
        self.best = out / "best"
        self.keep_last = max(1, keep_last)
        self.run_id = run_id

    def entries(self):
        """``(step, path)`` of every ``step-<number>`` directory, newest (highest step) first."""
        if not self.dir.is_dir():
            return []
        found = [(_step_of(p), p) for p in self.dir.iterdir() if p.is_dir()]
        return sorted(((s, p) for s, p in found if s is not None), key=lambda e: e[0], reverse=True)

    def candidates(self):
        return [p for _, p in self.entries()]

    def _load_own(self, step: int, path: Path) -> Tuple[Dict, Dict]:
        """Load and verify one checkpoint of this run (CorruptCheckpointError otherwise)."""
        tensors, meta = load_checkpoint(path)
        if meta.get("step", step) != step:
            raise CorruptCheckpointError(f"{path}: meta.json says step {meta.get('step')!r}, the folder name {step}")
        if self.run_id is not None and meta.get("run_id") != self.run_id:
            raise _ForeignCheckpoint(f"{path} belongs to run {meta.get('run_id')!r}, not to {self.run_id!r}")
        return tensors, meta

    def valid(self) -> Iterator[Tuple[Path, Dict, Dict]]:
        """``(path, tensors, meta)`` of each valid checkpoint of this run, newest first; a warning for
        each corrupt one skipped."""
        foreign = 0
        for step, path in self.entries():
            try:
                tensors, meta = self._load_own(step, path)
            except _ForeignCheckpoint:
                foreign += 1
                continue
            except CorruptCheckpointError as e:
                print(f"warning: skipping corrupt checkpoint ({e})", file=sys.stderr)
                continue
            yield path, tensors, meta
        if foreign:
            print(f"warning: ignored {foreign} checkpoint(s) of another run in {self.dir}", file=sys.stderr)

    def latest_valid(self) -> Optional[Tuple[Dict, Dict]]:
        for _, tensors, meta in self.valid():
            return tensors, meta
        return None

    def save(self, step: int, tensors, meta, is_best: bool) -> Path:
        if self.run_id is not None:
            meta = dict(meta, run_id=self.run_id)
        path = save_checkpoint(self.dir / f"step-{step:09d}", tensors, meta)
        if is_best:
            save_checkpoint(self.best, tensors, meta)
        self.prune(step)
        return path

    def prune(self, newest: int) -> None:
        """Delete this run's valid checkpoints older than step ``newest`` beyond the last ``keep_last``
        (counting the one at ``newest``). Newer steps, other runs' and unverifiable checkpoints stay."""
        kept = 1
        for step, path in self.entries():
            if step >= newest:
                continue
            try:
                self._load_own(step, path)
            except CorruptCheckpointError:   # corrupt, or another run's: not ours to delete
                continue
            if kept < self.keep_last:
                kept += 1
            else:
                shutil.rmtree(path, ignore_errors=True)


class _ForeignCheckpoint(CorruptCheckpointError):
    """A valid checkpoint of another run."""


class RunExistsError(ValueError):
    """``--trainer.out`` already holds a run and ``--resume`` was not given."""


def _read_run_id(out: Path) -> Optional[str]:
    try:
        info = json.loads((out / RUN_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        print(f"warning: ignoring unreadable {out / RUN_FILE} ({e})", file=sys.stderr)
        return None
    run_id = info.get("run_id") if isinstance(info, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def _write_run_id(out: Path, run_id: str, cfg: TrainConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{RUN_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps({"run_id": run_id, "config": cfg.to_dict()}, indent=1))
    os.replace(tmp, out / RUN_FILE)


#: What a run writes into ``<out>`` (removed by ``train(..., replace=True)``).
RUN_OUTPUTS = ("checkpoints", "best", RUN_FILE, "summary.json", "metrics.csv", "curves.png", "tensorboard")


def _check_out_folder(out: Path, ckpts: "_Checkpoints", resume: bool, replace: bool = False) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"trainer.out: got {str(out)!r}, which is a file; allowed: a folder (new or holding this run)")
    if resume:
        return
    if replace:
        for name in RUN_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        return
    held = ckpts.entries()
    if held or ckpts.best.exists():
        what = f"checkpoints up to step {held[0][0]}" if held else "a best/ checkpoint"
        raise RunExistsError(f"{out} already holds a run ({what}); continue it with --resume, or choose another "
                             "--trainer.out")


class Progress:
    """Progress within an epoch: a tqdm bar when its stream is a terminal, else (a log file, a pipe,
    a batch job) one plain line at most every ``interval`` seconds, so logs hold no ``\\r``-redrawn bars.

    ``STATESPACES_PROGRESS_SECONDS`` sets ``interval`` (default 30)."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True, stream=None,
                 interval: Optional[float] = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total, self.n, self.desc, self.enabled, self.postfix = total, initial, desc, enabled, ""
        if interval is None:
            try:
                interval = float(os.environ.get("STATESPACES_PROGRESS_SECONDS", "30"))
            except ValueError:
                interval = 30.0
        self.interval = interval
        isatty = getattr(self.stream, "isatty", None)
        self.bar = (tqdm(total=total, initial=initial, desc=desc, leave=False, file=self.stream)
                    if enabled and isatty is not None and isatty() else None)
        self.t0 = self.last = time.time()
        self.start = initial

    def update(self, n: int = 1, loss: Optional[float] = None) -> None:
        self.n += n
        if loss is not None:
            self.postfix = f"loss {loss:.3f}"
        if self.bar is not None:
            self.bar.update(n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.3f}")
            return
        now = time.time()
        if self.enabled and now - self.last >= self.interval and self.n < self.total:
            self.last = now
            rate = (self.n - self.start) / max(now - self.t0, 1e-9)
            parts = [self.desc, f"step {self.n}/{self.total}", self.postfix, f"{rate:.1f} steps/s"]
            print("  ".join(p for p in parts if p), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


TENSORBOARD_MODES = ("auto", "on", "off")


def _tensorboard(mode: str, out: Path, step: int):
    """A ``SummaryWriter`` for ``<out>/tensorboard``, or None (mode "off", or "auto" without the package).

    On resume, ``purge_step`` drops events a killed run wrote after its last checkpoint, so the
    curves show each step once.
    """
    if mode not in TENSORBOARD_MODES:
        raise ValueError(f"trainer.tensorboard={mode!r}; valid: {', '.join(TENSORBOARD_MODES)}")
    if mode == "off":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if mode == "on":
            raise ImportError("trainer.tensorboard='on' needs the tensorboard package: pip install tensorboard "
                              "(or pip install 'statespaces[tensorboard]'), or set --trainer.tensorboard off") from None
        return None
    return SummaryWriter(str(out / "tensorboard"), purge_step=step if step else None)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, replace: bool = False) -> Dict[str, Any]:
    """Train ``cfg`` and return the final summary (also written to ``<out>/summary.json``).

    With ``resume=True``, training continues from the newest valid checkpoint of this run in
    ``<out>`` and produces the same result as an uninterrupted run with the same config. Without
    it, a folder that already holds checkpoints is refused (:class:`RunExistsError`), unless
    ``replace=True``, which deletes that run's outputs (:data:`RUN_OUTPUTS`) first.
    """
    cfg = cfg.validated()
    rank, world = _distributed()
    t_cfg = cfg.trainer
    device = _device(t_cfg.device, rank)
    out = Path(t_cfg.out)
    ckpts = _Checkpoints(out, t_cfg.keep_last)
    main = rank == 0
    if replace and resume:
        raise ValueError("train(): resume=True continues the run in trainer.out, replace=True deletes it; pick one")
    if main or not replace:
        _check_out_folder(out, ckpts, resume, replace)
    ckpts.run_id = _read_run_id(out) if resume else None
    adopt = ckpts.run_id is None and resume   # a folder without run.json: resume its newest valid checkpoint
    if t_cfg.batch_size % world:
        raise ValueError(f"trainer.batch_size={t_cfg.batch_size} must be divisible by the {world} processes")

    torch.manual_seed(t_cfg.seed)
    data = load_data(cfg)
    train_set, val_set = data.train, None
    if t_cfg.val_fraction > 0:
        fit, held = validation_split(data, t_cfg.val_fraction, t_cfg.seed)
        train_set, val_set = Subset(data.train, fit), Subset(data.train, held)
    task = data.task
    selection = SELECTION_LAST if val_set is None else (
        "validation R^2" if task == "regression" else "validation accuracy")
    model = build_model(cfg, data.d_input, data.n_classes, task).to(device)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if use_compile(t_cfg.compile, model):
        net = torch.compile(net)
    opt = torch.optim.AdamW(param_groups(model, lr=t_cfg.lr, weight_decay=t_cfg.weight_decay, ssm_lr=t_cfg.ssm_lr))
    if t_cfg.bucket or t_cfg.min_steps > 0:
        # length-bucketed batches cut to their longest series, and/or several passes per epoch so
        # that the run takes at least trainer.min_steps steps (statespaces.data.sampler)
        if world > 1:
            raise ConfigError(f"trainer.bucket / trainer.min_steps: not supported with {world} processes; "
                              "allowed: bucket = false and min_steps = 0 under torchrun")
        lengths = dataset_lengths(train_set) if t_cfg.bucket else None
        sampler = BucketBatchSampler(lengths, t_cfg.batch_size, n=len(train_set), window=50 if t_cfg.bucket else 1,
                                     seed=t_cfg.seed)
        sampler.passes = passes_for(t_cfg.min_steps, t_cfg.epochs, sampler.batches_per_pass())
        loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=trim_collate,
                            generator=torch.Generator().manual_seed(t_cfg.seed))   # own generator: see below
    else:
        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=t_cfg.seed)
        # own generator: creating the loader iterator must not consume the global RNG (dropout), or a
        # run resumed mid-epoch would draw different dropout masks than the uninterrupted run
        loader = DataLoader(train_set, batch_size=t_cfg.batch_size // world, sampler=sampler,
                            generator=torch.Generator().manual_seed(t_cfg.seed))
    steps_per_epoch = len(loader)
    total = t_cfg.epochs * steps_per_epoch

    def lr_factor(s: int) -> float:
        if s < t_cfg.warmup_steps:
            return (s + 1) / t_cfg.warmup_steps
        progress_ = (s - t_cfg.warmup_steps) / max(1, total - t_cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    step, history, best_acc, run = 0, [], -1.0, {"loss": 0.0, "correct": 0, "seen": 0}
    seconds_before = 0.0     # training time of the earlier segments of a resumed run
    if resume:
        # the fresh state, put back if a checkpoint fails half-way through its restore and none after it works
        fresh = ({k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict(), sched.state_dict(),
                 torch.get_rng_state())
        touched = False
        for path, tensors, meta in ckpts.valid():
            try:
                _check_meta(path, meta, RESUME_KEYS)
            except CorruptCheckpointError as e:
                print(f"warning: skipping incomplete checkpoint ({e})", file=sys.stderr)
                continue
            conflicts = config_conflicts(meta["config"], cfg.to_dict())
            if conflicts:
                what = "; ".join(f"{k} = {a!r} there, {b!r} here" for k, (a, b) in conflicts.items())
                raise ConfigError(
                    f"the run in {out} was written with a different config ({what}); resume with its settings "
                    "(statespaces train --trainer.out DIR --resume reads them), or choose a new --trainer.out"
                )
            touched = True
            try:
                model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
                opt.load_state_dict(unpack_state(meta["optimizer"], tensors))
                sched.load_state_dict(meta["scheduler"])
                torch.set_rng_state(tensors["rng.torch"])
                run = {k: meta["running"][k] for k in ("loss", "correct", "seen")}
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
                # a later valid checkpoint loads every piece again, so a partial restore is overwritten
                print(f"warning: skipping checkpoint that does not restore ({path}: {type(e).__name__}: {e})",
                      file=sys.stderr)
                continue
            step, history, best_acc = meta["step"], meta["history"], meta["best_acc"]
            seconds = meta.get("train_seconds", 0.0)
            seconds_before = float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else 0.0
            if adopt:
                ckpts.run_id = meta["run_id"]
            if main:
                print(f"resumed at step {step} (epoch {step // steps_per_epoch + 1}) from {path}", file=sys.stderr)
            break
        else:
            if touched:
                model.load_state_dict(fresh[0])
                opt.load_state_dict(fresh[1])
                sched.load_state_dict(fresh[2])
                torch.set_rng_state(fresh[3])
                run = {"loss": 0.0, "correct": 0, "seen": 0}
            if ckpts.entries() and main:
                print(f"warning: no valid checkpoint of this run in {ckpts.dir}; starting from step 0",
                      file=sys.stderr)
    if ckpts.run_id is None:
        ckpts.run_id = uuid.uuid4().hex
    if main:
        _write_run_id(out, ckpts.run_id, cfg)

    test_loader = DataLoader(data.test, batch_size=256)
    val_loader = DataLoader(val_set, batch_size=256) if val_set is not None else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if t_cfg.amp else nullcontext()
    n_params = sum(p.numel() for p in model.parameters())
    t_start = time.time()
    tb = _tensorboard(t_cfg.tensorboard, out, step) if main else None

    def checkpoint(is_best: bool) -> None:
        if not main:
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {
            "config": cfg.to_dict(), "step": step, "epoch": step // steps_per_epoch, "history": history,
            "best_acc": best_acc, "running": run, "scheduler": sched.state_dict(),
            "optimizer": pack_state("optim", opt.state_dict(), tensors),
            "d_input": data.d_input, "n_classes": data.n_classes, "task": task,
            "train_seconds": seconds_before + time.time() - t_start,
            # how best/ is chosen, and whether this checkpoint is the one chosen so far
            "selection": {"by": selection, "selected": bool(is_best), "epochs": t_cfg.epochs,
                          "val_acc": history[-1]["val_acc"] if is_best and history else None},
        }
        if data.classes is not None:
            meta["classes"] = [str(c) for c in data.classes]
        ckpts.save(step, tensors, meta, is_best)

    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        net.train()
        t0 = time.time()
        bar = Progress(steps_per_epoch, offset, f"epoch {epoch + 1}/{t_cfg.epochs}", enabled=progress and main)
        for i, batch in enumerate(loader):
            if i < offset:
                continue  # resuming inside an epoch: the sampler order is a function of (seed, epoch)
            x, y, lengths = _unpack(batch, device)

            def diverged(what: str) -> FloatingPointError:
                bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
                return FloatingPointError(
                    f"{what} at step {step} (epoch {epoch + 1}); non-finite parameters: {bad or 'none'}. Lower "
                    f"trainer.lr / trainer.ssm_lr or set trainer.grad_clip; the last good checkpoint is in {ckpts.dir}"
                )

            try:
                with autocast:
                    logits = net(x, lengths)
            except FloatingPointError as e:
                raise diverged(f"the forward pass failed ({e})") from e
            loss = task_loss(task, logits, y)
            if not torch.isfinite(loss):
                raise diverged(f"loss became {loss.item()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t_cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), t_cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            loss_value = loss.item()
            run["loss"] += loss_value * len(y)
            run["correct"] += task_hits(task, logits.detach(), y)
            run["seen"] += len(y)
            bar.update(1, loss=run["loss"] / run["seen"])
            if tb is not None:
                tb.add_scalar("train/loss_step", loss_value, step)
                tb.add_scalar("train/lr", sched.get_last_lr()[0], step)
            if t_cfg.checkpoint_every and step % t_cfg.checkpoint_every == 0 and step % steps_per_epoch:
                checkpoint(is_best=False)
        bar.close()
        if world > 1:
            dist.barrier()
        if main:
            test = evaluate(model, test_loader, device, task)
            val = evaluate(model, val_loader, device, task) if val_loader is not None else None
            train_score = (1.0 - run["correct"] / run["seen"] / float(_target_var(train_set))
                           if task == "regression" else run["correct"] / run["seen"])
            record = {
                "epoch": epoch + 1, "step": step, "train_loss": run["loss"] / run["seen"],
                "train_acc": train_score, "val_acc": val["acc"] if val else None,
                "test_loss": test["loss"], "test_acc": test["acc"], "seconds": time.time() - t0,
            }
            history.append(record)
            # best/: the epoch with the highest validation score, or the last epoch without a validation
            # split; the test score is reported, never used to choose
            chosen = select_epoch(history, selection)
            is_best = chosen is record
            if val is not None:
                best_acc = chosen["val_acc"]
            name = "R2" if task == "regression" else "acc"
            print(
                f"epoch {epoch + 1:3d}/{t_cfg.epochs}  train loss {record['train_loss']:.4f} "
                f"{name} {100 * record['train_acc']:5.1f}%"
                + (f"  |  val {name} {100 * val['acc']:5.1f}%" if val else "")
                + f"  |  test loss {test['loss']:.4f} {name} {100 * test['acc']:5.1f}%  |  {record['seconds']:.1f}s",
                flush=True,
            )
            run = {"loss": 0.0, "correct": 0, "seen": 0}
            if tb is not None:
                for key in ("train_loss", "train_acc", "val_acc", "test_loss", "test_acc"):
                    if record[key] is not None:
                        tb.add_scalar(key.replace("_", "/", 1), record[key], step)
                tb.flush()
            checkpoint(is_best)
        else:
            run = {"loss": 0.0, "correct": 0, "seen": 0}
    summary: Dict[str, Any] = {}
    if tb is not None:
        tb.close()
    if main:
        this_run = time.time() - t_start
        _write_metrics(out, history)
        final = history[-1] if history else {}
        chosen = select_epoch(history, selection)
        summary = {
            "dataset": data.name, "task": task, "layer": cfg.model.layer, "params": n_params, "epochs": t_cfg.epochs,
            # the model in best/: which epoch, chosen how (never on the test split), and its scores
            "selection": selection, "selected_epoch": chosen.get("epoch"), "selected_val_acc": chosen.get("val_acc"),
            "test_acc": chosen.get("test_acc"), "final_test_acc": final.get("test_acc"),
            "steps": step, "passes_per_epoch": getattr(sampler, "passes", 1),
            "val_fraction": t_cfg.val_fraction, "n_train": len(train_set), "n_val": len(val_set) if val_set else 0,
            "n_test": len(data.test), "processes": world,
            "train_seconds": seconds_before + this_run, "train_seconds_this_run": this_run,
            "checkpoints": str(ckpts.dir), "best": str(ckpts.best),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if world > 1:  # every rank done before the process group is torn down
        dist.barrier()
        dist.destroy_process_group()
    return summary


#: ``selection`` when there is no validation split.
SELECTION_LAST = "last epoch"


def select_epoch(history, selection: str) -> Dict[str, Any]:
    """The history record of the epoch in ``best/``: the first epoch with the highest validation
    score, or the last epoch (``selection == "last epoch"``); ``{}`` without history."""
    if not history:
        return {}
    if selection == SELECTION_LAST:
        return history[-1]
    best = history[0]
    for h in history[1:]:
        if h["val_acc"] is not None and (best["val_acc"] is None or h["val_acc"] > best["val_acc"]):
            best = h
    return best


def validation_split(data, fraction: float, seed: int) -> Tuple[list, list]:
    """``(fit, held)`` indices of the training split: ``fraction`` of it held out for validation,
    stratified by class for classification (each class keeps at least one training example) and
    seeded by ``seed``; a plain seeded draw for other tasks."""
    n = len(data.train)
    g = torch.Generator().manual_seed(seed)
    if n < 2:
        raise ConfigError(f"trainer.val_fraction: got {fraction!r}, but {data.name!r} has {n} training example; "
                          "allowed: 0 (best/ = the last epoch)")
    y = data.train.tensors[1]
    if data.task == "classification" and y.dim() == 1:
        held, fit = [], []
        for c in torch.unique(y).tolist():
            idx = torch.nonzero(y == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)].tolist()
            k = min(int(round(fraction * len(idx))), len(idx) - 1)
            held += idx[:k]
            fit += idx[k:]
        if not held:   # every class too small to give one: take one example of the largest class
            counts = torch.bincount(y)
            c = int(counts.argmax())
            if int(counts[c]) < 2:
                raise ConfigError(f"trainer.val_fraction: got {fraction!r}, but no class of {data.name!r} has two "
                                  "training examples; allowed: 0 (best/ = the last epoch)")
            first = next(i for i in fit if int(y[i]) == c)
            fit.remove(first)
            held.append(first)
        return sorted(fit), sorted(held)
    perm = torch.randperm(n, generator=g).tolist()
    k = min(max(1, int(round(fraction * n))), n - 1)
    return sorted(perm[k:]), sorted(perm[:k])


def _target_var(ds) -> float:
    """Mean squared deviation of the regression targets of a (sub)dataset (the R^2 denominator)."""
    base = ds.dataset if isinstance(ds, Subset) else ds
    y = base.tensors[1].float()
    if isinstance(ds, Subset):
        y = y[torch.as_tensor(ds.indices)]
    return float(((y - y.mean()) ** 2).mean())


def _write_metrics(out: Path, history) -> None:
    if not history:
        return
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["test_loss"] for h in history], label="test")
    a.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    b.plot(ep, [100 * h["train_acc"] for h in history], label="train")
    if history[0]["val_acc"] is not None:
        b.plot(ep, [100 * h["val_acc"] for h in history], label="val")
    b.plot(ep, [100 * h["test_acc"] for h in history], label="test")
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)


def stored_config(out) -> Optional[Tuple[Dict[str, Any], str]]:
    """``(config, source)`` of the run in folder ``out``: from its newest valid checkpoint (of the
    run named in ``run.json``), else from ``run.json`` (a run killed before its first checkpoint);
    None when the folder holds neither."""
    out = Path(out)
    if not out.is_dir():
        return None
    ckpts = _Checkpoints(out, keep_last=1, run_id=_read_run_id(out))
    for path, _, meta in ckpts.valid():
        if isinstance(meta.get("config"), dict):
            return meta["config"], str(path)
    try:
        info = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(info, dict) and isinstance(info.get("config"), dict):
        return info["config"], str(out / RUN_FILE)
    return None


def checkpoint_dir(path) -> Path:
    """A checkpoint directory: ``path`` itself, or ``<path>/best`` when ``path`` is a run folder."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: expected a checkpoint directory (a run's best/ or "
                                "checkpoints/step-*) or a run folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{path} is a file; a checkpoint is a directory (a run's best/ or "
                                 "checkpoints/step-*), or pass the run folder")
    if not (folder / "meta.json").exists():
        if (folder / "best" / "meta.json").exists():
            return folder / "best"
        if (folder / "checkpoints").is_dir() or (folder / "best").is_dir():
            raise FileNotFoundError(f"{path} is a run folder without a complete best/ checkpoint; use one of "
                                    f"{folder / 'checkpoints'}/step-*")
    return folder


def load_trained(path: str) -> Tuple[SequenceClassifier, TrainConfig]:
    """Rebuild the model stored in a checkpoint directory (weights only read through safetensors);
    a run folder stands for its ``best/`` checkpoint.

    Raises :class:`CorruptCheckpointError` naming what failed: a checksum (weights or metadata), a
    missing metadata entry, an invalid stored config, or weights that do not fit the model."""
    model, cfg, _ = _load_trained(path)
    return model, cfg


def _load_trained(path) -> Tuple[SequenceClassifier, TrainConfig, Dict[str, Any]]:
    path = checkpoint_dir(path)
    tensors, meta = load_checkpoint(path)
    _check_meta(path, meta, MODEL_KEYS)
    try:
        cfg = TrainConfig.from_dict(meta["config"])
    except ValueError as e:
        raise CorruptCheckpointError(f"{path}: meta.json holds an invalid config ({e})") from None
    task = meta.get("task", "classification")
    if task not in ("classification", "regression", "seq2seq"):
        raise CorruptCheckpointError(f"{path}: meta.json entry 'task' is {task!r}, not classification, regression "
                                     "or seq2seq")
    model = build_model(cfg, meta["d_input"], meta["n_classes"], task)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise CorruptCheckpointError(f"{path}: the weights do not fit the model of its config ({msg})") from None
    return model, cfg, meta


def describe_selection(meta: Dict[str, Any], path) -> str:
    """How the model of a checkpoint was chosen, in words (from its ``selection`` metadata)."""
    epoch, step = meta.get("epoch"), meta.get("step")
    sel = meta.get("selection")
    trainer = meta.get("config", {}).get("trainer", {}) if isinstance(meta.get("config"), dict) else {}
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
            val_text = f" {val:.4f}" if sel.get("by") == "validation R^2" else f" {100 * val:.2f}%"
        return f"{where}, chosen by {sel.get('by')}{val_text}"
    if Path(path).name == "best" and trainer.get("val_fraction", 0) == 0:
        return (f"{where}, chosen by TEST accuracy by an older version of statespaces: this number is optimistic, "
                "not a held-out estimate")
    return f"{where}, selection not recorded (older checkpoint)"


def evaluate_checkpoint(path: str, data_name: Optional[str] = None) -> Dict[str, Any]:
    """Test-set loss and score of a saved model (a run folder stands for its ``best/``).

    ``data_name`` points the checkpoint at other data, e.g. the same files moved elsewhere: it must
    have the checkpoint's number of channels and classes (and class names, when recorded).
    The result also says which epoch the checkpoint holds and how it was chosen (``selection``)."""
    folder = checkpoint_dir(path)
    model, cfg, meta = _load_trained(folder)
    if data_name is not None:
        from ..data import canonical_name

        cfg.data.name = canonical_name(data_name)
    data = load_data(cfg)
    if data_name is not None:
        classes = meta.get("classes")
        if (data.d_input, data.n_classes) != (meta["d_input"], meta["n_classes"]):
            raise ValueError(f"--data.name {data_name}: {data.name} has {data.d_input} channels and {data.n_classes} "
                             f"classes, the checkpoint {meta['d_input']} and {meta['n_classes']}")
        if isinstance(classes, list) and data.classes is not None and [str(c) for c in data.classes] != classes:
            raise ValueError(f"--data.name {data_name}: its classes {list(data.classes)} differ from the "
                             f"checkpoint's {classes}")
    res = evaluate(model, DataLoader(data.test, batch_size=256), task=data.task)
    res.update(checkpoint=str(folder), dataset=data.name, task=data.task, n_test=len(data.test),
               epoch=meta.get("epoch"), selection=describe_selection(meta, folder))
    return res
