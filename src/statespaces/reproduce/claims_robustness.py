"""Tier C: robustness to a change of sampling rate (C5, thesis §4.4 Table 4.2) and of image
resolution (C6, thesis §9.4.3 Table 9.4), on offline stand-in data.

**C5.** The HiPPO-LegS RNN of Remark 4.8 (the original HiPPO paper's memory cell, the library's
:class:`statespaces.hippo.HiPPORNN`): a gated RNN
whose hidden state ``h`` writes a scalar (per memory channel) ``f_k = w^T h_k`` into a memory
``c_k`` that follows the *scale-invariant* LegS ODE ``c' = (A c + B f)/t`` with frozen (A, B),
discretized with the bilinear GBT step from ``t = k`` to ``k + 1`` (App. A.1.5, the O(N) step of
:mod:`statespaces.hippo.legs_fast`). The 1/t measure compresses the *whole* history ``[0, t]`` into
``c`` whatever the number of samples, so a sequence sampled twice as densely gives (nearly) the same
final memory. Resampled sequences are fed exactly like native ones, step k at time ``k + 1``: the
model is not told the rate (Table 4.2's setting: variable lengths hide the rate). Baselines: LSTM and
GRU of the same hidden size, reading the final hidden state. Data: a seeded synthetic
CharacterTrajectories stand-in (:func:`synthetic_trajectories`: pen velocity + force of 12 classes of
random strokes, 87-172 samples at the base rate) decides the verdict; JapaneseVowels (7-29 steps,
barely rate-sensitive) is reported alongside.

**C6.** Isotropic S4ND vs a Conv2D baseline of the same depth/width
(:class:`statespaces.models.image.ImageClassifier`), trained on Fashion-MNIST resized to 14x14
(the "mid" resolution) and tested zero-shot on the original 28x28 ("base") with Δ/2, i.e.
``rate = 0.5`` per axis (:func:`statespaces.layers.s4nd.resolution_rate`); S4ND with bandlimit
α ∈ {0.1, 0.2, 0.5, ∞} (§9.3.2).

A third test set separates the two things a resolution change asks of a model: the same 14x14 test
images upsampled to 28x28 by repeating each pixel 2x2 (nearest), also at ``rate = 0.5``. They hold
no detail the 14x14 grid lacks, so a layer whose continuous-time view is exact keeps its 14x14
accuracy on them up to the discretization of its kernel; what it loses on the original 28x28
images beyond that is the finer detail those images carry, which training at 14x14 never showed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from ..data import DATASETS
from ..data.trajectories import TRAJ_DESIGN, resample, synthetic_trajectories
from ..layers.s4nd import resolution_rate
from ..models.baselines import GatedRNNClassifier, LegSRNN
from ..models.image import ImageClassifier
from ..train.recipes import fit_dataset, score
from ..train.tasks import Classification
from .registry import Result, claim, pyplot, save_figure

Tensor = torch.Tensor


# ---- C5: the LegS RNN cell ----------------------------------------------------------------------
# ---- C5: the synthetic pen-trajectory set ------------------------------------------------------
def _c5_settings(quick: bool) -> Dict[str, int]:
    if quick:
        return dict(hidden=16, order=8, epochs=1, n_train=64, n_test=64, batch=32,
                    traj_train=4, traj_test=2, traj_epochs=1)
    return dict(hidden=256, order=32, epochs=30, n_train=0, n_test=0, batch=32,
                traj_train=50, traj_test=25, traj_epochs=10)


def _subset(ds: TensorDataset, n: int) -> TensorDataset:
    if not n or n >= len(ds):
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]
    return TensorDataset(*(t[idx] for t in ds.tensors))


RATES = ("native", "2x", "1/2x")


def _c5_rate_shift(train_ds: TensorDataset, test_ds: TensorDataset, d_input: int, n_classes: int,
                   epochs: int, s: Dict[str, int]) -> Dict[str, Dict[str, float]]:
    """Train LegS RNN / LSTM / GRU at the native rate, test at native, 2x and 1/2x (:func:`resample`)."""
    x, y, lens = test_ds.tensors
    tests = {"native": test_ds}
    for name, factor in (("2x", 2.0), ("1/2x", 0.5)):
        xr, lr_ = resample(x, lens, factor)
        tests[name] = TensorDataset(xr, y, lr_)
    acc: Dict[str, Dict[str, float]] = {}
    for name in ("LegS", "LSTM", "GRU"):
        torch.manual_seed(0)
        if name == "LegS":
            model: nn.Module = LegSRNN(d_input, n_classes, s["hidden"], s["order"])
        else:
            model = GatedRNNClassifier(name.lower(), d_input, n_classes, s["hidden"])
        fit_dataset(model, train_ds, epochs, 2e-3, weight_decay=0.01, batch_size=s["batch"], seed=0)
        acc[name] = {k: score(model, ds) for k, ds in tests.items()}
    return acc


def _fmt(acc: Dict[str, Dict[str, float]]) -> str:
    return "; ".join(f"{n} " + " / ".join(f"{100 * a[k]:.1f}" for k in RATES) for n, a in acc.items())


@claim("C5", "HiPPO-LegS RNN timescale robustness vs LSTM/GRU, synthetic pen trajectories at 2x and 1/2x rate "
             "(Table 4.2)", "C")
def c5(quick: bool, out: Path) -> Result:
    """Notes §11.3 C5, proposed pass: LegS loses <= 10 points under each shift; LSTM and GRU each
    lose >= 20 points under at least one of the two shifts (the thesis' baselines lose > 30 under both).

    The verdict uses the synthetic CharacterTrajectories stand-in :func:`synthetic_trajectories`
    (§11 allows "a synthetic trajectory set"; CharacterTrajectories is not available offline):
    train at the base rate, test at 2x (linear interpolation, twice the samples over the same curve)
    and 1/2x (every other sample), fed as native steps. JapaneseVowels (lengths 7-29, the colleague's
    first stand-in, which is barely rate-sensitive for any model) is reported in ``details`` only."""
    s = _c5_settings(quick)
    traj_train = synthetic_trajectories(s["traj_train"], seed=0)
    traj_test = synthetic_trajectories(s["traj_test"], seed=1)
    C = TRAJ_DESIGN["classes"]
    acc = _c5_rate_shift(traj_train, traj_test, 3, C, s["traj_epochs"], s)
    data = DATASETS["ucr:JapaneseVowels"]()
    jv = _c5_rate_shift(_subset(data.train, s["n_train"]), _subset(data.test, s["n_test"]), data.d_input,
                        data.n_classes, s["epochs"], s)
    drop = {n: {k: a["native"] - a[k] for k in ("2x", "1/2x")} for n, a in acc.items()}
    ok = max(drop["LegS"].values()) <= 0.10 and all(max(drop[n].values()) >= 0.20 for n in ("LSTM", "GRU"))
    lens = traj_train.tensors[2]
    return Result(
        thesis="CharacterTrajectories 100Hz->200Hz / 200Hz->100Hz: HiPPO-LegS 88.8 / 90.1; LSTM 31.9 / 28.2; "
               "GRU 25.4 / 64.6 (all >= 95 without shift)",
        ours=_fmt(acc) + f" (% native / 2x / 1/2x rate; synthetic pen trajectories, {C} classes, "
                         f"{len(traj_train)} train / {len(traj_test)} test, "
                         f"train length {int(lens.min())}-{int(lens.max())}; "
                         f"hidden {s['hidden']}, LegS N={s['order']}, {s['traj_epochs']} epochs, 1 seed). "
                         "JapaneseVowels (not the verdict): " + _fmt(jv),
        passed=ok,
        criterion="LegS drop <= 10 pts under both shifts; LSTM and GRU each drop >= 20 pts under a shift "
                  "(synthetic trajectories)",
        details={"accuracy": acc, "drop": drop, "settings": s,
                 "dataset": "synthetic_trajectories (CharacterTrajectories stand-in): " + " ".join(
                     (synthetic_trajectories.__doc__ or "").split("\n\n")[1].split()),
                 "dataset_design": dict(TRAJ_DESIGN, train_seed=0, test_seed=1, proto_seed=1234,
                                        train_lengths=[int(lens.min()), int(lens.max())]),
                 "japanese_vowels": {"accuracy": jv, "epochs": s["epochs"],
                                     "drop": {n: {k: a["native"] - a[k] for k in ("2x", "1/2x")}
                                              for n, a in jv.items()}},
                 "resampling": "linear interpolation of the valid part (2x: 2n-1 samples) / every other sample "
                               "(1/2x); fed as native sequences, step k at t = k + 1 (rate not given)"},
    )


# ---- C6: S4ND zero-shot resolution change -------------------------------------------------------
def resize_images(x: Tensor, side: int) -> Tensor:
    """(n, H, W, C) -> (n, side, side, C): bilinear with antialiasing (a torchvision-style resize)."""
    if x.shape[1] == side:
        return x
    y = F.interpolate(x.movedim(-1, 1), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return y.movedim(1, -1).contiguous()


def repeat_pixels(x: Tensor, k: int) -> Tensor:
    """(n, H, W, C) -> (n, kH, kW, C): each pixel repeated k x k (nearest upsampling): a finer grid of the same
    piecewise-constant image, with no detail the coarse grid lacks."""
    return x.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2)


def _c6_settings(quick: bool) -> Dict[str, Any]:
    """Full: 6k training images (not §11's 10k), 3 epochs, H = 32 (not 64), 1k test images, to fit
    about 6 CPU-minutes; quick: a smoke test."""
    if quick:
        return dict(n_train=200, n_test=100, epochs=1, d_model=8, n_layers=2, d_state=16, batch=50)
    return dict(n_train=6000, n_test=1000, epochs=3, d_model=32, n_layers=4, d_state=64, batch=50)


#: S4ND bandlimits of Table 9.4 (None = α = ∞, no bandlimit).
C6_ALPHAS: Tuple[Optional[float], ...] = (0.1, 0.2, 0.5, None)


def _c6_model(s: Dict[str, Any], layer: str, alpha: Optional[float]) -> ImageClassifier:
    torch.manual_seed(0)
    kw = dict(d_input=1, n_classes=10, dims=2, d_model=s["d_model"], n_layers=s["n_layers"])
    if layer == "conv":
        return ImageClassifier(**kw, layer="conv", kernel_size=3)
    return ImageClassifier(**kw, layer=dict(kind="s4nd", d_state=s["d_state"], bandlimit=alpha, init="legs", seed=0))


def _c6_plot(acc: Dict[str, Dict[str, float]], path: Path) -> Optional[str]:
    plt = pyplot()
    if plt is None:
        return None
    names = list(acc)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = (("14x14", "#9ab", "test 14x14"), ("28x28", "#c86", "test 28x28 (zero-shot, Δ/2)"),
            ("14x14 repeated 2x2", "#7a5", "test 14x14, pixels repeated 2x2 (Δ/2)"))
    for j, (res, color, label) in enumerate(bars):
        ax.bar([i + 0.27 * j for i in range(len(names))], [100 * acc[n][res] for n in names], 0.27, color=color,
               label=label)
    ax.set_xticks([i + 0.27 for i in range(len(names))], names, fontsize=8)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 100))
    ax.set_title("C6: trained at 14x14, Fashion-MNIST", pad=28)
    ax.legend(fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return save_figure(fig, path)


@claim("C6", "S4ND vs Conv2D zero-shot resolution change 14x14 -> 28x28 with bandlimiting (Table 9.4)", "C")
def c6(quick: bool, out: Path) -> Result:
    """Notes §11.3 C6, proposed pass: S4ND mid->base within 3 points of mid->mid; Conv2D drops >= 10
    points; α = ∞ worse than the best α by >= 3 points at base. "S4ND" is the α with the best
    mid->base accuracy (the thesis reports its bandlimited model)."""
    from ..data.fashion_mnist import load_fashion_mnist_images

    s = _c6_settings(quick)
    d = load_fashion_mnist_images(n_train=s["n_train"], n_test=s["n_test"], seed=0)
    (xtr, ytr), (xte, yte) = d.train.tensors, d.test.tensors
    train_ds = TensorDataset(resize_images(xtr, 14), ytr)
    x14 = resize_images(xte, 14)
    half = resolution_rate((14, 14), (28, 28))
    tests = {"14x14": (TensorDataset(x14, yte), 1.0),
             "28x28": (TensorDataset(xte, yte), half),
             "14x14 repeated 2x2": (TensorDataset(repeat_pixels(x14, 2), yte), half)}
    acc: Dict[str, Dict[str, float]] = {}
    models: List[Tuple[str, str, Optional[float]]] = [
        (f"S4ND α={'∞' if a is None else a}", "s4nd", a) for a in C6_ALPHAS] + [("Conv2D", "conv", None)]
    for name, layer, alpha in models:
        model = _c6_model(s, layer, alpha)
        fit_dataset(model, train_ds, s["epochs"], 1e-2, ssm_lr=1e-3, weight_decay=0.03, batch_size=s["batch"], seed=0)
        acc[name] = {}
        for res, (ds, rate) in tests.items():
            task = Classification(forward=lambda m, x, lengths, r=rate: m(x, rate=r)) if layer == "s4nd" else None
            acc[name][res] = score(model, ds, task or "classification", batch_size=250)
    s4nd = [n for n in acc if n.startswith("S4ND")]
    best = max(s4nd, key=lambda n: acc[n]["28x28"])
    drop = {n: a["14x14"] - a["28x28"] for n, a in acc.items()}
    inf_gap = acc[best]["28x28"] - acc["S4ND α=∞"]["28x28"]
    ok = drop[best] <= 0.03 and drop["Conv2D"] >= 0.10 and inf_gap >= 0.03
    fig = _c6_plot(acc, out / "C6_resolution.png")
    ours = "; ".join(f"{n} {100 * a['14x14']:.1f} -> {100 * a['28x28']:.1f} "
                     f"({100 * a['14x14 repeated 2x2']:.1f})" for n, a in acc.items())
    return Result(
        thesis="CIFAR-10 mid->base: S4ND 88.77 (mid->mid 88.80) vs Conv2D 73.1 (87.2); low->base 73.71 vs 33.1",
        ours=ours + " (% at 14x14 -> 28x28 (14x14 test images with each pixel repeated 2x2, rate 0.5); "
                    f"best α: {best}; {s['n_train']} train / {s['n_test']} test images, "
                    f"{s['epochs']} epochs, {s['n_layers']} layers, H={s['d_model']}, N={s['d_state']}, 1 seed)",
        passed=ok,
        criterion="best-α S4ND drop <= 3 pts; Conv2D drop >= 10 pts; α=∞ >= 3 pts below best α at 28x28",
        details={"accuracy": acc, "drop": drop, "best": best, "settings": s,
                 "resize": "bilinear, antialias=True (F.interpolate); 28x28 = original images, rate 0.5; "
                           "'14x14 repeated 2x2' = the 14x14 test images upsampled by nearest, rate 0.5"},
        figure=fig,
    )
