#!/usr/bin/env python3
"""ROCKET as a same-machine reference on the data of the UCR tuning protocol.

What it measures
----------------
ROCKET (Dempster, Petitjean & Webb 2020: 10,000 random convolutional kernels, two features each,
then a ridge classifier with its penalty chosen by leave-one-out cross-validation over
``np.logspace(-3, 3, 10)``), run here only as a **reference**: the published ROCKET figures in
docs/results.md come from its authors, not from this script. Two parts:

1. **Validation** (the protocol of experiments/ucr_tuning.md): for ArrowHead, PickupGestureWiimoteZ,
   OSULeaf and ACSF1 and splits k = 0..4, the training split is cut exactly as the trainer cuts it
   with ``--trainer.val_fraction 0.25 --trainer.seed k`` (``validation_split(data, 0.25, k)``);
   ROCKET (``random_state = k``) is trained on the kept rows and the validation series it gets
   right are counted. This says how many validation series a strong standard method reaches on
   the very splits our model is tuned on.
2. **Test**: for the 10 classification problems shipped with aeon (8 univariate, 2 multivariate), ROCKET
   trained on the archive's whole training split and scored on its test split, ``random_state`` 0, 1, 2;
   mean and sample standard deviation (ddof 1) over the three, to set beside the published figures (mean
   of 10 runs) where there are any.

The wall time of every fit (kernel generation + transform of the training series + scaling + ridge
fit) and of every prediction is recorded, after a warm-up that compiles numba's kernels.

Data: exactly what the trainer sees
-----------------------------------
Every problem is loaded through the trainer's own path with the data settings of its preset (``ucr`` for a
univariate problem, ``uea`` for a multivariate one: ``preset_for`` of ``experiments/ucr_table.py``)::

    cfg = build_config(preset_for(P), None, [("data.name", f"ucr:{P}"), ("trainer.seed", str(k))])
    data = statespaces.train.loop.load_data(cfg)

A multivariate problem (BasicMotions, JapaneseVowels) therefore comes with each channel scaled by its training
mean and std (``uea``: ``data.normalize = "global"``, no time channel), and ROCKET gets all its channels: aeon's
transform draws, for each kernel, a random subset of the channels and sums the kernel's response over them (the
multivariate ROCKET of the authors' sktime code). No published ROCKET figure exists for these two; the column of
docs/results.md that this script feeds is "ROCKET (run here)".

A univariate problem comes with each series z-normalised on its own over its valid steps
(``data.normalize = "series"``), series over 2048 steps would be averaged down (none of these problems is
that long), and
variable-length problems (PickupGestureWiimoteZ, 29-361 steps) come right-padded **with zeros** to
the longest series of both splits, with a ``lengths`` tensor beside them; ROCKET gets each series
padded with zeros to that longest length (the lengths are not used otherwise). The preset's time
channel (channel 0, ``t / (L - 1)``, added by ``data.time_channel``) is dropped: ROCKET sees the
series channel(s) only, as a float64 array of shape (n, channels, length).

The ROCKET used
---------------
aeon's transform ``aeon.transformations.collection.convolution_based.Rocket(n_kernels=10_000,
normalise=False, random_state=seed)``, then ``StandardScaler(with_mean=False)`` and
``RidgeClassifierCV(alphas=np.logspace(-3, 3, 10))``: the pipeline of aeon's ``RocketClassifier``,
whose scaler stands in for the ``normalize=True`` of the authors' ridge call (an option scikit-learn
has since removed). ``normalise=False`` because the loader has already z-normalised every series
(over its valid steps, the same statistic ROCKET's own normalisation takes on equal-length series);
normalising again would change nothing on equal-length problems but would rescale a zero-padded
short series by its padded length.

Setup (a venv of its own, outside the project's)::

    python3 -m venv /work/rocket-venv
    /work/rocket-venv/bin/pip install torch==2.13.0 aeon==1.6.0 numba scikit-learn
    /work/rocket-venv/bin/pip install "safetensors>=0.4" "tqdm>=4.60"   # statespaces' own imports

Run (one thread: ROCKET's transform runs with ``n_jobs=1``; the environment keeps numba and BLAS at
one thread as well)::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        PYTHONPATH=src /work/rocket-venv/bin/python experiments/rocket_reference.py [--out PATH]

It prints a validation table, a test table and a timing table (markdown) and writes the numbers as
JSON to ``--out`` (default ``experiments/rocket_reference.json``, which ``experiments/ucr_table.py``
reads). ``--kernels``, ``--val-problems``,
``--test-problems``, ``--splits`` and ``--seeds`` shrink it for a quick check.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

VAL_PROBLEMS = ("ArrowHead", "PickupGestureWiimoteZ", "OSULeaf", "ACSF1")
TEST_PROBLEMS = ("ACSF1", "ArrowHead", "BasicMotions", "Covid3Month_disc", "GunPoint", "ItalyPowerDemand",
                 "JapaneseVowels", "OSULeaf", "PickupGestureWiimoteZ", "UnitTest")
VAL_FRACTION = 0.25
ALPHAS = np.logspace(-3, 3, 10)


def load(problem: str, seed: int):
    """The problem as the trainer loads it with its preset (``ucr``, or ``uea`` when it has several channels)
    and ``trainer.seed = seed``."""
    from ucr_table import preset_for  # this script's folder is on sys.path when run as a script

    from statespaces.train import build_config
    from statespaces.train.loop import load_data

    cfg = build_config(preset_for(problem), None, [("data.name", f"ucr:{problem}"), ("trainer.seed", str(seed))])
    data = load_data(cfg)
    return cfg, data


def to_arrays(ds, time_channel: bool, rows=None) -> Tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of a TensorDataset ``(x (n, L, C), y[, lengths])``: X float64 of shape
    (n, C', L) without the time channel, zero past each series' length; y int64 of shape (n,)."""
    x, y, *rest = ds.tensors
    if rows is not None:
        index = np.asarray(rows, dtype=np.int64)
        x, y, rest = x[index], y[index], [t[index] for t in rest]
    X = x.detach().cpu().numpy().astype(np.float64)
    if time_channel:
        X = X[:, :, 1:]
    if rest:   # variable length: check that the padding is zeros, as ROCKET is to see it
        lengths = rest[0].cpu().numpy()
        pad = np.arange(X.shape[1])[None, :] >= lengths[:, None]
        if np.abs(X[pad]).max(initial=0.0) != 0.0:
            raise ValueError("padded steps are not zero")
    return np.ascontiguousarray(X.transpose(0, 2, 1)), y.cpu().numpy().astype(np.int64)


