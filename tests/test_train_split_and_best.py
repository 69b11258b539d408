"""The validation split's size and the ``best/`` a crashed run leaves (found by an audit).

1. ``trainer.val_split = "stratified"`` (the default) holds out ``round(val_fraction x n)`` series in
   total, shared over the classes by largest remainder (10 classes of 5 at 0.1: 5 held out, one from
   each of 5 classes; the rule before rounded each class alone and held out 1). ``"per-class-round"``
   is that earlier rule, kept to reproduce earlier runs; a stored config without the key is read with
   it, so a resumed old run keeps its split.
2. A run stopped between writing its step checkpoint and ``best/`` is repaired on resume: ``best/`` is
   the epoch the history chose, and ``summary.json`` agrees with ``statespaces evaluate``.
"""
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import List, Tuple

import pytest
import torch
from conftest import cli_status, killed_after_saves
from torch.utils.data import TensorDataset

import statespaces.train.run as run_module
from statespaces.train import build_config, evaluate_checkpoint, load_checkpoint, save_checkpoint, train
from statespaces.train.config import (
    ConfigError,
    TrainConfig,
    config_conflicts,
    resume_config,
)
from statespaces.train.loop import load_data, validation_split
from statespaces.train.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(labels, task="classification"):
    """A dataset with the training labels ``labels`` (the inputs do not matter to the split)."""
    y = torch.as_tensor(labels)
    return SimpleNamespace(train=TensorDataset(torch.zeros(len(y), 3, 1), y), task=task, name="fake")


def _classes(per_class: List[int]):
    return _data([c for c, n in enumerate(per_class) for _ in range(n)])


def _old_validation_split(data, fraction: float, seed: int) -> Tuple[list, list]:
    """A copy of ``validation_split`` before 2026-12-06 (commit 7f7c7da), stratified branch."""
    n = len(data.train)
    g = torch.Generator().manual_seed(seed)
    assert n >= 2
    y = data.train.tensors[1]
    assert get_task(data.task).stratify and y.dim() == 1
    held: List[int] = []
    fit: List[int] = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        idx: List[int] = members[torch.randperm(len(members), generator=g)].tolist()
        k = min(int(round(fraction * len(idx))), len(idx) - 1)
        held += idx[:k]
        fit += idx[k:]
    if not held:
        counts = torch.bincount(y)
        c = int(counts.argmax())
        assert int(counts[c]) >= 2
        first = next(i for i in fit if int(y[i]) == c)
        fit.remove(first)
        held.append(first)
    return sorted(fit), sorted(held)


def _held_per_class(data, held) -> List[int]:
    y = data.train.tensors[1]
    return torch.bincount(y[held], minlength=int(y.max()) + 1).tolist()


# --- 1. the held-out size -----------------------------------------------------------------------------
@pytest.mark.parametrize("per_class,n_classes,fraction,expected", [
    (5, 10, 0.1, 5),      # PickupGestureWiimoteZ: 1 held out by the per-class rule
    (10, 10, 0.25, 25),   # ACSF1: 20 by the per-class rule
    (5, 10, 0.25, 12),    # 12.5: Python's rounding, as the unstratified draw
    (18, 2, 0.1, 4),      # 3.6
])
def test_the_held_out_count_is_the_fraction_of_the_whole_split(per_class, n_classes, fraction, expected):
    data = _classes([per_class] * n_classes)
    for seed in range(5):
        fit, held = validation_split(data, fraction, seed)
        assert len(held) == expected == round(fraction * per_class * n_classes)
        assert sorted(fit + held) == list(range(per_class * n_classes)) and not set(fit) & set(held)
        counts = _held_per_class(data, held)
        quota = fraction * per_class
        assert all(math.floor(quota) <= k <= math.ceil(quota) for k in counts), counts     # stratified
        assert all(k < per_class for k in counts)                                          # each class trains


@pytest.mark.parametrize("task", ["regression", "forecast"])
def test_tasks_without_classes_hold_out_round_f_n(task):
    """Regression and forecast splits are a plain seeded draw of round(f n) examples (at least 1, at most n - 1),
    Python's rounding included (f n = 1.5 holds out 2); a truncation went unnoticed by the other tests."""
    for n in (2, 3, 10, 37, 100):
        data = SimpleNamespace(name="toy", task=task, train=TensorDataset(torch.randn(n, 4, 1), torch.randn(n, 1)))
        for fraction in (0.01, 0.1, 0.15, 0.25, 0.5, 0.95):
            fit, held = validation_split(data, fraction, seed=3)
            assert len(held) == min(max(1, round(fraction * n)), n - 1), (n, fraction)
            assert sorted(fit + held) == list(range(n))


