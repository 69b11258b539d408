"""Validation accuracy of ensembles of tuning runs: each run alone and the members together (the mean of their
class probabilities, :func:`statespaces.train.ensemble.combine`), split by split. Not part of the library.

    PYTHONPATH=src python experiments/probes/pair_probe.py ROOT_A ROOT_B [...] [--problems P ...]

Each ROOT holds tuning runs ``<Problem>-s<k>`` of the ucr protocol (``experiments/ucr_queue.sh``: 25% of the
training split held out with seed k, ``--trainer.test_eval off``). Every member is the run's last checkpoint (the
last epoch, as ``val_table.py`` reads it), evaluated on its own data config (its clock, its normalisation) on the
run's own validation split, cut again by :func:`statespaces.train.loop.validation_split` from the stored config;
the members of one split must hold out the same series (checked). The test split is never loaded into a model.
Used in experiments/ucr_tuning.md (seventeenth round).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List

import torch
from torch.utils.data import DataLoader, Subset

from statespaces.train.ensemble import combine, predict
from statespaces.train.loop import load_for_evaluation, validation_split
from statespaces.train.tasks import get_task

TUNING = ("ACSF1", "ArrowHead", "OSULeaf", "PickupGestureWiimoteZ")


def last_checkpoint(run: Path) -> Path:
    steps = sorted((run / "checkpoints").glob("step-*"))
    if not steps:
        raise SystemExit(f"{run}: no checkpoints/step-* (an unfinished run?)")
    return steps[-1]


def split_counts(runs: List[Path]) -> List[int]:
    """Validation series right of each run alone, then of their ensemble (last entry)."""
    outs, held0, y0, task = [], None, None, None
    for run in runs:
        model, cfg, _, data = load_for_evaluation(last_checkpoint(run))
        _, held = validation_split(data, cfg.trainer.val_fraction, cfg.trainer.seed, cfg.trainer.val_split)
        if held0 is not None and held != held0:
            raise SystemExit(f"{run}: holds out other series than {runs[0]}; members must share the split")
        task = get_task(data.task)
        out, y = predict(model, DataLoader(Subset(data.train, held), batch_size=256), task)
        outs.append(out)
        held0, y0 = held, y
    assert task is not None and y0 is not None
    return [int((o.argmax(-1) == y0).sum()) for o in outs + [combine(task, outs)]] + [len(y0)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", type=Path)
    p.add_argument("--problems", nargs="*", default=list(TUNING))
    p.add_argument("--splits", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    args = p.parse_args()
    torch.set_num_threads(1)
    names = [r.name for r in args.roots] + ["ensemble"]
    print("| problem | split | " + " | ".join(names) + " | of |")
    print("|---|---|" + "---|" * (len(names) + 1))
    totals: Dict[str, List[int]] = {}
    for problem in args.problems:
        for k in args.splits:
            runs = [r / f"{problem}-s{k}" for r in args.roots]
            if not all((r / "summary.json").is_file() for r in runs):
                continue
            counts = split_counts(runs)
            print(f"| {problem} | {k} | " + " | ".join(str(c) for c in counts) + " |", flush=True)
            totals[problem] = [a + b for a, b in zip(totals.get(problem, [0] * len(counts)), counts)]
    for problem, counts in totals.items():
        print(f"| {problem} | all | " + " | ".join(str(c) for c in counts) + " |")
    if totals:
        grand = [sum(c[i] for c in totals.values()) for i in range(len(names) + 1)]
        print("| all | all | " + " | ".join(str(c) for c in grand) + " |")


if __name__ == "__main__":
    main()