def run_rocket(X_fit, y_fit, X_eval, y_eval, seed: int, n_kernels: int) -> Dict[str, Any]:
    """Train ROCKET on ``(X_fit, y_fit)``, score it on ``(X_eval, y_eval)``."""
    from aeon.transformations.collection.convolution_based import Rocket
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    rocket = Rocket(n_kernels=n_kernels, normalise=False, n_jobs=1, random_state=seed)
    features = rocket.fit_transform(X_fit)
    scaler = StandardScaler(with_mean=False)
    ridge = RidgeClassifierCV(alphas=ALPHAS)
    ridge.fit(scaler.fit_transform(features), y_fit)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = ridge.predict(scaler.transform(rocket.transform(X_eval)))
    predict_s = time.perf_counter() - t0
    right = int((pred == y_eval).sum())
    return {"right": right, "n": int(len(y_eval)), "accuracy": right / len(y_eval), "alpha": float(ridge.alpha_),
            "fit_s": fit_s, "predict_s": predict_s, "n_fit": int(len(y_fit))}


def warm_up() -> None:
    """Compile numba's kernels once, so the first timed fit does not carry the compilation."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 1, 32)), np.array([0, 1] * 3)
    run_rocket(X, y, X, y, 0, 8)


def validation_part(problems: Sequence[str], splits: Sequence[int], n_kernels: int) -> Dict[str, Any]:
    from statespaces.train.loop import validation_split

    out: Dict[str, Any] = {}
    for problem in problems:
        rows: List[Dict[str, Any]] = []
        for k in splits:
            cfg, data = load(problem, k)
            fit, held = validation_split(data, VAL_FRACTION, k, "per-class-round")   # the tuning rounds' splits
            X_fit, y_fit = to_arrays(data.train, cfg.data.time_channel, fit)
            X_held, y_held = to_arrays(data.train, cfg.data.time_channel, held)
            r = run_rocket(X_fit, y_fit, X_held, y_held, k, n_kernels)
            r.update(split=k, shape=list(X_fit.shape[1:]))
            rows.append(r)
            print(f"validation {problem} split {k}: {r['right']}/{r['n']} right (fit on {r['n_fit']}, "
                  f"alpha {r['alpha']:.3g}, fit {r['fit_s']:.1f} s, predict {r['predict_s']:.1f} s)", flush=True)
        out[problem] = {"splits": rows, "right": sum(r["right"] for r in rows), "n": sum(r["n"] for r in rows)}
    return out


def test_part(problems: Sequence[str], seeds: Sequence[int], n_kernels: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for problem in problems:
        cfg, data = load(problem, 0)
        X_tr, y_tr = to_arrays(data.train, cfg.data.time_channel)
        X_te, y_te = to_arrays(data.test, cfg.data.time_channel)
        # the splits are stored at their own lengths (zero past each series); the transform needs one length
        L = max(X_tr.shape[2], X_te.shape[2])
        X_tr, X_te = (np.pad(x, ((0, 0), (0, 0), (0, L - x.shape[2]))) for x in (X_tr, X_te))
        rows: List[Dict[str, Any]] = []
        for seed in seeds:
            r = run_rocket(X_tr, y_tr, X_te, y_te, seed, n_kernels)
            r.update(seed=seed)
            rows.append(r)
            print(f"test {problem} seed {seed}: {100 * r['accuracy']:.2f}% ({r['right']}/{r['n']}, "
                  f"alpha {r['alpha']:.3g}, fit {r['fit_s']:.1f} s, predict {r['predict_s']:.1f} s)", flush=True)
        accs = [100 * r["accuracy"] for r in rows]
        out[problem] = {"seeds": rows, "shape": list(X_tr.shape), "n_test": int(len(y_te)),
                        "mean": statistics.mean(accs), "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0}
    return out


def markdown(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table: a header of ``columns``, then one line per row of cells."""
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def validation_table(val: Dict[str, Any], splits: Sequence[int]) -> str:
    rows = [[problem, *(f"{r['right']}/{r['n']}" for r in v["splits"]), f"{v['right']} of {v['n']}"]
            for problem, v in val.items()]
    if len(val) > 1:
        per_split = [(sum(v["splits"][i]["right"] for v in val.values()),
                      sum(v["splits"][i]["n"] for v in val.values())) for i in range(len(splits))]
        rows.append(["all", *(f"{a}/{b}" for a, b in per_split),
                     f"{sum(v['right'] for v in val.values())} of {sum(v['n'] for v in val.values())}"])
    return markdown(["problem", *(f"split {k}" for k in splits), "total"], rows)


