"""``experiments/selection_rules.py``: outer holdouts cut from a training file, and the rules that pick ``best/``."""
import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from statespaces.data import ucr
from statespaces.train.loop import select_epoch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "selection_rules.py"


@pytest.fixture(scope="module")
def rules():
    spec = importlib.util.spec_from_file_location("selection_rules", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _problem(folder: Path, counts=(10, 7, 3)) -> Path:
    """A three-class, two-channel, variable-length .ts problem; the TEST file holds a sentinel value."""
    rng = np.random.default_rng(0)
    series, labels = [], []
    for c, n in enumerate(counts):
        for i in range(n):
            series.append(rng.standard_normal((2, 5 + i)) + 10 * c + 100 * len(series))   # each case unique
            labels.append(f"c{c}")
    folder.mkdir(parents=True)
    (folder / "Toy_TRAIN.ts").write_text(ucr.format_ts(series, labels, "Toy", ["c0", "c1", "c2"]))
    (folder / "Toy_TEST.ts").write_text(ucr.format_ts([np.full((2, 4), -1.0)], ["c0"], "Toy", ["c0", "c1", "c2"]))
    return folder / "Toy_TRAIN.ts"


def test_outer_holdout_is_a_stratified_partition_of_the_training_file_only(rules, tmp_path):
    source = _problem(tmp_path / "toy")
    new_train = rules.split_problem(str(source), tmp_path / "data-s3", seed=3, outer=0.3)
    fit = ucr.read_series_file(new_train)
    held = ucr.read_series_file(new_train.with_name(new_train.name.replace("_TRAIN", "_TEST")))
    original = ucr.read_series_file(source)
    key = lambda s: float(s[0, 0])                                      # noqa: E731  (cases are unique by it)
    assert sorted(map(key, fit.series + held.series)) == sorted(map(key, original.series))
    assert not set(map(key, fit.series)) & set(map(key, held.series))
    assert all(key(s) != -1.0 for s in fit.series + held.series)      # nothing from the TEST file
    counts = {c: held.labels.count(c) for c in ("c0", "c1", "c2")}
    assert counts == {"c0": 3, "c1": 2, "c2": 1}                       # round(0.3 n) per class, at least one
    assert fit.class_labels == held.class_labels == ["c0", "c1", "c2"]
    again = rules.split_problem(str(source), tmp_path / "again", seed=3, outer=0.3)
    assert again.read_text() == new_train.read_text()                   # seeded
    other = rules.split_problem(str(source), tmp_path / "other", seed=4, outer=0.3)
    assert other.read_text() != new_train.read_text()


def test_rules_read_the_validation_columns_and_the_trainer_rule_is_the_trainers(rules, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [(1, 1.0, 0.30, 0.90), (2, 0.9, 0.20, 0.95), (3, 1.0, 0.10, 0.97), (4, 1.0, 0.25, 0.99), (5, 0.8, 0.05, 0.5)]
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "train_loss", "train_acc", "val_acc", "val_loss", "test_loss", "test_acc"])
        for e, va, vl, ta in rows:
            w.writerow([e, 10 * e, 0.1, 1.0, va, vl, 0.2, ta])
    history = rules.history_of(run)
    pick = {name: rule(history)["epoch"] for name, rule in rules.RULES.items()}
    assert pick == {"trainer (best val acc; ties: lower val loss, then later)": 3, "trainer's, from epoch 2 on": 3,
                    "best val acc; ties: later epoch": 4, "lowest val loss": 5, "last epoch": 5}
    assert select_epoch(history, "validation accuracy")["epoch"] == 3
    early = [dict(r, val_loss=0.01) if r["epoch"] == 1 else r for r in history]     # epoch 1 now wins the tie
    assert rules.RULES["trainer (best val acc; ties: lower val loss, then later)"](early)["epoch"] == 1
    assert rules.RULES["trainer's, from epoch 2 on"](early)["epoch"] == 3
