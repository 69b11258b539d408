#!/usr/bin/env python3
"""Validation-only table of a tuning round (experiments/ucr_tuning.md protocol).

    python experiments/val_table.py ROOT [ROOT ...]

Each ROOT holds one folder per run, named ``<Problem>-s<k>`` (a run of ``statespaces train ...
--trainer.val_fraction 0.25 --trainer.seed k --trainer.out ROOT/<Problem>-s<k>``). For each variant
(ROOT) and problem it prints the splits finished, the validation series right at the last epoch
(``val_acc`` of the last row of ``metrics.csv`` times ``n_val`` of ``summary.json``), per split and
summed, and the mean last-epoch validation loss. Test columns are never read.
"""
from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections import defaultdict
from typing import Dict, List, Tuple


def last_epoch(run: str) -> Tuple[int, int, float]:
    """(validation series right, validation series, validation loss) at the last epoch of one run."""
    with open(os.path.join(run, "summary.json")) as f:
        n_val = int(json.load(f)["n_val"])
    with open(os.path.join(run, "metrics.csv")) as f:
        row = list(csv.DictReader(f))[-1]
    return round(float(row["val_acc"]) * n_val), n_val, float(row["val_loss"])


def table(roots: List[str]) -> str:
    lines = ["| variant | problem | splits | series right per split | series right | mean validation loss |",
             "|---|---|---|---|---|---|"]
    totals: Dict[str, Dict[int, Tuple[int, int]]] = {}
    for root in roots:
        variant = os.path.basename(os.path.normpath(root))
        runs: Dict[str, Dict[int, Tuple[int, int, float]]] = defaultdict(dict)
        for name in sorted(os.listdir(root)):
            m = re.fullmatch(r"(.+)-s(\d+)", name)
            if m and os.path.exists(os.path.join(root, name, "summary.json")):
                runs[m.group(1)][int(m.group(2))] = last_epoch(os.path.join(root, name))
        for problem, splits in sorted(runs.items()):
            ks = sorted(splits)
            right = sum(splits[k][0] for k in ks)
            of = sum(splits[k][1] for k in ks)
            loss = sum(splits[k][2] for k in ks) / len(ks)
            per = ", ".join(str(splits[k][0]) for k in ks)
            lines.append(f"| {variant} | {problem} | {', '.join(map(str, ks))} | {per} | {right} of {of} | {loss:.3f} |")
            for k in ks:
                t = totals.setdefault(variant, {})
                r, n = t.get(k, (0, 0))
                t[k] = (r + splits[k][0], n + splits[k][1])
    lines.append("")
    for variant, per_split in totals.items():
        parts = ", ".join(f"split {k}: {r} of {n}" for k, (r, n) in sorted(per_split.items()))
        lines.append(f"{variant}: {parts}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1].strip())
    print(table(sys.argv[1:]))