def test_table(test: Dict[str, Any], seeds: Sequence[int]) -> str:
    rows = [[problem, *(f"{100 * r['accuracy']:.2f}" for r in t["seeds"]), f"{t['mean']:.2f} ± {t['sd']:.2f}"]
            for problem, t in test.items()]
    return markdown(["problem", *(f"seed {s} (%)" for s in seeds), "mean ± sd (%)"], rows)


def timing_table(val: Dict[str, Any], test: Dict[str, Any]) -> str:
    rows = []
    for part, runs, key in (("validation", val, "splits"), ("test", test, "seeds")):
        for problem, v in runs.items():
            fits_of = v[key]
            fits = [r["fit_s"] for r in fits_of]
            length = fits_of[0]["shape"][-1] if "shape" in fits_of[0] else v["shape"][-1]
            rows.append([part, problem, str(len(fits_of)), str(fits_of[0]["n_fit"]), str(length),
                         f"{statistics.mean(fits):.1f}", f"{max(fits):.1f}",
                         f"{statistics.mean(r['predict_s'] for r in fits_of):.1f}"])
    return markdown(["part", "problem", "fits", "series fit on", "length", "mean fit (s)", "max fit (s)",
                     "mean predict (s)"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).with_name("rocket_reference.json")),
                   help="JSON file for the results")
    p.add_argument("--kernels", type=int, default=10_000, help="ROCKET kernels (the paper's 10,000)")
    p.add_argument("--val-problems", nargs="*", default=list(VAL_PROBLEMS))
    p.add_argument("--test-problems", nargs="*", default=list(TEST_PROBLEMS))
    p.add_argument("--splits", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="validation splits (trainer seeds)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="ROCKET seeds of the test part")
    args = p.parse_args(argv)

    import aeon
    import numba
    import sklearn
    import torch

    t_start = time.perf_counter()
    warm_up()
    val = validation_part(args.val_problems, args.splits, args.kernels)
    test = test_part(args.test_problems, args.seeds, args.kernels)
    total_s = time.perf_counter() - t_start

    print()
    print(f"ROCKET ({args.kernels} kernels, aeon {aeon.__version__}): validation series right "
          f"(val_fraction {VAL_FRACTION}, split k = trainer.seed k = ROCKET random_state k)")
    print()
    print(validation_table(val, args.splits))
    print()
    print("ROCKET test accuracy (archive train/test split; mean ± sample sd over the seeds)")
    print()
    print(test_table(test, args.seeds))
    print()
    print("Wall time per fit (kernels + transform + scaler + ridge) and per prediction, one thread")
    print()
    print(timing_table(val, test))
    print()
    print(f"total wall time {total_s:.0f} s")

    result = {
        "what": "ROCKET reference (experiments/rocket_reference.py): aeon Rocket transform, "
                "StandardScaler(with_mean=False), RidgeClassifierCV(alphas=logspace(-3, 3, 10))",
        "settings": {"n_kernels": args.kernels, "normalise": False, "val_fraction": VAL_FRACTION,
                     "alphas": ALPHAS.tolist(), "splits": args.splits, "seeds": args.seeds,
                     "data": "ucr preset via statespaces.train.loop.load_data; time channel dropped; "
                             "variable-length series zero-padded to the longest"},
        "versions": {"python": platform.python_version(), "aeon": aeon.__version__, "numba": numba.__version__,
                     "numpy": np.__version__, "sklearn": sklearn.__version__, "torch": torch.__version__,
                     "numba_threads": numba.config.NUMBA_NUM_THREADS},
        "validation": val, "test": test, "total_s": total_s,
        "tables": {"validation": validation_table(val, args.splits), "test": test_table(test, args.seeds),
                   "timing": timing_table(val, test)},
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
