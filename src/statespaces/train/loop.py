"""The training loop: AdamW with SSM parameter groups, cosine schedule, progress bar, per-epoch
line, atomic checkpoint every epoch, exact resume (model, optimizer, schedule, RNG, epoch)."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import DATASETS
from ..models import SequenceClassifier
from ..optim import param_groups
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig


def build_model(cfg: TrainConfig, d_input: int, n_classes: int) -> SequenceClassifier:
    layer_kwargs = dict(d_state=cfg.d_state, dt_min=cfg.dt_min, dt_max=cfg.dt_max)
    if cfg.layer in ("s4d", "s4"):
        layer_kwargs["init"] = cfg.init
    layer_kwargs.update(cfg.layer_kwargs)
    return SequenceClassifier(
        d_input, n_classes, d_model=cfg.d_model, n_layers=cfg.n_layers, layer=cfg.layer,
        layer_kwargs=layer_kwargs, norm=cfg.norm, prenorm=cfg.prenorm, dropout=cfg.dropout,
    )


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> Dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader``."""
    model.eval()
    total, loss, correct = 0, 0.0, 0
    for x, y in loader:
        logits = model(x)
        loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        total += len(y)
    return {"loss": loss / total, "acc": correct / total}


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Train ``cfg`` and return the final summary (also written to ``<out>/summary.json``).

    With ``resume=True`` and a ``<out>/last.pt`` present, training continues from the end of the
    last completed epoch and produces the same result as an uninterrupted run.
    """
    if cfg.task not in DATASETS:
        raise ValueError(f"unknown task {cfg.task!r}; valid tasks: {', '.join(DATASETS)}")
    out = Path(cfg.out)
    ckpt_path = out / "last.pt"
    torch.manual_seed(cfg.seed)
    data = DATASETS[cfg.task](seed=cfg.seed)
    model = build_model(cfg, data.d_input, data.n_classes)
    opt = torch.optim.AdamW(param_groups(model, lr=cfg.lr, weight_decay=cfg.weight_decay, ssm_lr=cfg.ssm_lr))
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.epochs * steps_per_epoch) / (cfg.epochs * steps_per_epoch)))
    )
    start_epoch, history = 0, []
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        if ck["config"] != cfg.to_dict():
            raise ValueError(
                f"{ckpt_path} was written with a different config; use the same flags to resume, "
                "or a new --out folder"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
        start_epoch, history = ck["epoch"], ck["history"]
        print(f"resumed from {ckpt_path} after epoch {start_epoch}", file=sys.stderr)
    n_params = sum(p.numel() for p in model.parameters())
    test_loader = DataLoader(data.test, batch_size=256)
    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.time()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, generator=gen)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
        run_loss, run_correct, seen = 0.0, 0, 0
        for x, y in bar:
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch + 1}; lower --lr/--ssm-lr. The last good "
                    f"checkpoint is {ckpt_path}"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += loss.item() * len(y)
            run_correct += (logits.argmax(-1) == y).sum().item()
            seen += len(y)
            bar.set_postfix(loss=f"{run_loss / seen:.3f}", acc=f"{run_correct / seen:.3f}")
        test = evaluate(model, test_loader)
        record = {
            "epoch": epoch + 1, "train_loss": run_loss / seen, "train_acc": run_correct / seen,
            "test_loss": test["loss"], "test_acc": test["acc"], "seconds": time.time() - t0,
        }
        history.append(record)
        print(
            f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {record['train_loss']:.4f}  "
            f"acc {100 * record['train_acc']:5.1f}%  |  test loss {test['loss']:.4f}  "
            f"acc {100 * test['acc']:5.1f}%  |  {record['seconds']:.1f}s",
            flush=True,
        )
        save_checkpoint(
            {
                "config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1,
                "history": history, "d_input": data.d_input, "n_classes": data.n_classes,
            },
            ckpt_path,
        )
    final = history[-1] if history else {}
    summary = {
        "task": data.name, "layer": cfg.layer, "params": n_params, "epochs": cfg.epochs,
        "test_acc": final.get("test_acc"), "best_test_acc": max((h["test_acc"] for h in history), default=None),
        "train_seconds_this_run": time.time() - t_start, "checkpoint": str(ckpt_path),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
