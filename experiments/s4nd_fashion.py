r"""S4ND zero-shot resolution change on Fashion-MNIST (thesis §9.4.3, Table 9.4; notes §11.3 C6),
and a tiny 3-D (video) run on moving sklearn digits.

``--task fashion`` (default): train an isotropic S4ND classifier (:mod:`statespaces.models.image`)
at 28x28 and evaluate it zero-shot at 14x14 and 56x56 (test images resized with
``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``; S4ND runs with
``rate = 28 / L_new`` per axis, i.e. Δ/2 on the 2x finer grid). Models:

* S4ND without bandlimiting (α = ∞), evaluated as trained and with the bandlimit mask (α =
  ``--eval-alpha``) switched on only at test time;
* S4ND trained with bandlimiting, one model per α in ``--alphas``;
* a Conv2D (3x3, full) baseline of the same depth and width (similar parameter count), which
  simply sees the resized images.

Writes a markdown table to ``--out`` (default ``runs/s4nd/s4nd_fashion.md``) and prints it.
Defaults (a 4k-image training subset, 2 epochs, 2k test images) took 13 min in all on a busy shared
2-core CPU: 1-2.5 min of training per model, the rest is evaluation at 56x56; lower ``--n-test`` to cut it; use e.g. ``--n-train 60000 --n-test 10000 --epochs 20 --d-model 64`` for a real run.

``--task video``: 3-D S4ND (causal in time, two-sided in space) classifying the motion direction
of sklearn 8x8 digits moving on a 16x16 canvas over 6 frames; reports test accuracy.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from statespaces.layers.s4nd import resolution_rate
from statespaces.models.image import ImageClassifier
from statespaces.train.engine import Callback, fit
from statespaces.train.recipes import adamw_cosine


def load_fashion(n_train: int, n_test: int, seed: int):
    """(xtr, ytr, xte, yte) with x (n, 28, 28, 1) standardized float32."""
    try:
        from statespaces.data.fashion_mnist import load_fashion_mnist_images
    except ImportError:  # pragma: no cover - fallback when the data module is absent
        load_fashion_mnist_images = None
    if load_fashion_mnist_images is not None:
        d = load_fashion_mnist_images(n_train=n_train, n_test=n_test, seed=seed)
        return (*d.train.tensors, *d.test.tensors)
    import gzip

    root = Path("/usr/share/datasets/fashion-mnist")

    def read(name, offset):
        with gzip.open(root / name, "rb") as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    xtr = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    ytr = read("train-labels-idx1-ubyte.gz", 8)
    xte = read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    yte = read("t10k-labels-idx1-ubyte.gz", 8)
    rng = np.random.default_rng(seed)
    itr, ite = rng.permutation(len(xtr))[:n_train], rng.permutation(len(xte))[:n_test]
    xtr, xte = xtr[itr] / 255.0, xte[ite] / 255.0
    mean, std = xtr.mean(), xtr.std()
    f = lambda x: torch.from_numpy(((x - mean) / std).astype(np.float32))[..., None]
    return f(xtr), torch.from_numpy(ytr[itr].astype(np.int64)), f(xte), torch.from_numpy(yte[ite].astype(np.int64))


def resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """(n, H, W, C) -> (n, side, side, C), bilinear with antialiasing (torchvision-style resize)."""
    if x.shape[1] == side:
        return x
    y = F.interpolate(x.movedim(-1, 1), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return y.movedim(1, -1).contiguous()


class _Log(Callback):
    """A progress line every 50 steps: running mean loss of the epoch."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.t0 = prefix, time.time()

    def on_epoch_start(self, state) -> None:
        self.loss, self.n = 0.0, 0

    def on_step_end(self, state) -> None:
        self.loss += state.loss * len(state.target)
        self.n += len(state.target)
        if state.step % 50 == 0:
            print(f"{self.prefix} epoch {state.epoch} step {state.step}/{state.epochs * state.steps_per_epoch} "
                  f"loss {self.loss / self.n:.4f} ({time.time() - self.t0:.0f}s)", flush=True)


