"""A training run on disk and across processes: its folder, id, checkpoints, resume and DDP.

A :class:`Run` owns ``<out>`` (``trainer.out``): the run id in ``<out>/run.json`` (and ``run_id``
in every checkpoint's metadata), the epoch/step checkpoints in ``<out>/checkpoints`` (safetensors
+ JSON, atomic, checksummed; :mod:`statespaces.train.checkpoint`) with the last k kept plus
``<out>/best``, the restore of a resumed run, and the process group of a ``torchrun`` launch
(gloo on CPU, NCCL on GPU; rank 0 writes). It knows nothing about models or data beyond the state
dicts it is handed.

A new run refuses a folder that already holds checkpoints (resume it, or choose another
``--trainer.out``); resuming picks the newest checkpoint of this run that passes its integrity
check (weights and metadata) and holds every entry a resume needs, falling back to older ones;
pruning only ever deletes valid checkpoints of this run older than the one just written, never
anything it cannot verify or that belongs to another run.
"""
from __future__ import annotations

import gc
import json
import math
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from .._checks import file_in_the_way
from .checkpoint import (
    CorruptCheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    unpack_state,
    with_prefix,
)
from .config import ConfigError, TrainConfig, config_conflicts


def _distributed() -> Tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def available_devices() -> List[str]:
    """The devices this machine can train on, as ``trainer.device`` spells them (for messages):
    ``cpu``, each ``cuda:N``, ``mps``, each ``xpu:N``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        names += [f"xpu:{i}" for i in range(xpu.device_count())]
    return names


def _usable(device: torch.device, available: List[str]) -> bool:
    """Whether ``device`` is one of ``available`` (a type without an index: any device of that type)."""
    if device.type == "cpu":
        return True
    if device.index is None:
        return any(a.split(":")[0] == device.type for a in available)
    return str(device) in available or (device.type == "mps" and device.index == 0 and "mps" in available)


def _device(name: str, rank: int) -> torch.device:
    """The device of ``trainer.device`` for this rank; :class:`ConfigError` (one line, listing the devices of this
    machine) for one that is not here, or for ``meta`` (tensors without data: nothing can be trained on it)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(name)
    available = available_devices()
    here = ", ".join(["auto", *available])
    if device.type == "meta":
        raise ConfigError(f"trainer.device: got {name!r}, which holds no data (shapes only) and cannot train; "
                          f"available here: {here}")
    if not _usable(device, available):
        raise ConfigError(f"trainer.device: got {name!r} but it is not available here; available here: {here}")
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


def _resume_note(step: int, steps_per_epoch: int, config: Dict[str, Any], path) -> str:
    """The line a resumed run prints: where it goes on, or, for a run that already finished its epochs, that
    nothing is left to train (no epoch number past the last)."""
    trainer = config.get("trainer", {}) if isinstance(config, dict) else {}
    epochs = trainer.get("epochs")
    if isinstance(epochs, int) and step >= epochs * steps_per_epoch:
        return (f"the run already finished its {epochs} epoch{'s' if epochs != 1 else ''} (step {step}, {path}): "
                "nothing left to train; rewriting its summary, metrics and curves from the stored history")
    of = f" of {epochs}" if isinstance(epochs, int) else ""
    return f"resumed at step {step} (epoch {step // steps_per_epoch + 1}{of}) from {path}"


def _step_of(path: Path) -> Optional[int]:
    name = path.name
    if not name.startswith("step-") or not name[5:].isdigit():
        return None
    return int(name[5:])


_WARNED: set = set()