def test_five_of_ten_small_classes_give_one_each_and_the_seed_picks_which():
    data = _classes([5] * 10)
    picked = set()
    for seed in range(8):
        held = validation_split(data, 0.1, seed)[1]
        counts = _held_per_class(data, held)
        assert sorted(counts) == [0] * 5 + [1] * 5
        picked.add(tuple(counts))
        assert validation_split(data, 0.1, seed) == validation_split(data, 0.1, seed)        # seeded
    assert len(picked) > 1          # ties are broken by the seed, not always the first five classes


@pytest.mark.parametrize("sizes", [[1, 1, 2], [2, 1, 1, 1], [3, 1], [7, 2, 2, 30, 1], [40, 3, 13, 1, 2, 25]])
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5, 0.9])
def test_every_class_keeps_a_training_example_and_the_total_is_round_f_n(sizes, fraction):
    data = _classes(sizes)
    n = sum(sizes)
    fit, held = validation_split(data, fraction, seed=3)
    counts = _held_per_class(data, held)
    assert len(held) == min(max(1, round(fraction * n)), n - len(sizes))
    assert all(k <= size - 1 for k, size in zip(counts, sizes)) and sorted(fit + held) == list(range(n))


def test_largest_remainders_get_the_extra_seats():
    # quotas at 0.1: 0.9, 1.4, 2.5 -> floors 0, 1, 2; round(4.8) = 5: two extra seats, to 0.9 and 0.5
    data = _classes([9, 14, 25])
    assert _held_per_class(data, validation_split(data, 0.1, seed=0)[1]) == [1, 1, 3]


def test_the_per_class_round_rule_reproduces_the_earlier_split_exactly():
    cases = [_classes([5] * 10), _classes([10] * 10), _classes([9, 14, 25]), _classes([1, 1, 3, 1]),
             _data([0, 2, 2, 5, 5, 5, 0, 2, 7]),                      # labels with gaps: the fallback class
             load_data(build_config())]                                 # sklearn digits
    for data in cases:
        for fraction in (0.05, 0.1, 0.2, 0.25):
            for seed in (0, 1, 7):
                assert validation_split(data, fraction, seed, "per-class-round") == \
                    _old_validation_split(data, fraction, seed)


def test_a_class_holding_out_as_many_as_before_draws_the_same_series():
    """The rules differ only in how many each class gives: JapaneseVowels (30 per class) at 0.1 and 0.2
    is the same split under both."""
    data = _classes([30] * 9)
    for fraction in (0.1, 0.2):
        assert validation_split(data, fraction, 4) == validation_split(data, fraction, 4, "per-class-round")


def test_unstratified_tasks_ignore_the_rule():
    data = _data(torch.randn(20), task="regression")
    assert validation_split(data, 0.25, 2) == validation_split(data, 0.25, 2, "per-class-round")
    assert len(validation_split(data, 0.25, 2)[1]) == 5


def test_no_class_with_two_examples_is_one_line():
    with pytest.raises(ConfigError, match=r"^trainer.val_fraction: got 0.1, but no class of 'fake' has two "):
        validation_split(_classes([1, 1, 1]), 0.1, 0)


# --- 1. the config key, stored configs and resume -------------------------------------------------------
def test_new_runs_default_to_the_new_rule_and_stored_configs_without_the_key_to_the_old():
    assert TrainConfig().trainer.val_split == "stratified"
    assert TrainConfig.from_dict({"trainer": {"epochs": 3}}).trainer.val_split == "stratified"
    old = {"model": {"d_model": 8}, "trainer": {"epochs": 3, "val_fraction": 0.1}}
    assert TrainConfig.from_dict(old, legacy=True).trainer.val_split == "per-class-round"
    assert TrainConfig.from_dict({"model": {}}, legacy=True).trainer.val_split == "per-class-round"
    new = {"trainer": {"val_split": "stratified"}}
    assert TrainConfig.from_dict(new, legacy=True).trainer.val_split == "stratified"
    with pytest.raises(ConfigError, match=r"^trainer.val_split: got 'nearest'.*; valid: stratified, per-class-round$"):
        TrainConfig.from_dict({"trainer": {"val_split": "nearest"}})


def test_resuming_an_old_run_keeps_its_split_and_a_new_rule_is_a_named_conflict():
    stored = TrainConfig().to_dict()
    del stored["trainer"]["val_split"]
    assert resume_config(stored, "runs/old").trainer.val_split == "per-class-round"
    with pytest.raises(ConfigError, match=r"--trainer.val_split stratified conflicts with the stored run "
                                          r"\(trainer.val_split = 'per-class-round'\)"):
        resume_config(stored, "runs/old", overrides=[("trainer.val_split", "stratified")])
    assert config_conflicts(stored, TrainConfig().to_dict()) == {"trainer.val_split": ("per-class-round",
                                                                                       "stratified")}


