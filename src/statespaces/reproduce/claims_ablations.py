"""Tier C: longer pixel sequences (C2) and the C-init / S4D-init ablations (C3), thesis §7.5.

C2 runs the library's trainer (``statespaces train --preset fmnist14-s4d``) on sequential and
permuted Fashion-MNIST pooled to 14x14 (L = 196). C3 keeps that setup with the S4D options
``c_scale`` (the standard deviation σ of C, Table 7.10) and ``imag_scale`` (Im A times 100,
Table 7.12a "Scale 100"), trained with :func:`statespaces.train.recipes.fit_dataset`.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, cast

import torch

from ..train import build_config, build_model, train
from ..train.loop import load_data
from ..train.recipes import fit_dataset, score
from .registry import Result, claim, pyplot, save_figure


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


# ---- C2 -----------------------------------------------------------------------------------------
def _c2_overrides(quick: bool) -> List[tuple]:
    """Quick: a smoke test (200 images, 1 epoch, 1 narrow layer); full: the ``fmnist14-s4d`` preset
    (10k training images, all 10k test images, 3 epochs, 4 layers, H = N = 64)."""
    if not quick:
        return []
    return [("data.kwargs", '{"n_train": 200, "n_test": 200}'), ("trainer.epochs", "1"),
            ("model.d_model", "16"), ("model.n_layers", "1"), ("model.layer.d_state", "16")]


@claim("C2", "Longer pixel sequences: sequential and permuted Fashion-MNIST 14x14, L=196 (§7.3.1 stand-in)", "C")
def c2(quick: bool, out: Path) -> Result:
    """Notes §11.3 C2: pass if sequential >= 80% and permuted within 5 points of it."""
    acc: Dict[str, float] = {}
    cfg = None
    for name, data in (("sequential", "fashion_mnist14"), ("permuted", "pfashion_mnist14")):
        over = [("data.name", data), ("trainer.out", str(out / "C2" / name))] + _c2_overrides(quick)
        cfg = build_config("fmnist14-s4d", None, over)
        acc[name] = train(cfg, progress=False, replace=True)["test_acc"]
    seq, perm = acc["sequential"], acc["permuted"]
    assert cfg is not None  # set by the loop above
    m, t = cfg.model, cfg.trainer
    n_train = cfg.data.kwargs.get("n_train", "all")
    return Result(
        thesis="no Fashion-MNIST number in the thesis (sMNIST 99.63 / pMNIST 98.70 on GPU, Table 7.1)",
        ours=f"sequential {_pct(seq)}, permuted {_pct(perm)} (gap {100 * (seq - perm):+.1f} pts; S4D-LegS "
             f"{m.n_layers}x H={m.d_model} N={cast(Any, m.layer).d_state}, {n_train} train images, {t.epochs} epochs)",
        passed=seq >= 0.80 and (seq - perm) <= 0.05,
        criterion="sequential >= 80% test; permuted within 5 points of sequential",
        details={"preset": "fmnist14-s4d", "model": vars(m), "trainer": vars(t), "data": vars(cfg.data), **acc},
    )


# ---- C3 -----------------------------------------------------------------------------------------
#: (name, S4D init, std of C, factor on Im A): Table 7.10 (σ) and Table 7.12a (init) variants.
C3_VARIANTS = (
    ("S4D-Lin σ=0.01", "lin", 0.01, 1.0),
    ("S4D-Lin σ=1", "lin", 1.0, 1.0),
    ("S4D-Lin σ=100", "lin", 100.0, 1.0),
    ("Scale-100", "lin", 1.0, 100.0),
    ("S4D-Real", "real", 1.0, 1.0),
    ("S4D-Rand", "rand", 1.0, 1.0),
)


def _c3_config(quick: bool, seed: int, init: str):
    """C2's setup (S4D, 4 layers, H = N = 64, fmnist14 preset optimizer), reduced to fit 12 runs in
    about 12 CPU-minutes: 3k training images, 2k test images, 2 epochs (quick: 200/200, 1 epoch, 1 layer)."""
    size = '{"n_train": 200, "n_test": 200}' if quick else '{"n_train": 3000, "n_test": 2000}'
    over = [("data.kwargs", size), ("trainer.epochs", "1" if quick else "2"), ("trainer.seed", str(seed)),
            ("model.layer.init", init)]
    if quick:
        over += [("model.d_model", "16"), ("model.n_layers", "1"), ("model.layer.d_state", "16")]
    return build_config("fmnist14-s4d", None, over)


def _c3_run(quick: bool, seed: int, init: str, c_std: float, imag_scale: float) -> float:
    cfg = _c3_config(quick, seed, init)
    cfg.model.layer = cfg.model.layer.replace(c_scale=c_std, imag_scale=imag_scale)
    torch.manual_seed(seed)
    data = load_data(cfg)
    model = build_model(cfg, data.d_input, data.n_classes)
    t = cfg.trainer
    fit_dataset(model, data.train, t.epochs, t.lr, ssm_lr=t.ssm_lr, weight_decay=t.weight_decay,
                batch_size=t.batch_size, seed=seed)
    return score(model, data.test)


def _c3_plot(acc: Dict[str, List[float]], path: Path) -> Optional[str]:
    plt = pyplot()
    if plt is None:
        return None
    names = list(acc)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(names)), [100 * statistics.mean(v) for v in acc.values()], color="#9ab", label="mean")
    for i, v in enumerate(acc.values()):
        ax.plot([i] * len(v), [100 * a for a in v], "k.", label="seeds" if i == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set(ylabel="test accuracy (%)", title="C3: C-init and S4D-init ablations, Fashion-MNIST 14x14")
    ax.set_ylim(max(0, 100 * min(min(v) for v in acc.values()) - 5), 100)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@claim("C3", "C-init sigma and S4D-init ablations on Fashion-MNIST 14x14 (Tables 7.10, 7.12a)", "C")
def c3(quick: bool, out: Path) -> Result:
    """Notes §11.3 C3, proposed pass: σ = 100 is the worst σ, and S4D-Lin beats Scale-100, S4D-Real
    and S4D-Rand by >= 1 point each (means over the seeds)."""
    seeds = (0,) if quick else (0, 1)
    acc: Dict[str, List[float]] = {}
    for name, init, c_std, imag in C3_VARIANTS:
        acc[name] = [_c3_run(quick, s, init, c_std, imag) for s in seeds]
    mean = {k: statistics.mean(v) for k, v in acc.items()}
    sigmas = ("S4D-Lin σ=0.01", "S4D-Lin σ=1", "S4D-Lin σ=100")
    worst_sigma = min(sigmas, key=lambda k: mean[k])
    lin = mean["S4D-Lin σ=1"]
    gaps = {k: lin - mean[k] for k in ("Scale-100", "S4D-Real", "S4D-Rand")}
    ok = worst_sigma == "S4D-Lin σ=100" and all(g >= 0.01 for g in gaps.values())
    cfg = _c3_config(quick, 0, "lin")
    fig = _c3_plot(acc, out / "C3_ablations.png")
    return Result(
        thesis="sCIFAR (S4-LegS): σ=1 best 86.49, σ=100 worst 82.05; vs S4D-Lin: Scale 100 −7.91, "
               "S4D-Real −5.45, S4D-Random −6.32",
        ours=", ".join(f"{k} {100 * mean[k]:.1f}%" for k in acc)
             + f" (mean of {len(seeds)} seeds; C2 setup reduced to {cfg.data.kwargs['n_train']} train / "
               f"{cfg.data.kwargs['n_test']} test images, {cfg.trainer.epochs} epochs; σ sweep on S4D-Lin, "
               "not S4-LegS)",
        passed=ok,
        criterion="σ=100 is the worst σ; S4D-Lin beats Scale-100, S4D-Real, S4D-Rand by >= 1 point each",
        details={"per_seed": acc, "seeds": list(seeds), "worst_sigma": worst_sigma,
                 "lin_minus_variant": gaps, "model": vars(cfg.model), "trainer": vars(cfg.trainer),
                 "how": "C scaled by σ and Im A by 100 in place after init (no layer option exists)"},
        figure=fig,
    )