def train(model, xtr, ytr, args, log_prefix=""):
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    total = len(loader) * args.epochs
    opt, sched = adamw_cosine(model, total, args.lr, args.ssm_lr, args.wd, warmup=max(1, total // 10))
    t0 = time.time()
    fit(model, loader, opt, "classification", epochs=args.epochs, scheduler=sched, callbacks=[_Log(log_prefix)])
    return time.time() - t0


@torch.no_grad()
def accuracy(model, x, y, rate=1.0, batch_size=250) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i: i + batch_size], rate=rate).argmax(-1) == y[i: i + batch_size]).sum().item()
    return 100.0 * correct / len(x)


def run_fashion(args) -> str:
    torch.manual_seed(args.seed)
    t_start = time.time()
    xtr, ytr, xte, yte = load_fashion(args.n_train, args.n_test, args.seed)
    base = 28
    test_sides = [base] + [s for s in args.test_res if s != base]
    tests = {s: resize(xte, s) for s in test_sides}
    common = dict(d_input=1, n_classes=10, dims=2, d_model=args.d_model, n_layers=args.n_layers, dropout=args.dropout)
    s4nd_kwargs = dict(init=args.init, dt_min=args.dt_min, dt_max=args.dt_max, seed=args.seed)
    rows = []

    def evaluate(model, name, train_s, n_params, uses_rate=True):
        accs = []
        for s in test_sides:
            rate = resolution_rate((base, base), (s, s)) if uses_rate else 1.0
            accs.append(accuracy(model, tests[s], yte, rate=rate))
        rows.append((name, n_params, train_s, accs))
        print(f"== {name}: " + ", ".join(f"{s}x{s}: {a:.2f}" for s, a in zip(test_sides, accs)), flush=True)

    for alpha in args.alphas:
        a = None if alpha in ("none", "inf") else float(alpha)
        torch.manual_seed(args.seed)
        model = ImageClassifier(**common, layer={"kind": "s4nd", "d_state": args.d_state, "bandlimit": a, **s4nd_kwargs})
        n_params = sum(p.numel() for p in model.parameters())
        tr = train(model, xtr, ytr, args, log_prefix=f"[S4ND a={alpha}]")
        evaluate(model, f"S4ND, trained with α = {'∞ (no bandlimit)' if a is None else a}", tr, n_params)
        if a is None and args.eval_alpha is not None:
            model.set_bandlimit(args.eval_alpha)
            evaluate(model, f"  same model, bandlimit α = {args.eval_alpha} at test only", 0.0, n_params)
            model.set_bandlimit(None)

    if not args.no_conv:
        torch.manual_seed(args.seed)
        model = ImageClassifier(**common, layer="conv", kernel_size=3)
        n_params = sum(p.numel() for p in model.parameters())
        tr = train(model, xtr, ytr, args, log_prefix="[Conv2D]")
        evaluate(model, "Conv2D 3x3 (no resolution notion)", tr, n_params, uses_rate=False)

    total = time.time() - t_start
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    lines = [
        "# S4ND zero-shot resolution change on Fashion-MNIST",
        "",
        f"Command: `{cmd}`  ",
        f"Total wall time: {total / 60:.1f} min on {torch.get_num_threads()} CPU threads (shared machine).  ",
        f"Train: {len(xtr)} images at 28x28, {args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr} "
        f"(SSM lr {args.ssm_lr}), wd {args.wd}, cosine + 10% warmup. Test: {len(xte)} test images, resized with "
        "bilinear antialiased `interpolate`; S4ND uses rate = 28 / side per axis (Δ/2 at 56x56, 2Δ at 14x14).  ",
        f"Backbone: isotropic, {args.n_layers} layers, H = {args.d_model}, S4ND N = {args.d_state}, init "
        f"{args.init}, Δ ∈ [{args.dt_min}, {args.dt_max}], bidirectional on both axes; bandlimit rule 'nyquist' "
        "(keep mode n iff |Im A_n| Δ max(1, rate) / 2π < α/2).",
        "",
        "| Model | Params | Train time (s) | " + " | ".join(
            f"{s}x{s}" + ("" if s == base else " (zero-shot)") for s in test_sides) + " |",
        "|---|---|---|" + "---|" * len(test_sides),
    ]
    for name, n_params, tr, accs in rows:
        t = f"{tr:.0f}" if tr else "-"
        lines.append(f"| {name} | {n_params / 1e3:.1f}k | {t} | " + " | ".join(f"{a:.2f}" for a in accs) + " |")
    table = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)
    return table