_cli = cli_status


def _strip_val_split(folder: Path) -> None:
    """Make a run folder look written before ``trainer.val_split``: no such key in any stored config."""
    for ckpt in [*(folder / "checkpoints").iterdir(), folder / "best"]:
        tensors, meta = load_checkpoint(ckpt)
        del meta["config"]["trainer"]["val_split"]
        save_checkpoint(ckpt, tensors, meta)
    info = json.loads((folder / "run.json").read_text())
    del info["config"]["trainer"]["val_split"]
    (folder / "run.json").write_text(json.dumps(info))


def test_an_old_run_resumes_on_the_split_it_drew(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    cfg = build_config(overrides=[
        ("model.d_model", "8"), ("model.n_layers", "1"), ("model.layer.d_state", "4"), ("model.layer.init", "lin"),
        ("trainer.epochs", "2"), ("trainer.batch_size", "256"), ("trainer.out", str(out)),
        ("trainer.tensorboard", "off"), ("trainer.val_split", "per-class-round")])
    with killed_after_saves(monkeypatch, 1):
        train(cfg, progress=False)
    _strip_val_split(out)
    rc, err = _cli(capsys, "train", "--trainer.out", str(out), "--resume", "--no-progress")
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    # digits, 1437 training images at 0.1: 142 held out by the per-class rule (144 = round(143.7) today)
    assert summary["val_split"] == "per-class-round" and summary["n_val"] == 142 and summary["steps"] == 12
    rc, err = _cli(capsys, "train", "--trainer.out", str(out), "--resume", "--trainer.val_split", "stratified",
                   "--no-progress")
    assert rc == 2 and "--trainer.val_split stratified conflicts with the stored run" in err


# --- 2. best/ after a run stopped between its two writes ----------------------------------------------------
def _scripted_validation(monkeypatch, val):
    """The loop's evaluate() returns ``val[e]`` on the validation split at epoch e+1 (and 0.5 on the test split)."""
    import statespaces.train.loop as loop

    calls = {"val": 0}

    def fake(model, loader, device=None, task="classification"):
        if len(loader.dataset) == 360:                  # digits' test split
            return {"loss": 1.0, "acc": 0.5}
        calls["val"] += 1
        return {"loss": 1.0, "acc": val[calls["val"] - 1]}

    monkeypatch.setattr(loop, "evaluate", fake)


def test_a_run_stopped_between_its_step_checkpoint_and_best_resumes_with_the_chosen_best(tmp_path, monkeypatch,
                                                                                          capsys):
    """Epoch 2 is chosen (validation 0.9); the run dies after writing checkpoints/step-<epoch 2> and before
    best/ (a kill, a full disk). The resumed run's history says epoch 2, so best/ must hold epoch 2."""
    out = tmp_path / "run"
    cfg = build_config(overrides=[
        ("model.d_model", "8"), ("model.n_layers", "1"), ("model.layer.d_state", "4"), ("model.layer.init", "lin"),
        ("trainer.epochs", "3"), ("trainer.batch_size", "256"), ("trainer.out", str(out)),
        ("trainer.tensorboard", "off")])
    _scripted_validation(monkeypatch, val=[0.5, 0.9, 0.1])
    real, state = run_module.save_checkpoint, {"armed": True}

    def dying(path, tensors, meta):
        if Path(path).name == "best" and meta.get("epoch") == 2 and state["armed"]:
            state["armed"] = False
            raise KeyboardInterrupt("killed while writing best/")
        return real(path, tensors, meta)

    monkeypatch.setattr(run_module, "save_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    assert load_checkpoint(out / "best")[1]["epoch"] == 1                     # stale: the crash
    summary = train(cfg, resume=True, progress=False)
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert summary["selected_epoch"] == 2 and summary["selected_val_acc"] == 0.9
    result = evaluate_checkpoint(str(out))
    assert result["epoch"] == summary["selected_epoch"]
    assert "did not hold the selected step" in err
    best_tensors, best_meta = load_checkpoint(out / "best")
    step2 = out / "checkpoints" / f"step-{best_meta['step']:09d}"
    step_tensors, step_meta = load_checkpoint(step2)
    assert step_meta["epoch"] == 2 and best_meta["selection"]["selected"]
    assert all(torch.equal(best_tensors[k], step_tensors[k]) for k in step_tensors)
