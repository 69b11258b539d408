"""Rules for the epoch kept in ``best/``, compared on outer holdouts cut from the *training* split (issue #18 item 1).

A small validation split saturates: on JapaneseVowels (27 validation series in the presets' 10%) many epochs
score 100%, and the rule that breaks the tie decides the model. Which rule to use is itself a choice that must
not look at the test split. So for each seed k this script

1. splits the problem's training file, stratified by class, into ``fit`` and an outer holdout (``--outer``,
   default 20%; the test file is never read), and writes them as ``<Name>_TRAIN.ts`` / ``<Name>_TEST.ts`` in
   ``ROOT/data-s<k>``;
2. trains the preset on that pair (``statespaces train --preset P --data.name ROOT/data-s<k>/..._TRAIN.ts
   --trainer.seed k``): the trainer draws its own validation split from ``fit`` as always, and scores the outer
   holdout at every epoch (the ``test_*`` columns of ``metrics.csv``);
3. applies every rule of :data:`RULES` to the run's history (validation columns only) and reads the outer
   holdout's accuracy at the epoch each rule picks.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/selection_rules.py ROOT --preset japanese-vowels-s4d \
        --seeds 10 11 12 [--outer 0.2] [-- extra statespaces-train flags]

A finished run (``summary.json``) is reused. Prints one markdown table: per rule, the outer-holdout series right
per seed and summed, and the mean epoch picked.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from statespaces.data import ucr
from statespaces.train.loop import select_epoch


def _trainer_rule(history: List[Dict[str, Any]]) -> Dict[str, Any]:
    return select_epoch(history, "validation accuracy")


#: name -> rule: history (one dict per epoch: epoch, val_acc, val_loss) -> the chosen record.
RULES: Dict[str, Callable[[List[Dict[str, Any]]], Dict[str, Any]]] = {
    "trainer (best val acc; ties: lower val loss, then later)": _trainer_rule,
    "best val acc; ties: later epoch": lambda h: max(h, key=lambda r: (r["val_acc"], r["epoch"])),
    "trainer's, from epoch 2 on": lambda h: _trainer_rule(h[1:] or h),
    "lowest val loss": lambda h: min(h, key=lambda r: (r["val_loss"], -r["epoch"])),
    "last epoch": lambda h: h[-1],
}


def split_problem(name: str, folder: Path, seed: int, outer: float) -> Path:
    """Write the stratified (fit, outer holdout) split of ``name``'s training file to ``folder``; the path of
    the new training file."""
    problem, train_path, _ = ucr.resolve(name.removeprefix("ucr:"))
    data = ucr.read_series_file(train_path)
    labels = np.array([str(y) for y in data.labels])
    rng = np.random.default_rng(10_000 + seed)          # a stream apart from the trainer's own split
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        held[idx[: max(1, round(outer * len(idx)))]] = True
    folder.mkdir(parents=True, exist_ok=True)
    classes = data.class_labels
    for split, mask in (("TRAIN", ~held), ("TEST", held)):
        text = ucr.format_ts([data.series[i] for i in np.flatnonzero(mask)], list(labels[mask]),
                             problem_name=f"{problem}Outer", class_labels=classes)
        (folder / f"{problem}Outer_{split}.ts").write_text(text)
    return folder / f"{problem}Outer_TRAIN.ts"


def _number(v: Optional[str]) -> Optional[float]:
    """A metrics.csv cell: empty where the run had no such column's value (no validation split)."""
    return float(v) if v not in ("", None) else None


def history_of(run: Path) -> List[Dict[str, Any]]:
    """One record per epoch of ``run/metrics.csv``: epoch, val_acc, val_loss (None without a validation split),
    test_acc (here: the outer holdout's)."""
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [{"epoch": int(r["epoch"]), "val_acc": _number(r["val_acc"]), "val_loss": _number(r["val_loss"]),
             "test_acc": float(r["test_acc"])} for r in rows]


def main() -> int:
    argv = sys.argv[1:]
    extra: List[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[: argv.index("--")]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root")
    p.add_argument("--preset", required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--outer", type=float, default=0.2, help="fraction of the training split held out (outer)")
    p.add_argument("--problem", default=None, help="ucr:<Name> (default: the preset's data.name)")
    a = p.parse_args(argv)
    from statespaces.train import build_config

    name = a.problem or build_config(a.preset).data.name
    root = Path(a.root)
    picks: Dict[str, List[tuple]] = {rule: [] for rule in RULES}
    n_outer = 0
    for k in a.seeds:
        run = root / f"run-s{k}"
        if not (run / "summary.json").is_file():
            train = split_problem(name, root / f"data-s{k}", k, a.outer)
            cmd = [sys.executable, "-m", "statespaces", "train", "--preset", a.preset, "--data.name", str(train),
                   "--trainer.seed", str(k), "--trainer.out", str(run), "--trainer.tensorboard", "off",
                   "--no-progress", *extra]
            shutil.rmtree(run, ignore_errors=True)             # an unfinished earlier attempt
            with open(root / f"run-s{k}.log", "w") as log:
                subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
        history = history_of(run)
        n = json.loads((run / "summary.json").read_text())["n_test"]          # the outer holdout's size
        n_outer += n
        for rule, choose in RULES.items():
            if history[0]["val_acc"] is None and rule != "last epoch":
                continue                                        # a run without a validation split
            rec = choose(history)
            picks[rule].append((round(rec["test_acc"] * n), rec["epoch"]))
    print(f"| rule ({a.preset}, seeds {', '.join(map(str, a.seeds))}; outer holdout {a.outer:.0%} of the training "
          f"split) | outer series right per seed | outer series right | mean epoch picked |")
    print("|---|---|---|---|")
    for rule, got in picks.items():
        if not got:
            continue
        per = ", ".join(str(r) for r, _ in got)
        print(f"| {rule} | {per} | {sum(r for r, _ in got)} of {n_outer} | {np.mean([e for _, e in got]):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
