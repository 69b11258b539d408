"""LinOSS fidelity: the official tk-rusch/linoss JAX model and ours, side by side (issue #18 item 6).

Same data, split and step budget for every arm: the trainer's split of a dataset (``load_data`` +
``validation_split``, 10% stratified validation, seed 0), batches drawn without replacement at
every step (as the official ``train.py``), validation every ``--eval-every`` steps, test accuracy
at the best validation step. Arms:

* ``official``: the official model (``models/LinOSS.py`` imported unchanged) and recipe, run by
  ``experiments/_jax_linoss_fidelity.py`` with a user-given JAX Python (``--jax-python``; jax,
  equinox, optax) -- never a dependency of statespaces;
* torch arms: our :class:`~statespaces.models.SequenceClassifier` with LinOSS layers and the recipe
  options of :data:`ARMS` (norm, time channel, optimizer and schedule, lr, ssm_lr group, batch,
  dropout and its tying), one change at a time from the official recipe ("ours-official") towards
  ours ("ours-recipe", the ``digits-linoss`` preset before the fix).

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python experiments/linoss_fidelity.py --steps 500 \
        --arms ours-official,ours-recipe --jax-python /path/to/jax/python --official /path/to/LinOSS.py

Prints one JSON line per arm and a markdown table at the end. CPU minutes per arm (2 cores).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch
from torch import nn

from statespaces import param_groups
from statespaces.models import SequenceClassifier
from statespaces.train.config import TrainConfig
from statespaces.train.loop import load_data, validation_split

#: The official recipe in our model (tk-rusch/linoss train.py + models/LinOSS.py).
OFFICIAL: Dict[str, Any] = dict(norm="batch-noaffine", final_norm=False, time=True, opt="adam", lr=1e-3, ssm_lr=None,
                                weight_decay=0.0, schedule="constant", batch=32, dropout=0.05, tied=False)
#: Our ``digits-linoss`` recipe before the fix (train/config.py defaults + lr 3e-3).
OURS: Dict[str, Any] = dict(norm="layer", final_norm=True, time=False, opt="adamw", lr=3e-3, ssm_lr=1e-3,
                            weight_decay=0.05, schedule="cosine", batch=64, dropout=0.1, tied=True)
#: Named arms: a base recipe and the options changed from it.
ARMS: Dict[str, Dict[str, Any]] = {
    "ours-official": dict(OFFICIAL),
    "ours-recipe": dict(OURS),
    # one change at a time, from ours towards the official recipe
    "ours-recipe+untied-dropout": dict(OURS, tied=False),
    "ours-recipe+dropout0.05-untied": dict(OURS, dropout=0.05, tied=False),
    "ours-recipe+no-ssm-group": dict(OURS, ssm_lr=None),
    "ours-recipe+batchnorm": dict(OURS, norm="batch-noaffine", final_norm=False),
    "ours-recipe+time": dict(OURS, time=True),
    "ours-recipe+batchnorm-affine": dict(OURS, norm="batch"),     # = model.norm "batch" of the trainer
    "ours-recipe+constant-lr": dict(OURS, schedule="constant"),
    "ours-recipe+lr1e-3": dict(OURS, lr=1e-3),
    "ours-recipe+lr1e-2": dict(OURS, lr=1e-2),
    "ours-recipe+no-dropout": dict(OURS, dropout=0.0),
    # one change at a time, from the official recipe towards ours
    "official+layernorm": dict(OFFICIAL, norm="layer", final_norm=True),
    "official+tied-dropout0.1": dict(OFFICIAL, dropout=0.1, tied=True),
    "official+no-time": dict(OFFICIAL, time=False),
    "official+ssm-group": dict(OFFICIAL, ssm_lr=1e-3, lr=3e-3),
    # our S4D (d_state = P, LegS init) in the same block and recipe: the S4D side of claim L1, same run
    "s4d-official": dict(OFFICIAL, layer="s4d"),
    "s4d-recipe": dict(OURS, layer="s4d"),
    "s4d-recipe+batchnorm-affine": dict(OURS, layer="s4d", norm="batch"),
}


def arrays(dataset: str, val_fraction: float, seed: int) -> Dict[str, np.ndarray]:
    """Train/val/test arrays (N, L, d) and labels of the trainer's split of ``dataset``.

    Variable-length data (JapaneseVowels: 7 to 29 steps) comes as the trainer loads it: right-padded with zeros to
    the longest series. Every arm of this script reads the padded arrays whole, without masks: the official model
    has none, and the torch arms are given the same inputs. (The trainer's presets mask padding instead; their
    figures are not arms of this script.)"""
    cfg = TrainConfig.from_dict({"data": {"name": dataset}})
    data = load_data(cfg)
    fit, held = validation_split(data, val_fraction, seed, "per-class-round")   # the rule its figures were made with
    x, y = data.train.tensors[:2]
    xt, yt = data.test.tensors[:2]
    L = max(x.shape[1], xt.shape[1])          # the splits are stored at their own lengths: one grid, as the figures had
    x, xt = (torch.nn.functional.pad(t, (0, 0, 0, L - t.shape[1])) for t in (x, xt))
    f = lambda t: t.detach().to(torch.float32).numpy()      # noqa: E731
    return dict(xtr=f(x[fit]), ytr=y[fit].numpy(), xva=f(x[held]), yva=y[held].numpy(), xte=f(xt), yte=yt.numpy())


def with_time(x: torch.Tensor) -> torch.Tensor:
    """Prepend a time channel linspace(0, 1, L) to x (N, L, d) (the official data pipeline)."""
    t = torch.linspace(0, 1, x.shape[1], dtype=x.dtype)[None, :, None].expand(x.shape[0], -1, 1)
    return torch.cat([t, x], -1)


def build(r: Dict[str, Any], d_input: int, n_classes: int, H: int, P: int, blocks: int, disc: str,
          mode: str = "conv") -> nn.Module:
    """Our classifier with the recipe's block options (BatchNorm affine, dropout tying, final norm);
    LinOSS layers (P oscillators), or S4D layers (d_state P) for the arms with ``layer="s4d"``."""
    norm = "layer" if r["norm"] == "layer" else "batch"
    layer = (dict(kind="s4d", d_state=P) if r.get("layer") == "s4d"
             else dict(kind="linoss", n_oscillators=P, discretization=disc, mode=mode))
    model = SequenceClassifier(d_input, n_classes, d_model=H, n_layers=blocks, pool="mean", layer=layer, norm=norm,
                               prenorm=True, dropout=r["dropout"], mixing="glu")
    for block in model.blocks:
        if r["norm"] == "batch-noaffine":
            block.norm.norm = nn.BatchNorm1d(H, affine=False)
        if not r["tied"]:
            block.dropout = nn.Dropout(r["dropout"])
    if not r["final_norm"]:
        model.final_norm = nn.Identity()
    return model


def run_torch(name: str, r: Dict[str, Any], a: Dict[str, np.ndarray], steps: int, H: int, P: int, blocks: int,
              disc: str, seed: int, eval_every: int, mode: str = "conv") -> Dict[str, Any]:
    torch.manual_seed(seed)
    xs = {k: torch.from_numpy(a[k]) for k in ("xtr", "xva", "xte")}
    if r["time"]:
        xs = {k: with_time(v) for k, v in xs.items()}
    ytr, yva, yte = (torch.from_numpy(a[k]).long() for k in ("ytr", "yva", "yte"))
    n_classes = int(max(ytr.max(), yva.max(), yte.max())) + 1
    model = build(r, xs["xtr"].shape[-1], n_classes, H, P, blocks, disc, mode)
    if r["ssm_lr"] is None:
        groups = [dict(params=list(model.parameters()), lr=r["lr"], weight_decay=r["weight_decay"])]
    else:
        groups = param_groups(model, lr=r["lr"], weight_decay=r["weight_decay"], ssm_lr=r["ssm_lr"])
    opt = (torch.optim.Adam if r["opt"] == "adam" else torch.optim.AdamW)(groups)
    if r["opt"] == "adam":
        for g in opt.param_groups:
            g["weight_decay"] = 0.0
    factor = (lambda s: 1.0) if r["schedule"] == "constant" else (lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    rng = np.random.default_rng(seed)

    def accuracy(x, y):
        model.eval()
        with torch.no_grad():
            acc = float((model(x).argmax(-1) == y).float().mean())
        model.train()
        return acc

    best, curve, t0 = (-1.0, 0.0, 0), [], time.time()
    model.train()
    for s in range(1, steps + 1):
        idx = torch.from_numpy(rng.choice(len(ytr), r["batch"], replace=False))
        loss = nn.functional.cross_entropy(model(xs["xtr"][idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if s % eval_every == 0 or s == steps:
            va = accuracy(xs["xva"], yva)
            curve.append((s, round(va, 4)))
            if va > best[0]:
                best = (va, accuracy(xs["xte"], yte), s)
    return {"impl": name, "steps": steps, "H": H, "P": P, "blocks": blocks, "seed": seed, "disc": disc,
            "best_val": best[0], "test_at_best_val": best[1], "best_step": best[2],
            "test_last": accuracy(xs["xte"], yte), "val_curve": curve,
            "seconds": round(time.time() - t0, 1), "recipe": r}


def run_official(args, npz: str) -> Dict[str, Any]:
    runner = Path(__file__).with_name("_jax_linoss_fidelity.py")
    cmd = [args.jax_python, str(runner), args.official, npz, str(args.steps), str(args.H), str(args.P),
           str(args.blocks), "1e-3", str(args.seed), args.disc, str(args.eval_every)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--H", type=int, default=64)
    p.add_argument("--P", type=int, default=64)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--disc", default="IM", choices=("IM", "IMEX"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--mode", default="conv", choices=("conv", "scan"),
                   help="our LinOSS forward path (equal outputs, tested; conv is ~2x faster on CPU at L=64)")
    p.add_argument("--arms", default="ours-official,ours-recipe",
                   help="comma-separated: 'official' and/or names of ARMS: " + ", ".join(ARMS))
    p.add_argument("--jax-python", help="a Python with jax, equinox, optax (for the 'official' arm)")
    p.add_argument("--official", help="path to the official models/LinOSS.py (for the 'official' arm)")
    args = p.parse_args()
    names = [n for n in args.arms.split(",") if n]
    bad = [n for n in names if n != "official" and n not in ARMS]
    if bad:
        raise ValueError(f"unknown arms {bad}; valid: official, {', '.join(ARMS)}")
    if "official" in names and not (args.jax_python and args.official):
        raise ValueError("the 'official' arm needs --jax-python and --official (path to models/LinOSS.py)")
    a = arrays(args.dataset, 0.1, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        npz = str(Path(tmp) / "data.npz")
        np.savez(npz, **a)
        for name in names:
            row = run_official(args, npz) if name == "official" else run_torch(
                name, ARMS[name], a, args.steps, args.H, args.P, args.blocks, args.disc, args.seed, args.eval_every,
                args.mode)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n| arm ({args.dataset}, {args.steps} steps, seed {args.seed}) | best val | test at best val | step | "
          "test at the last step | s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['impl']} | {row['best_val']:.3f} | {row['test_at_best_val']:.3f} | {row['best_step']} | "
              f"{row['test_last']:.3f} | {row['seconds']} |")


if __name__ == "__main__":
    sys.exit(main())
