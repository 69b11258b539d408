"""An irregularly sampled copy of a UCR/UEA problem, for the time-stamped training path (docs/data.md).

Each series keeps a random fraction of its samples (seeded, at least two), written as ``(time, value)`` pairs with
its original step indices as the times (``@timeStamps true``): the protocol of the irregular-sampling benchmarks of
neural CDE / ODE-RNN papers (drop 30-70% of each series). Then train the ``ucr`` preset three ways::

    python experiments/irregular_ucr.py --problem ItalyPowerDemand --keep 0.7 --out data/irregular
    F=data/irregular/ItalyPowerDemandIrr_TRAIN.ts
    statespaces train --preset ucr --data.name $F --data.time_channel false   # values only: the gaps are not seen
    statespaces train --preset ucr --data.name $F                             # the clock carries the sample times
    statespaces train --preset ucr --data.name $F --model.intervals true      # the layers step over the intervals

(add ``--trainer.seed K --trainer.out runs/...`` per run). Results: docs/data.md, "Time-stamped files".
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from statespaces.data import ucr  # noqa: E402
from statespaces.data.series_files import format_ts, read_series_file  # noqa: E402


def subsample(series: np.ndarray, keep: float, rng: np.random.Generator):
    """``(times, values)``: a sorted random ``keep`` fraction (at least 2) of the valid steps of one case (channels,
    L), all channels at the same steps; the times are the step indices."""
    valid = np.flatnonzero(~np.isnan(series).all(axis=0))
    n = min(valid.size, max(2, int(round(keep * valid.size))))
    idx = np.sort(rng.choice(valid, n, replace=False))
    return idx.astype(np.float64), series[:, idx]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="ItalyPowerDemand", help="a UCR/UEA problem name (aeon's) or a path")
    ap.add_argument("--keep", type=float, default=0.7, help="fraction of each series' samples kept, in (0, 1]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="data/irregular", help="folder for <Name>Irr_TRAIN.ts / _TEST.ts")
    args = ap.parse_args(argv)
    if not 0 < args.keep <= 1:
        ap.error(f"--keep {args.keep}: allowed: a fraction in (0, 1]")
    name, ftrain, ftest = ucr.resolve(args.problem)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, path in (("TRAIN", ftrain), ("TEST", ftest)):
        part = read_series_file(path)
        cut = [subsample(s, args.keep, rng) for s in part.series]
        classes = part.class_labels or sorted({str(lab) for lab in part.labels})
        text = format_ts([v for _, v in cut], part.labels, problem_name=f"{name}Irr", class_labels=classes,
                         times=[t for t, _ in cut])
        target = out / f"{name}Irr_{split}.ts"
        target.write_text(text)
        print(f"{target}: {len(cut)} series, {np.mean([t.size for t, _ in cut]):.1f} samples each on average")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
