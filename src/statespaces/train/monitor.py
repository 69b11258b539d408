"""What a run shows and records while it trains: progress lines, TensorBoard events, metrics.csv and
the learning-curve PNG (``<out>/curves.png``)."""
from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm


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


def check_tensorboard(mode: str) -> None:
    """Raise now (before a run starts) when ``trainer.tensorboard = "on"`` but the package is missing."""
    if mode == "on":
        tensorboard_writer(mode, Path("."), 0, probe=True)


def tensorboard_writer(mode: str, out: Path, step: int, probe: bool = False) -> Optional[Any]:
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
    if probe:                              # the import is all check_tensorboard asks for
        return None
    return SummaryWriter(str(out / "tensorboard"), purge_step=step if step else None)



def write_metrics_csv(out: Path, history) -> None:
    """``metrics.csv``, one row per epoch (the history records), replaced atomically: the trainer rewrites it at
    every epoch end, so a live or killed run's file holds every finished epoch (``curves.png`` comes at the end)."""
    if not history:
        return
    tmp = out / f".metrics.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, out / "metrics.csv")


def write_metrics(out: Path, history, task: Any = "classification") -> None:
    """``metrics.csv`` (one row per epoch: the history records) and ``curves.png``: the losses, and the task's
    score where it is not the loss itself (accuracy in %, R^2; a language model's NLL is its loss)."""
    from .tasks import get_task

    task = get_task(task)
    if not history:
        return
    write_metrics_csv(out, history)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    def curve(ax, key: str, label: str, scale: float = 1.0) -> None:
        """One series over the epochs that have it (validation and test scores may be absent)."""
        pts = [(h["epoch"], scale * h[key]) for h in history if h.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), label=label)

    panels = 1 if task.score_is_loss else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.5), squeeze=False)
    a = axes[0][0]
    curve(a, "train_loss", "train")
    curve(a, "val_loss", "val")
    curve(a, "test_loss", "test")
    a.set(xlabel="epoch", ylabel=task.loss_label, title="loss")
    if panels == 2:
        b = axes[0][1]
        percent = task.score_in_percent
        for key, label in (("train_acc", "train"), ("val_acc", "val"), ("test_acc", "test")):
            curve(b, key, label, 100 if percent else 1)
        b.set(xlabel="epoch", ylabel=task.score_label + (" (%)" if percent else ""), title=task.score_label)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)