def _warn_once(message: str) -> None:
    """Print a warning on stderr once per process: a resume reads the checkpoints in several passes (the stored
    config, the restore, the prune), and a corrupt one was reported by each."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(message, file=sys.stderr)


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
                _warn_once(f"warning: skipping corrupt checkpoint ({e})")
                continue
            yield path, tensors, meta
        if foreign:
            print(f"warning: ignored {foreign} checkpoint(s) of another run in {self.dir}", file=sys.stderr)

    def latest_valid(self) -> Optional[Tuple[Dict, Dict]]:
        for _, tensors, meta in self.valid():
            return tensors, meta
        return None

    def save(self, step: int, tensors, meta, is_best: bool) -> Path:
        """Write ``checkpoints/step-<step>``, then ``best/`` when ``is_best``, then prune. A crash between
        the two writes leaves ``best/`` an epoch behind; the resume repairs it (:meth:`ensure_best`)."""
        if self.run_id is not None:
            meta = dict(meta, run_id=self.run_id)
        path = save_checkpoint(self.dir / f"step-{step:09d}", tensors, meta)
        if is_best:
            save_checkpoint(self.best, tensors, meta)
        self.prune(step)
        return path

    def ensure_best(self, step: Optional[int], epoch: Optional[int] = None) -> Optional[str]:
        """Make ``best/`` hold this run's checkpoint of ``step`` (the selected epoch): nothing to do when it does,
        rewritten (with a warning) from ``checkpoints/step-<step>`` when that is still kept; otherwise the reason
        it cannot, for the caller to report (``best/`` damaged or deleted after its epoch's step checkpoint was
        pruned: no copy of the selected weights is left). None when it holds it or ``step`` is None.

        The step checkpoint is written before ``best/``, so a kill or a full disk between the two leaves ``best/`` on
        an older epoch while the history already chose this one; the resume calls this to repair it (else the
        finished run's ``summary.json`` would disagree with ``statespaces evaluate``), and the end of a run to check
        that the weights it names are there."""
        if step is None:
            return None
        try:
            held = load_checkpoint(self.best)[1]
            why = f"it holds step {held.get('step')!r}"
        except FileNotFoundError:
            held, why = {}, "it is missing"
        except CorruptCheckpointError as e:
            held, why = {}, f"it is damaged ({' '.join(str(e).split())})"
        if held.get("step") == step and (self.run_id is None or held.get("run_id") == self.run_id):
            return None
        what = f"the selected epoch {epoch} (step {step})" if epoch is not None else f"the selected step {step}"
        kept = dict(self.entries()).get(step)
        if kept is not None:
            try:
                tensors, meta = self._load_own(step, kept)
            except CorruptCheckpointError:
                pass
            else:
                print(f"warning: {self.best} did not hold the selected step {step}"
                      f"{'' if epoch is None else f' (epoch {epoch})'}: {why} (a run stopped between writing "
                      f"{kept.name} and best/, or best/ damaged or deleted since); rewritten from {kept}",
                      file=sys.stderr)
                save_checkpoint(self.best, tensors, meta)
                return None
        return (f"{self.best} does not hold {what}: {why}, and no checkpoint of that step is kept (pruned, or "
                f"damaged too) to rewrite it from")

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
            else:          # renamed out of the way first: a kill mid-delete leaves a hidden temporary, not a wreck
                doomed = path.parent / f".{path.name}.del{os.getpid()}"
                os.replace(path, doomed)
                shutil.rmtree(doomed, ignore_errors=True)


class _ForeignCheckpoint(CorruptCheckpointError):
    """A valid checkpoint of another run."""


class RunExistsError(ValueError):
    """``--trainer.out`` already holds a run and ``--resume`` was not given, or another process trains there."""


#: The lock file of a run folder: held (``flock``) by the process that trains there, with its PID inside.
LOCK_FILE = ".lock"


def lock_run_folder(out: Path) -> Optional[Any]:
    """Create ``out`` and take its lock (:data:`LOCK_FILE`): the open file, to keep until the run ends (the
    operating system releases it when the process dies, so a killed run leaves no stale lock); ``None`` where
    ``fcntl`` is missing (Windows: no lock). Raises :class:`RunExistsError` naming the PID of the process that
    holds it: two processes writing one folder would interleave their checkpoints, ``best/`` and summary."""
    try:
        import fcntl
    except ImportError:                                  # pragma: no cover - Windows
        return None
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / LOCK_FILE, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = ""
        for _ in range(5):                # the holder writes its PID just after taking the lock
            f.seek(0)
            owner = f.read().strip()
            if owner:
                break
            time.sleep(0.05)
        f.close()
        owner = owner or "unknown"
        raise RunExistsError(f"{out} is in use: another process (PID {owner}) is training there; wait for it to "
                             "end, or choose another --trainer.out") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


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
RUN_OUTPUTS = ("checkpoints", "best", RUN_FILE, "summary.json", "metrics.csv", "curves.png", "tensorboard",
               "analysis", "generated")      # the last two: what analyze / generate derived from the run's checkpoints


def _check_out_folder(out: Path, ckpts: "_Checkpoints", resume: bool, replace: bool = False) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"trainer.out: got {str(out)!r}, which is a file; allowed: a folder (new or holding this run)")
    above = file_in_the_way(out)
    if above is not None:
        raise ConfigError(f"trainer.out: got {str(out)!r}, under {str(above)!r}, which is a file; allowed: a folder "
                          "whose parents are folders")
    inside = next((a for a in (out, *out.parents) if a.name in RUN_OUTPUTS and (a.parent / RUN_FILE).is_file()),
                  None)
    if inside is not None:
        raise ConfigError(f"trainer.out: got {str(out)!r}, inside {str(inside)!r}, the {inside.name}/ of the run in "
                          f"{str(inside.parent)!r}: a run there would mix its files with that run's (and evaluate "
                          "would read either); choose a folder outside it")
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
        raise RunExistsError(f"{out} already holds a run ({what}); continue it with --resume (Python: train(cfg, "
                             "resume=True)), or choose another --trainer.out (cfg.trainer.out)")



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
    """A checkpoint directory: ``path`` itself, or ``<path>/best`` when ``path`` is a run folder.

    ``FileNotFoundError`` (one line saying what is missing and what to do) for a path that is
    neither, e.g. the ``--trainer.out`` folder of a run that never wrote a checkpoint."""
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
        steps = sorted(p.name for p in folder.glob("step-*") if (p / "meta.json").exists())
        if folder.name == "checkpoints" and steps:
            raise FileNotFoundError(f"{path} is a run's folder of checkpoints; pass one of them ({folder / steps[-1]} "
                                    f"is the newest) or the run folder {folder.parent} (its best/)")
        if (folder / "checkpoints").is_dir() or (folder / "best").is_dir():
            raise FileNotFoundError(f"{path} is a run folder without a complete best/ checkpoint; use one of "
                                    f"{folder / 'checkpoints'}/step-*")
        raise FileNotFoundError(f"{path} holds no checkpoint (no best/, no checkpoints/, no meta.json): train it "
                                "first or pass a checkpoint directory")
    return folder


def outputs_dir(folder: Path, name: str) -> Path:
    """Where a command writes what it derives from checkpoint ``folder`` (``generate``'s samples, ``analyze``'s
    tables), outside the checkpoints: a live run replaces ``best/`` every epoch and prunes old ``step-*`` folders.
    ``RUN/best`` -> ``RUN/<name>``; ``RUN/checkpoints/step-N`` -> ``RUN/<name>/step-N``; any other folder ->
    ``<folder>/<name>``."""
    folder = Path(folder)
    if folder.parent.name == "checkpoints":
        return folder.parent.parent / name / folder.name
    if folder.name == "best":
        return folder.parent / name
    return folder / name


class Run:
    """One training run: its folder ``out``, process group, device, checkpoints and id.

    Construction joins the process group of a ``torchrun`` launch (``WORLD_SIZE > 1``), picks the
    device of this rank, and checks the folder: a new run (``resume=False``) refuses one that
    holds checkpoints unless ``replace=True``, which deletes that run's outputs (:data:`RUN_OUTPUTS`).
    :meth:`restore` loads the newest valid checkpoint of the run into model, optimizer and
    scheduler; :meth:`start` fixes the run id (a fresh one for a new run) and writes ``run.json``;
    :meth:`save` writes a checkpoint (rank 0 only); :meth:`close` ends the process group.
    """

    def __init__(self, out, keep_last: int = 1, resume: bool = False, replace: bool = False,
                 device: str = "auto") -> None:
        if replace and resume:
            raise ValueError("train(): resume=True continues the run in trainer.out, replace=True deletes it; pick one")
        self.rank, self.world = _distributed()
        self.main = self.rank == 0
        self.device = _device(device, self.rank)
        self.out = Path(out)
        self.resume = resume
        self.ckpts = _Checkpoints(self.out, keep_last)
        self._lock: Optional[Any] = None
        self._replace, self._taken = replace, False
        if self.main or not replace:
            if not replace or (self.out.exists() and not self.out.is_dir()):
                _check_out_folder(self.out, self.ckpts, resume)    # a refusal writes nothing, not even the lock
        self.ckpts.run_id = _read_run_id(self.out) if resume else None
        # a folder without run.json: resume its newest valid checkpoint and adopt its run id
        self._adopt = self.ckpts.run_id is None and resume

    def _rank_rng(self, tensors: Dict[str, torch.Tensor]) -> torch.Tensor:
        """This rank's RNG state in a checkpoint: ``rng.torch`` (rank 0's), or ``rng.torch.rank<r>``; a checkpoint
        without it (written by fewer processes, or before per-rank states were kept) gives rank 0's, with a
        warning that the resume is not exact."""
        key = f"rng.torch.rank{self.rank}"
        if self.rank == 0:
            written = 1 + sum(1 for k in tensors if k.startswith("rng.torch.rank"))
            if written != self.world:       # the data each rank sees and its random draws depend on the count
                print(f"warning: the checkpoint was written by {written} process(es), this run has {self.world}: it "
                      "goes on from there, but not as an uninterrupted run would (each rank's share of the data and "
                      "its random draws change); resume with the same number of processes for an exact resume",
                      file=sys.stderr)
        if self.rank == 0 or key in tensors:
            return tensors[key if self.rank else "rng.torch"]
        print(f"warning: the checkpoint holds no RNG state for rank {self.rank} (written by fewer processes or an "
              "older version); this rank resumes from rank 0's, so its dropout masks differ from an uninterrupted "
              "run", file=sys.stderr)
        return tensors["rng.torch"]

    def restore(self, model: torch.nn.Module, optimizer, scheduler, config: Dict[str, Any],
                steps_per_epoch: int, ema: Any = None,
                check: Optional[Callable[[Dict[str, Any]], None]] = None) -> Optional[Dict[str, Any]]:
        """Load the newest valid, complete checkpoint of this run into ``model``, ``optimizer`` and ``scheduler`` (and
        the weight average ``ema``, a :class:`~statespaces.train.averaging.WeightEMA`: the checkpoint's
        ``model.*`` are then the averaged weights, ``train.*`` the trained ones) and set the torch RNG from
        it; return its metadata (None: nothing restored, the fresh state kept). A checkpoint written with
        another config raises :class:`ConfigError` naming the differing keys; one that fails half-way through
        its restore is skipped and its partial restore undone. When the restored checkpoint is the selected
        model and ``best/`` holds another step (a run stopped between the two writes), ``best/`` is rewritten
        from it (:meth:`_Checkpoints.ensure_best`, called by the trainer), so ``best/`` is the epoch the resumed
        history chose. ``check(meta)``
        may refuse a checkpoint before anything is restored or announced (raising; e.g. changed data files).
        """
        self._take_folder()
        if not self.resume:
            return None
        fresh = ({k: v.clone() for k, v in model.state_dict().items()}, optimizer.state_dict(),
                 scheduler.state_dict(), torch.get_rng_state())
        fresh_ema = None if ema is None else {"module": {k: v.clone() for k, v in ema.module.state_dict().items()},
                                              "updates": ema.updates}
        touched = False
        for path, tensors, meta in self.ckpts.valid():
            try:
                _check_meta(path, meta, RESUME_KEYS)
            except CorruptCheckpointError as e:
                print(f"warning: skipping incomplete checkpoint ({e})", file=sys.stderr)
                continue
            conflicts = config_conflicts(meta["config"], config)
            if conflicts:
                what = "; ".join(f"{k} = {a!r} there, {b!r} here" for k, (a, b) in conflicts.items())
                raise ConfigError(
                    f"the run in {self.out} was written with a different config ({what}); resume with its settings "
                    "(statespaces train --trainer.out DIR --resume reads them; Python: "
                    "statespaces.train.loop.stored_config(DIR)), or choose a new --trainer.out"
                )
            if check is not None:
                check(meta)
            touched = True
            try:
                saved = with_prefix(tensors, "model.")
                if ema is None:
                    model.load_state_dict(saved)
                else:
                    model.load_state_dict(with_prefix(tensors, "train."))
                    ema.load_state_dict({"module": saved, "updates": meta["ema_updates"]})
                optimizer.load_state_dict(unpack_state(meta["optimizer"], tensors))
                scheduler.load_state_dict(meta["scheduler"])
                torch.set_rng_state(self._rank_rng(tensors))
                meta = dict(meta, running={k: meta["running"][k] for k in ("loss", "correct", "seen")})
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
                # a later valid checkpoint loads every piece again, so a partial restore is overwritten
                print(f"warning: skipping checkpoint that does not restore ({path}: {type(e).__name__}: {e})",
                      file=sys.stderr)
                continue
            seconds = meta.get("train_seconds", 0.0)
            meta["train_seconds"] = float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) \
                else 0.0
            if self._adopt:
                self.ckpts.run_id = meta["run_id"]
            if self.main:
                print(_resume_note(meta["step"], steps_per_epoch, config, path), file=sys.stderr)
            return meta
        if touched:
            model.load_state_dict(fresh[0])
            if ema is not None:
                ema.load_state_dict(fresh_ema)
            optimizer.load_state_dict(fresh[1])
            scheduler.load_state_dict(fresh[2])
            torch.set_rng_state(fresh[3])
        if self.ckpts.entries() and self.main:
            print(f"warning: no valid checkpoint of this run in {self.ckpts.dir}; starting from step 0",
                  file=sys.stderr)
        return None

    def start(self, cfg: TrainConfig) -> str:
        """Fix the run id (the resumed run's, else a fresh one) and write ``run.json`` (rank 0)."""
        self._take_folder()                  # taken by restore() already in train(); here for other callers
        if self.ckpts.run_id is None:
            self.ckpts.run_id = uuid.uuid4().hex
        if self.main:
            # what a killed save or prune left behind (after restore: best/ has been repaired from its checkpoint)
            for folder in (self.out, self.ckpts.dir):
                remove_stale_temporaries(folder)
            _write_run_id(self.out, self.ckpts.run_id, cfg)
        return self.ckpts.run_id

    def save(self, step: int, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any], is_best: bool) -> None:
        """Write the checkpoint of ``step`` (and ``best/`` when ``is_best``); other ranks write nothing."""
        if self.main:
            self.ckpts.save(step, tensors, meta, is_best)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather_rng(self) -> Optional[List[torch.Tensor]]:
        """Every rank's torch RNG state (on every rank; None with one process). A collective: all ranks call it at
        the same point. Each rank draws its own dropout masks, and rank 0 alone draws for evaluation, so a
        checkpoint keeps one state per rank (``rng.torch.rank<r>``) for an exact resume."""
        if self.world == 1:
            return None
        states: List[Any] = [None] * self.world
        dist.all_gather_object(states, torch.get_rng_state())
        return states

    def all_sum(self, values: Sequence[float]) -> List[float]:
        """``values`` summed over the ranks (a collective; the values themselves with one process)."""
        if self.world == 1:
            return [float(v) for v in values]
        device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def _take_folder(self) -> None:
        """Rank 0 takes the folder's lock (:func:`lock_run_folder`) before the run writes anything there (the
        first write is :meth:`restore`'s repair of ``best/``), then checks the folder again under it: a run may
        have started there since the constructor's check; ``replace`` deletes the old run's outputs now."""
        if self._taken:
            return
        self._taken = True
        error: Optional[Exception] = None
        if self.main:
            try:
                self._lock = lock_run_folder(self.out)
                _check_out_folder(self.out, self.ckpts, self.resume, self._replace)
            except Exception as e:          # any failure here must reach the other ranks, waiting below
                error = e
        if self.world > 1:          # every rank learns rank 0's verdict (the others went on to train and crashed)
            kinds = {"config": ConfigError, "exists": RunExistsError, "os": OSError}
            kind = next((k for k, cls in kinds.items() if isinstance(error, cls)), "other")
            box: List[Any] = [None if error is None else (kind, str(error))]
            dist.broadcast_object_list(box, src=0)
            if box[0] is not None and error is None:
                kind, message = box[0]
                error = kinds.get(kind, RuntimeError)(message)
        if error is not None:
            if self.world > 1:      # every rank is here: end the group cleanly (gloo aborted at exit without it)
                self.close()
            raise error

    def unlock(self) -> None:
        """Release the folder's lock (:func:`lock_run_folder`; rank 0 holds it); idempotent."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def close(self) -> None:
        """Every rank done before the process group is torn down.

        Callers drop their DistributedDataParallel wrapper first: its reducer holds the process group, and one
        left alive until interpreter exit let gloo's threads be destroyed during finalisation, where a rank
        aborted ("terminate called without an active exception", SIGABRT) in about one two-process run in 20.
        The collection here frees a wrapper caught in a reference cycle while the interpreter is whole."""
        self.unlock()
        if self.world > 1:
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()