# ---------------------------------------------------------------------------------------------
def moving_digits(n: int, frames: int = 6, side: int = 16, step: int = 1, seed: int = 0):
    """Videos (n, T, side, side, 1) of one sklearn 8x8 digit moving ``step`` px per frame (needs
    8 + step * (frames - 1) <= side) in one of
    4 directions (the label: 0 right, 1 left, 2 down, 3 up), from a random start."""
    from sklearn.datasets import load_digits

    digits = load_digits().images.astype(np.float32) / 16.0
    rng = np.random.default_rng(seed)
    travel = step * (frames - 1)
    x = np.zeros((n, frames, side, side), np.float32)
    y = rng.integers(0, 4, n)
    moves = {0: (0, 1), 1: (0, -1), 2: (1, 0), 3: (-1, 0)}
    for i in range(n):
        img = digits[rng.integers(len(digits))]
        di, dj = moves[int(y[i])]
        lo_i = travel if di < 0 else 0
        hi_i = side - 8 - (travel if di > 0 else 0)
        lo_j = travel if dj < 0 else 0
        hi_j = side - 8 - (travel if dj > 0 else 0)
        r0, c0 = rng.integers(lo_i, hi_i + 1), rng.integers(lo_j, hi_j + 1)
        for t in range(frames):
            r, c = r0 + di * step * t, c0 + dj * step * t
            x[i, t, r: r + 8, c: c + 8] = img
    x = (x - x.mean()) / x.std()
    return torch.from_numpy(x)[..., None], torch.from_numpy(y.astype(np.int64))


def run_video(args) -> str:
    torch.manual_seed(args.seed)
    xtr, ytr = moving_digits(args.n_train_video, seed=args.seed)
    xte, yte = moving_digits(500, seed=args.seed + 1)
    model = ImageClassifier(
        d_input=1, n_classes=4, dims=3, d_model=16, n_layers=2,
        layer=dict(kind="s4nd", d_state=16, bidirectional=(False, True, True), dt_min=(0.1, 0.01, 0.01),
                   dt_max=(1.0, 0.1, 0.1), seed=args.seed),
    )
    tr = train(model, xtr, ytr, argparse.Namespace(**{**vars(args), "epochs": args.epochs_video}), log_prefix="[S4ND-3D]")
    acc = accuracy(model, xte, yte)
    msg = (f"S4ND-3D moving-digit direction (4 classes, {len(xtr)} train videos 6x16x16, {args.epochs_video} epochs): "
           f"test accuracy {acc:.2f}% (chance 25%), train time {tr:.0f}s")
    print(msg)
    return msg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("fashion", "video"), default="fashion")
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--n-train-video", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--epochs-video", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--d-state", type=int, default=64)
    p.add_argument("--init", default="legs")
    p.add_argument("--dt-min", type=float, default=1e-3)
    p.add_argument("--dt-max", type=float, default=1e-1)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--ssm-lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.03)
    p.add_argument("--alphas", nargs="+", default=["none", "0.5"],
                   help="bandlimit α of the S4ND models to train ('none' = no bandlimit)")
    p.add_argument("--eval-alpha", type=float, default=0.5,
                   help="also evaluate the α=none model with this bandlimit switched on at test time")
    p.add_argument("--test-res", type=int, nargs="+", default=[14, 56])
    p.add_argument("--no-conv", action="store_true", help="skip the Conv2D baseline")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 is fastest on a busy shared 2-core machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/s4nd/s4nd_fashion.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return run_video(args) if args.task == "video" else run_fashion(args)


if __name__ == "__main__":
    main()
