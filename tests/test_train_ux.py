"""Training a practitioner can trust (issue #18, items 1, 3, 4, 8).

1. ``best/`` is never chosen on the test set: a stratified, seeded validation split by default, the
   last epoch with ``trainer.val_fraction = 0``; ``summary.json`` and ``evaluate`` say which epoch
   and how.
3. Any time-series file: UCR ``.tsv`` and old ``.txt`` besides ``.ts``, a path without ``ucr:``,
   ``evaluate --data.name PATH`` for moved data, paths stored resolved, ``data.normalize``.
4. Resume by folder: the config comes from the checkpoint, a conflicting flag is named; presets
   write to ``runs/<preset>``; ``train_seconds`` counts every segment.
8. One-line CLI errors for every command; plain progress lines when the bar's stream is no terminal.
"""
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from statespaces.data import DATASETS, canonical_name, ucr
from statespaces.train import build_config, evaluate_checkpoint, load_checkpoint, save_checkpoint, train
from statespaces.train.config import ConfigError, TrainConfig
from statespaces.train.loop import Progress, load_data, select_epoch, validation_split

from conftest import cli_run, killed_after_saves

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(tmp_path, out="run", *extra):
    return build_config(overrides=[
        ("model.d_model", "8"), ("model.n_layers", "1"), ("model.layer.d_state", "4"), ("model.layer.init", "lin"),
        ("trainer.epochs", "2"), ("trainer.batch_size", "128"), ("trainer.out", str(tmp_path / out)),
        ("trainer.tensorboard", "off"), *extra])


_cli = cli_run


def _fake_scores(monkeypatch, val, test):
    """Make the loop's evaluate() return scripted scores per epoch: ``val[e]`` on the validation
    loader, ``test[e]`` on the test loader (told apart by their sizes)."""
    import statespaces.train.loop as loop

    calls = {}

    def fake(model, loader, device=None, task="classification"):
        n = len(loader.dataset)
        k = calls.setdefault(n, [0])
        k[0] += 1
        seq = test if n == fake.n_test else val
        return {"loss": 1.0, "acc": seq[k[0] - 1]}

    fake.n_test = 360                                        # digits: 1797 images, 20% test
    monkeypatch.setattr(loop, "evaluate", fake)


# --- item 1: model selection ----------------------------------------------------------------------
def test_best_is_chosen_on_validation_never_on_test(tmp_path, monkeypatch, capsys):
    """Validation accuracy falls while test accuracy rises: best/ must be epoch 1 (by validation);
    a test-selected run would keep epoch 3."""
    _fake_scores(monkeypatch, val=[0.9, 0.8, 0.7], test=[0.5, 0.6, 0.7])
    summary = train(_tiny(tmp_path, "run", ("trainer.epochs", "3")), progress=False)
    assert summary["selection"] == "validation accuracy" and summary["selected_epoch"] == 1
    assert summary["selected_val_acc"] == 0.9 and summary["test_acc"] == 0.5 and summary["final_test_acc"] == 0.7
    assert summary["n_val"] == 144 and summary["n_train"] == 1437 - 144 and summary["val_fraction"] == 0.1
    assert summary["val_split"] == "stratified"                                      # round(0.1 x 1437) held out
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["selected_epoch"] == 1 and on_disk["selection"] == "validation accuracy"
    meta = load_checkpoint(tmp_path / "run" / "best")[1]
    assert meta["epoch"] == 1 and meta["selection"] == {"by": "validation accuracy", "selected": True, "epochs": 3,
                                                         "val_acc": 0.9}
    monkeypatch.undo()
    rc, out, _ = _cli(capsys, "evaluate", str(tmp_path / "run"))           # a run folder: its best/
    assert rc == 0 and "epoch 1 of 3" in out and "chosen by validation accuracy 90.00%" in out
    assert str(tmp_path / "run" / "best") in out


def test_without_a_validation_split_best_is_the_last_epoch(tmp_path, monkeypatch, capsys):
    _fake_scores(monkeypatch, val=[], test=[0.9, 0.8, 0.7])
    summary = train(_tiny(tmp_path, "run", ("trainer.epochs", "3"), ("trainer.val_fraction", "0")), progress=False)
    assert summary["selection"] == "last epoch" and summary["selected_epoch"] == 3 and summary["test_acc"] == 0.7
    assert summary["selected_val_acc"] is None and summary["n_val"] == 0
    assert load_checkpoint(tmp_path / "run" / "best")[1]["epoch"] == 3
    monkeypatch.undo()
    rc, out, _ = _cli(capsys, "evaluate", str(tmp_path / "run" / "best"))
    assert rc == 0 and "the last epoch (no validation split" in out


def test_test_eval_off_never_scores_the_test_split(tmp_path, monkeypatch, capsys):
    """Blind tuning: with trainer.test_eval off the loop evaluates the validation split only; no test
    figure is printed or stored, and the run's best/ can still be scored afterwards."""
    import statespaces.train.loop as loop

    sizes = []
    real = loop.evaluate

    def spy(model, loader, device=None, task="classification"):
        sizes.append(len(loader.dataset))
        return real(model, loader, device, task)

    monkeypatch.setattr(loop, "evaluate", spy)
    summary = train(_tiny(tmp_path, "run", ("trainer.test_eval", "off")), progress=False)
    assert sizes == [144, 144]                               # the validation split, once per epoch; never the 360 test images
    assert summary["test_acc"] is None and summary["final_test_acc"] is None and summary["test_eval"] == "off"
    assert summary["selection"] == "validation accuracy" and summary["selected_val_acc"] is not None
    out = capsys.readouterr().out
    assert "val acc" in out and "test" not in out
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    head, last = rows[0].split(","), rows[-1].split(",")
    assert last[head.index("test_acc")] == "" and last[head.index("val_acc")] != ""
    history = load_checkpoint(tmp_path / "run" / "best")[1]["history"]
    assert all(h["test_acc"] is None and h["test_loss"] is None for h in history)
    monkeypatch.undo()
    rc, out, _ = _cli(capsys, "evaluate", str(tmp_path / "run"))           # scored on request, afterwards
    assert rc == 0 and "accuracy" in out


def test_test_eval_off_on_the_command_line_says_how_to_score_the_run(tmp_path, capsys):
    out_dir = tmp_path / "run"
    rc, out, err = _cli(capsys, "train", "--model.d_model", "8", "--model.n_layers", "1", "--model.layer.d_state",
                        "4", "--trainer.epochs", "1", "--trainer.batch_size", "256", "--trainer.val_fraction", "0",
                        "--trainer.test_eval", "off", "--trainer.out", str(out_dir), "--trainer.tensorboard", "off",
                        "--no-progress")
    assert rc == 0, err
    assert f"test split not scored (trainer.test_eval off: `statespaces evaluate {out_dir}` scores it)" in out
    assert "last epoch" in out


def test_validation_ties_go_to_the_lower_loss_then_the_later_epoch():
    """Many epochs tie on a small validation split: the first of them is often an early one, so
    ties are broken by validation loss, then by the later epoch; the test score never counts."""
    def h(epoch, acc, loss, test):
        return {"epoch": epoch, "val_acc": acc, "val_loss": loss, "test_acc": test}

    hist = [h(1, 0.95, 0.30, 0.99), h(2, 0.99, 0.20, 0.90), h(3, 0.99, 0.10, 0.91), h(4, 0.99, 0.15, 0.99)]
    assert select_epoch(hist, "validation accuracy")["epoch"] == 3
    hist = [h(1, 0.99, 0.10, 0.99), h(2, 0.99, 0.10, 0.50), h(3, 0.98, 0.01, 0.99)]
    assert select_epoch(hist, "validation accuracy")["epoch"] == 2                  # full tie: the later
    old = [{"epoch": 1, "val_acc": 0.9}, {"epoch": 2, "val_acc": 0.9}]             # history without val_loss
    assert select_epoch(old, "validation accuracy")["epoch"] == 2
    assert select_epoch(hist, "last epoch")["epoch"] == 3 and select_epoch([], "last epoch") == {}


def test_validation_split_is_stratified_seeded_and_disjoint():
    data = load_data(build_config())
    y = data.train.tensors[1]
    fit, held = validation_split(data, 0.1, seed=0)
    assert sorted(fit + held) == list(range(len(y))) and not set(fit) & set(held)
    counts, held_counts = torch.bincount(y), torch.bincount(y[held], minlength=10)
    assert len(held) == round(0.1 * len(y))                                            # in total
    quotas = 0.1 * counts.double()                                                     # per class
    assert torch.all((held_counts >= torch.floor(quotas)) & (held_counts <= torch.ceil(quotas)))
    assert validation_split(data, 0.1, seed=0) == (fit, held)
    assert validation_split(data, 0.1, seed=1)[1] != held


def test_an_old_test_selected_checkpoint_says_so(tmp_path):
    cfg = _tiny(tmp_path, "run", ("trainer.epochs", "1"), ("trainer.val_fraction", "0"))
    train(cfg, progress=False)
    tensors, meta = load_checkpoint(tmp_path / "run" / "best")
    del meta["selection"]                                    # as written before selections were recorded
    save_checkpoint(tmp_path / "old" / "best", tensors, meta)
    res = evaluate_checkpoint(str(tmp_path / "old" / "best"))
    assert "chosen by TEST accuracy" in res["selection"] and "optimistic" in res["selection"]


# --- item 3: any time-series file -----------------------------------------------------------------
def _series(n, rng, length=24):
    """Two classes: noisy sines and noisy square waves, with per-series offsets and scales."""
    t = np.linspace(0, 4 * np.pi, length)
    out = []
    for i in range(n):
        c = i % 2
        base = np.sin(t) if c == 0 else np.sign(np.sin(t))
        out.append((str(c + 1), rng.uniform(-5, 5) + rng.uniform(0.5, 3) * base + 0.1 * rng.standard_normal(length)))
    return out


def _write_ucr(folder: Path, fmt: str, name="Waves", n_train=24, n_test=16, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("TRAIN", n_train), ("TEST", n_test)):
        rows = _series(n, rng)
        if fmt == ".tsv":
            text = "".join("\t".join([lab] + [repr(float(v)) for v in x]) + "\n" for lab, x in rows)
        elif fmt in (".txt", ""):
            text = "".join("  ".join([f"{float(lab):.7e}"] + [f"{v:.7e}" for v in x]) + "\n" for lab, x in rows)
        elif fmt == ".csv":                     # with a header line of column names, as a spreadsheet writes it
            text = ",".join(["class"] + [f"t{i}" for i in range(len(rows[0][1]))]) + "\n"
            text += "".join(",".join([lab] + [repr(float(v)) for v in x]) + "\n" for lab, x in rows)
        else:
            text = ucr.format_ts([x for _, x in rows], [lab for lab, _ in rows], problem_name=name,
                                 class_labels=["1", "2"])
        (folder / f"{name}_{split}{fmt}").write_text(text)
    return folder / f"{name}_TRAIN{fmt}"


@pytest.mark.parametrize("fmt", [".tsv", ".txt", "", ".csv"])
def test_ucr_tsv_and_txt_files_load_like_ts(tmp_path, fmt):
    ref = ucr.load_ucr(_write_ucr(tmp_path / "ts", ".ts"))
    path = _write_ucr(tmp_path / "other", fmt)
    for arg in (path, path.with_name(path.name.replace("TRAIN", "TEST")), path.parent):
        got = ucr.load_ucr(arg)
        assert got.name == "ucr:Waves" and got.classes == ["1", "2"]
        for a, b in zip(ref.train.tensors + ref.test.tensors, got.train.tensors + got.test.tensors):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)      # .txt holds 8 digits


def test_tsv_variable_length_and_missing_values():
    text = "1\t1.0\t2.0\tNaN\t4.0\n2\t5.0\t6.0\tNaN\tNaN\n1.0\t0.5\t0.25\t0.125\t1\n"
    f = ucr.parse_ucr_table(text, sep="\t")
    assert f.labels == ["1", "2", "1"] and f.lengths.tolist() == [4, 2, 4]
    assert np.isnan(f.series[0][0, 2]) and f.series[1].shape == (1, 2)
    with pytest.raises(ValueError, match="line 1: cannot read 'x' as a number"):
        ucr.parse_ucr_table("1\tx\t2\n", sep="\t")
    with pytest.raises(ValueError, match="this is a .ts file"):
        ucr.parse_ucr_table("@problemName X\n", sep=None)


@pytest.mark.skipif("GunPoint" not in ucr.available_problems(), reason="no bundled .ts files")
def test_the_archive_tsv_shipped_with_aeon_matches_its_ts(tmp_path):
    """aeon ships GunPoint_TRAIN.tsv (the UCR 2018 file) beside the .ts files."""
    _, train_ts, test_ts = ucr.resolve("GunPoint")
    tsv = train_ts.with_suffix(".tsv")
    if not tsv.is_file():
        pytest.skip("this aeon has no GunPoint_TRAIN.tsv")
    a, b = ucr.read_ts(train_ts), ucr.read_series_file(tsv)
    assert a.labels == b.labels and all(np.allclose(x, y) for x, y in zip(a.series, b.series))


def test_a_path_without_prefix_trains_and_is_stored_resolved(tmp_path, monkeypatch, capsys):
    _write_ucr(tmp_path / "data" / "Waves", ".tsv")
    monkeypatch.chdir(tmp_path)
    rel = "data/Waves/Waves_TRAIN.tsv"
    assert rel in DATASETS and canonical_name(rel) == f"ucr:{tmp_path / rel}"
    rc, out, err = _cli(capsys, "train", "--data.name", rel, "--model.d_model", "8", "--model.n_layers", "1",
                        "--model.layer.d_state", "4", "--model.layer.init", "lin", "--trainer.epochs", "1",
                        "--trainer.batch_size", "8", "--trainer.out", "run", "--trainer.tensorboard", "off",
                        "--no-progress")
    assert rc == 0, err
    meta = load_checkpoint(tmp_path / "run" / "best")[1]
    assert meta["config"]["data"]["name"] == f"ucr:{tmp_path / rel}" and meta["classes"] == ["1", "2"]
    before = evaluate_checkpoint(str(tmp_path / "run"))
    # the data moves: the stored path is gone, --data.name points the checkpoint at the new place
    shutil.move(tmp_path / "data", tmp_path / "moved")
    rc, _, err = _cli(capsys, "evaluate", "run")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Waves_TRAIN.tsv" in err
    assert "was trained on data that is no longer where it was" in err and "--data.name NEW_PATH" in err
    rc, out, err = _cli(capsys, "evaluate", "run", "--data.name", "moved/Waves")
    assert rc == 0, err
    with warnings.catch_warnings():                # the same problem elsewhere (a folder, a file): no warning
        warnings.simplefilter("error")
        after = evaluate_checkpoint(str(tmp_path / "run"), data_name="moved/Waves/Waves_TEST.tsv")
        evaluate_checkpoint(str(tmp_path / "run"), data_name="moved/Waves")
    assert after["acc"] == before["acc"] and after["loss"] == pytest.approx(before["loss"])
    _write_ucr(tmp_path / "alike", ".tsv", name="Alike")            # same shape and classes, another problem
    with pytest.warns(UserWarning, match=r"--data.name alike: not the data .*run/best was trained on "
                                         r"\(ucr:.*Waves_TRAIN.tsv\); scored anyway"):
        evaluate_checkpoint(str(tmp_path / "run"), data_name="alike")
    _write_ucr(tmp_path / "three", ".tsv", name="Other")          # other classes: refused, named
    (tmp_path / "three" / "Other_TRAIN.tsv").write_text("3\t1\t2\n1\t2\t3\n2\t1\t1\n")
    with pytest.raises(ValueError, match="classes"):
        evaluate_checkpoint(str(tmp_path / "run"), data_name="three")


def test_data_errors_say_how_to_fix_them(tmp_path, capsys):
    """A CLI campaign's rough edges: an unknown data.kwargs key named Python's TypeError of load_ucr; a missing
    <Name>_TEST.tsv beside a <Name>_TEST.txt did not mention the file that is there."""
    train_file = _write_ucr(tmp_path / "Mix", ".tsv", name="Mix")
    with pytest.raises(TypeError, match=r"takes no setting 'maxlength' \(a keyword, or data.kwargs.maxlength on the "
                                        r"command line\); its settings: .*max_length"):
        load_data(build_config(overrides=[("data.name", str(train_file)), ("data.kwargs", '{"maxlength": 4}')]))
    (tmp_path / "Mix" / "Mix_TEST.tsv").rename(tmp_path / "Mix" / "Mix_TEST.txt")
    with pytest.raises(FileNotFoundError, match=r"Mix_TEST.tsv not found: .*; found Mix_TEST.txt beside it"):
        ucr.load_ucr(train_file)


def test_data_name_errors_name_the_accepted_forms(tmp_path, capsys):
    (tmp_path / "notes.csv").write_text("1,2\n")
    (tmp_path / "empty").mkdir()
    cases = [("nope", "unknown dataset 'nope'"), (str(tmp_path / "missing_TRAIN.tsv"), "no file or folder at"),
             (str(tmp_path / "notes.csv"), "must be named <Name>_TRAIN or <Name>_TEST"),
             (str(tmp_path / "empty"), "expected one problem")]
    for name, match in cases:
        rc, out, err = _cli(capsys, "train", "--data.name", name, "--trainer.out", str(tmp_path / "never"),
                            "--no-progress")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and match in err, err
        assert "training" not in out             # the banner waits for the data (it came before the error)
        assert ".tsv" in err or "valid datasets" in err
    assert not (tmp_path / "never").exists()


def test_data_normalize_series_global_none(tmp_path):
    path = _write_ucr(tmp_path / "w", ".tsv")
    cfg = lambda mode: build_config(overrides=[("data.name", str(path)), ("data.normalize", mode)]).validated()  # noqa
    series = load_data(cfg("series")).train.tensors[0]
    assert series.mean(1).abs().max() < 1e-5 and (series.std(1, unbiased=False) - 1).abs().max() < 1e-4
    glob = load_data(cfg("global")).train.tensors[0]
    assert abs(float(glob.mean())) < 1e-5 and float(glob.mean(1).abs().max()) > 0.5   # offsets kept
    raw = load_data(cfg("none")).train.tensors[0]
    assert float(raw.abs().max()) > 3
    digits = load_data(build_config(overrides=[("data.normalize", "series")]))
    x = digits.train.tensors[0]
    assert x.mean(1).abs().max() < 1e-5
    with pytest.raises(ConfigError, match="data.normalize: got 'none' for dataset 'digits'"):
        load_data(build_config(overrides=[("data.normalize", "none")]))
    with pytest.raises(ConfigError, match="data.normalize: got 'zscore'"):
        TrainConfig.from_dict({"data": {"normalize": "zscore"}})


def test_variable_length_series_normalization_uses_valid_steps_only(tmp_path):
    (tmp_path / "V_TRAIN.tsv").write_text("1\t1\t2\t3\tNaN\n2\t4\t8\tNaN\tNaN\n1\t0\t1\t0\t1\n2\t3\t1\t2\t0\n")
    (tmp_path / "V_TEST.tsv").write_text("1\t1\t3\tNaN\tNaN\n2\t2\t2\t2\t9\n")
    d = ucr.load_ucr(tmp_path / "V_TRAIN.tsv", normalize="series")
    x, _, lengths = d.train.tensors
    assert lengths.tolist() == [3, 2, 4, 4]
    for i, n in enumerate(lengths.tolist()):
        v = x[i, :n, 0]
        assert abs(float(v.mean())) < 1e-6 and abs(float(v.std(unbiased=False)) - 1) < 1e-5
        assert float(x[i, n:].abs().sum()) == 0


# --- item 4: resume by folder ------------------------------------------------------------------------
def test_resume_by_folder_reads_the_stored_config(tmp_path, monkeypatch, capsys):
    cfg = _tiny(tmp_path, "run", ("trainer.epochs", "3"), ("model.d_model", "12"))
    with killed_after_saves(monkeypatch, 1):
        train(cfg, progress=False)
    first = load_checkpoint(tmp_path / "run" / "checkpoints" / sorted(
        p.name for p in (tmp_path / "run" / "checkpoints").iterdir())[-1])[1]["train_seconds"]
    out = str(tmp_path / "run")
    # a flag that changes what the run computes is named, with the stored value
    rc, _, err = _cli(capsys, "train", "--trainer.out", out, "--resume", "--trainer.lr", "0.5", "--no-progress")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "--trainer.lr 0.5 conflicts with the stored run (trainer.lr = 0.01)" in err
    rc, _, err = _cli(capsys, "train", "--trainer.out", out, "--resume", "--preset", "digits-s4", "--no-progress")
    assert rc == 2 and "--preset digits-s4 (sets model.layer.kind) conflicts" in err and "'s4d'" in err
    # only the folder (and where-it-runs flags): the stored config (H = 12, 3 epochs) is used
    rc, text, err = _cli(capsys, "train", "--trainer.out", out, "--resume", "--trainer.device", "cpu",
                         "--trainer.keep_last", "3", "--no-progress")
    assert rc == 0, err
    assert "S4D(d_model=12, " in text and "for 3 epochs" in text and "resuming the run in" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["train_seconds"] >= first + summary["train_seconds_this_run"] - 1e-6
    assert summary["train_seconds"] > summary["train_seconds_this_run"]
    # a folder without a run: nothing to read the config from
    rc, _, err = _cli(capsys, "train", "--trainer.out", str(tmp_path / "none"), "--resume", "--no-progress")
    assert rc == 2 and "holds no run to resume" in err


def test_resume_in_python_names_the_conflicting_keys(tmp_path):
    cfg = _tiny(tmp_path, "run", ("trainer.epochs", "1"))
    train(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"different config \(model\.d_model = 8 there, 16 here; "
                                          r"trainer\.lr = 0\.01 there, 0\.5 here\)"):
        train(cfg.override("trainer.lr", "0.5").override("model.d_model", "16"), resume=True, progress=False)
    # where the run writes or runs may change
    moved = cfg.override("trainer.keep_last", "4").override("trainer.checkpoint_every", "7")
    assert train(moved, resume=True, progress=False)["epochs"] == 1


def test_presets_write_to_runs_preset():
    from statespaces.train.config import PRESETS

    for name in PRESETS:
        assert build_config(name).trainer.out == f"runs/{name}"
    assert build_config("digits-s4", overrides=[("trainer.out", "elsewhere")]).trainer.out == "elsewhere"
    assert build_config().trainer.out == "runs/digits"


def test_runs_without_preset_write_to_runs_data(tmp_path):
    from statespaces.train.config import data_out

    assert data_out("digits") == "runs/digits"
    assert data_out("ucr:GunPoint") == "runs/ucr-GunPoint"
    assert data_out("/data/ucr/Wine/Wine_TRAIN.tsv") == "runs/Wine"
    assert data_out("tokens:/x/y/my tokens.npz") == "runs/tokens-my-tokens"
    assert data_out(r"C:\ucr\GunPoint") in ("runs/GunPoint", "runs/C-ucr-GunPoint")   # no ':' in a folder name
    assert data_out("ucr:../Wine") == "runs/ucr-Wine"
    assert build_config(overrides=[("data.name", "ucr:GunPoint")]).trainer.out == "runs/ucr-GunPoint"
    # named anywhere, the folder is the one named
    assert build_config(overrides=[("data.name", "ucr:GunPoint"), ("trainer.out", "x")]).trainer.out == "x"
    assert build_config("ucr", overrides=[("data.name", "ucr:GunPoint")]).trainer.out == "runs/ucr"
    toml = tmp_path / "run.toml"
    toml.write_text('[data]\nname = "ucr:GunPoint"\n')
    assert build_config(config_file=str(toml)).trainer.out == "runs/ucr-GunPoint"
    toml.write_text('[data]\nname = "ucr:GunPoint"\n[trainer]\nout = "mine"\n')
    assert build_config(config_file=str(toml)).trainer.out == "mine"


def test_resume_points_at_the_earlier_default_folder(tmp_path, monkeypatch, capsys):
    """A run on other data started before runs/<data> existed sits in runs/digits: --resume says so."""
    from statespaces.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "digits").mkdir(parents=True)
    cfg = build_config(overrides=[("data.name", "ucr:GunPoint"), ("trainer.out", "runs/digits")])
    (tmp_path / "runs" / "digits" / "run.json").write_text(json.dumps({"config": cfg.to_dict()}))
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data.name", "ucr:GunPoint", "--resume"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "runs/ucr-GunPoint holds no run, but runs/digits holds a run on ucr:GunPoint" in err
    assert "--trainer.out runs/digits" in err


# --- item 8: CLI errors and progress ---------------------------------------------------------------
def test_every_command_reports_user_errors_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    cases = [
        (["evaluate", str(tmp_path / "missing")], "no checkpoint at"),
        (["evaluate"], "required: checkpoint"),
        (["evaluate", str(tmp_path), "--data.name"], "expected one argument"),
        (["analyze", str(tmp_path / "missing")], "no checkpoint at"),
        (["analyze", str(tmp_path / "file")], "is a file"),
        (["presets", "extra"], "unrecognized arguments: extra"),
        (["reproduce", "Z9", "--out", str(tmp_path / "r"), "--table", str(tmp_path / "t.md")], "unknown claim ids"),
        (["train", "--epochs", "3"], "overrides look like --trainer.epochs 5"),
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["frobnicate"], "invalid choice"),
        ([], "required: command"),
    ]
    for argv, match in cases:
        rc, out, err = _cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and match in lines[0], (argv, err)
        assert lines[0].startswith("statespaces") and "usage:" not in err and "Traceback" not in err


def test_interrupt_is_one_line(tmp_path, capsys, monkeypatch):
    import statespaces.train.loop as loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    rc, _, err = _cli(capsys, "train", "--trainer.out", str(tmp_path / "r"))
    assert rc == 130 and err.strip() == "statespaces train: interrupted (continue with the same command and --resume)"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_plain_lines_when_not_a_terminal():
    log = io.StringIO()
    p = Progress(5, 0, "epoch 1/2", stream=log, interval=0)
    assert p.bar is None
    for _ in range(5):
        p.update(1, loss=0.5)
    p.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 4           # not after the last step (the epoch line says it)
    assert lines[0].startswith("epoch 1/2  step 1/5  loss 0.500  ") and lines[0].endswith("steps/s")
    quiet = io.StringIO()
    p = Progress(5, 0, "epoch 1/2", stream=quiet, interval=3600)
    p.update(1)
    assert quiet.getvalue() == ""
    term = _Terminal()
    p = Progress(5, 2, "epoch 1/2", stream=term)
    assert p.bar is not None and p.bar.n == 2
    p.update(1, loss=0.25)
    p.close()
    assert "\r" in term.getvalue()                                    # a redrawn bar on a terminal
    assert Progress(5, 0, "x", enabled=False, stream=term).bar is None


def test_training_logs_plain_progress_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STATESPACES_PROGRESS_SECONDS", "0")
    train(_tiny(tmp_path, "run", ("trainer.epochs", "1")), progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "epoch 1/1  step 1/11  loss " in err


def test_time_channel_is_a_shared_clock_zero_on_padding(tmp_path):
    from statespaces.data.base import SequenceData, TokenDataset, with_time_channel

    (tmp_path / "V_TRAIN.tsv").write_text("1\t1\t2\t3\tNaN\n2\t4\t8\tNaN\tNaN\n1\t0\t1\t0\t1\n2\t3\t1\t2\t0\n")
    (tmp_path / "V_TEST.tsv").write_text("1\t1\t3\tNaN\tNaN\n2\t2\t2\t2\t9\n")
    cfg = lambda *o: build_config(overrides=[("data.name", str(tmp_path / "V_TRAIN.tsv")), *o]).validated()  # noqa
    plain, timed = load_data(cfg()), load_data(cfg(("data.time_channel", "true")))
    assert timed.d_input == plain.d_input + 1 and timed.info["time_channel"] is True
    for split in ("train", "test"):
        (x, y, n), (x0, y0, n0) = getattr(timed, split).tensors, getattr(plain, split).tensors
        assert torch.equal(y, y0) and torch.equal(n, n0) and torch.equal(x[..., 1:], x0)
        L = x.shape[1]
        for i, length in enumerate(n.tolist()):    # t / (L - 1) on the valid steps, 0 on padding
            want = [t / (L - 1) if t < length else 0.0 for t in range(L)]
            assert x[i, :, 0].tolist() == pytest.approx(want, abs=1e-7)
    both = cfg(("data.time_channel", "true"), ("data.augment", '{"roll": 1, "scale": 0.1}'))   # the clock stays
    from statespaces.train.loop import _augmentation
    aug = _augmentation(both, load_data(both))
    assert aug.roll == 1 and aug.scale == 0.1 and aug.keep_channels == 1
    assert _augmentation(cfg(("data.augment", '{"roll": 1}')), plain).keep_channels == 0
    tokens = SequenceData(TokenDataset(torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1]), vocab_size=3),
                          TokenDataset(torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1]), vocab_size=3), 2, 2, 3, "tok")
    with pytest.raises(ValueError, match="time_channel: dataset 'tok' is made of tokens"):
        with_time_channel(tokens)


def test_time_channel_run_evaluates_on_the_same_inputs(tmp_path):
    path = _write_ucr(tmp_path / "w", ".tsv")
    cfg = _tiny(tmp_path, "run", ("data.name", str(path)), ("data.time_channel", "true"), ("trainer.val_fraction", "0"))
    train(cfg, progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    again = evaluate_checkpoint(tmp_path / "run" / "best")
    assert again["acc"] == pytest.approx(summary["test_acc"])
    assert load_checkpoint(tmp_path / "run" / "best")[0]["model.encoder.weight"].shape[-1] == 2   # time + the series


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_schedule_sets_the_learning_rate_after_warmup(tmp_path, schedule):
    cfg = _tiny(tmp_path, "run", ("trainer.schedule", schedule), ("trainer.warmup_steps", "2"),
                ("trainer.val_fraction", "0"), ("trainer.batch_size", "512"), ("trainer.epochs", "4"))
    train(cfg, progress=False)
    meta = load_checkpoint(tmp_path / "run" / "best")[1]
    last = meta["scheduler"]["_last_lr"]                     # per group: SSM parameters (ssm_lr), the rest (lr)
    want = [0.001, 0.01] if schedule == "constant" else [0.0]
    assert sorted(set(last)) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ConfigError, match="trainer.schedule"):
        _tiny(tmp_path, "x", ("trainer.schedule", "linear")).validated()


# --- audit: the CLI's data names, devices, resume and messages ----------------------------------------
SMALL = ("--model.d_model", "8", "--model.n_layers", "1", "--model.layer.d_state", "4", "--model.layer.init", "lin",
         "--trainer.epochs", "1", "--trainer.batch_size", "8", "--trainer.tensorboard", "off", "--no-progress")


def test_a_ucr_name_found_in_the_working_folder_is_stored_resolved(tmp_path, monkeypatch, capsys):
    """``ucr:Waves`` read from ./Waves is stored as that file's absolute path, so ``evaluate`` from another
    folder reads the same data (it stored the bare name, which elsewhere meant other files or none)."""
    local = _write_ucr(tmp_path / "work" / "Waves", ".tsv")
    monkeypatch.chdir(tmp_path / "work")
    rc, _, err = _cli(capsys, "train", "--data.name", "ucr:Waves", *SMALL, "--trainer.out", str(tmp_path / "run"))
    assert rc == 0, err
    assert load_checkpoint(tmp_path / "run" / "best")[1]["config"]["data"]["name"] == f"ucr:{local.resolve()}"
    monkeypatch.chdir(tmp_path)
    rc, out, err = _cli(capsys, "evaluate", str(tmp_path / "run"))
    assert rc == 0 and "(ucr:Waves, 16 test examples)" in out, err


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", f"cuda:{torch.cuda.device_count()}"])
def test_an_unavailable_device_is_one_line_naming_the_devices_here(tmp_path, capsys, device):
    from statespaces.train.run import available_devices

    if any(d.split(":")[0] == device for d in available_devices()):
        pytest.skip(f"{device} is available here")
    rc, _, err = _cli(capsys, "train", *SMALL, "--trainer.device", device, "--trainer.out", str(tmp_path / "run"))
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"trainer.device: got '{device}'" in lines[0] and "available here: auto, cpu" in lines[0]
    assert not (tmp_path / "run").exists()


def test_resume_accepts_the_command_that_started_the_run(tmp_path, monkeypatch, capsys):
    """The README's workflow: a preset, overrides (some undoing the preset's values), interrupted, then the
    same command with --resume continues the run; a flag that differs is still named, alone."""
    path = _write_ucr(tmp_path / "Waves", ".tsv")
    flags = [("data.name", str(path)), ("model.d_model", "8"), ("model.layer.d_state", "4"),
             ("trainer.epochs", "2"), ("trainer.min_steps", "0"), ("trainer.batch_size", "8"),
             ("trainer.tensorboard", "off"), ("trainer.out", str(tmp_path / "run"))]
    with killed_after_saves(monkeypatch, 1):
        train(build_config("ucr", overrides=flags), progress=False)
    cmd = ["train", "--preset", "ucr", *[a for k, v in flags for a in (f"--{k}", v)], "--no-progress", "--resume"]
    rc, _, err = _cli(capsys, *cmd, "--trainer.lr", "0.5")
    assert rc == 2 and "--trainer.lr 0.5 conflicts with the stored run (trainer.lr = 0.01)" in err
    assert "--preset" not in err and "data.name" not in err, err
    rc, _, err = _cli(capsys, "train", "--preset", "ucr", "--trainer.out", str(tmp_path / "run"), "--resume")
    assert rc == 2 and "--preset ucr (sets model.d_model) conflicts with the stored run (model.d_model = 8)" in err
    rc, _, err = _cli(capsys, *cmd)
    assert rc == 0, err
    assert "resumed at step 3 (epoch 2 of 2)" in err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 6


def test_evaluate_and_analyze_a_folder_without_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for command in ("evaluate", "analyze"):
        rc, _, err = _cli(capsys, command, str(tmp_path / "empty"))
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, err
        assert lines[0].endswith("empty holds no checkpoint (no best/, no checkpoints/, no meta.json): train it "
                                 "first or pass a checkpoint directory")


def test_resuming_a_finished_run_says_it_is_finished(tmp_path, capsys):
    train(_tiny(tmp_path, "run", ("trainer.epochs", "1")), progress=False)
    capsys.readouterr()
    rc, _, err = _cli(capsys, "train", "--trainer.out", str(tmp_path / "run"), "--resume", "--no-progress")
    assert rc == 0, err
    assert "the run already finished its 1 epoch (step " in err and "nothing left to train" in err
    assert "resumed at step" not in err and "epoch 2" not in err


@pytest.mark.parametrize("flag,value", [("data.augment", '{"roll": 1.0}'), ("trainer.mixup", "0.2")])
def test_token_datasets_refuse_series_augmentation_and_mixup(tmp_path, flag, value):
    """A token dataset hands out one-hot float items (L, V - 1), which passed for a float series: roll/scale/jitter
    and mixup ran on one-hot token ids (docs/data.md says token datasets refuse them)."""
    from statespaces.train.loop import _augmentation, _objective

    cfg = _tiny(tmp_path, "tok", ("data.name", "copying"), (flag, value))
    data = load_data(cfg)
    with pytest.raises(ConfigError, match="token ids"):
        _augmentation(cfg, data) if flag == "data.augment" else _objective(cfg, data)


def test_scoring_the_test_split_does_not_change_the_trained_model(tmp_path):
    """The evaluation loaders drew a seed from the global RNG, so with dropout (0.1, the default) a run scored on the
    test split each epoch trained another model than the same run with trainer.test_eval off (blind tuning)."""
    scored = train(_tiny(tmp_path, "scored", ("model.dropout", "0.1")), progress=False)
    blind = train(_tiny(tmp_path, "blind", ("model.dropout", "0.1"), ("trainer.test_eval", "off")), progress=False)
    assert scored["selected_val_acc"] == blind["selected_val_acc"]
    a, _ = load_checkpoint(sorted((tmp_path / "scored" / "checkpoints").iterdir())[-1])     # the last epoch's
    b, _ = load_checkpoint(sorted((tmp_path / "blind" / "checkpoints").iterdir())[-1])
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_a_run_resumed_from_an_epoch_checkpoint_records_the_same_metrics(tmp_path):
    """The epoch checkpoint stored the finished epoch's training sums as the next epoch's running sums, so a resumed
    run's epoch 2 reported the mean over epochs 1 and 2 (its weights were right)."""
    full = tmp_path / "full"
    train(_tiny(tmp_path, "full", ("model.dropout", "0.1"), ("trainer.keep_last", "5")), progress=False)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for later in sorted((cut / "checkpoints").iterdir())[1:]:
        shutil.rmtree(later)
    shutil.rmtree(cut / "best")
    (cut / "summary.json").unlink()
    (cut / "metrics.csv").unlink()
    cfg = _tiny(tmp_path, "cut", ("model.dropout", "0.1"), ("trainer.keep_last", "5"))
    train(cfg, resume=True, progress=False)
    rows = [(cut / "metrics.csv").read_text().splitlines(), (full / "metrics.csv").read_text().splitlines()]
    cols = rows[1][0].split(",")
    keep = [i for i, c in enumerate(cols) if c != "seconds"]
    a, b = ([[r.split(",")[i] for i in keep] for r in rs[1:]] for rs in rows)
    assert a == b


def test_resume_cleans_what_killed_saves_and_prunes_left(tmp_path):
    """A kill during a save left hidden .step-N.tmp<pid> / .best.old<pid> / .run.json.tmp<pid> copies forever, a kill
    during a prune a half-deleted step folder, and a kill between the last save and its prune one checkpoint over
    keep_last. A resume removes the temporaries and prunes."""
    train(_tiny(tmp_path, "run", ("trainer.keep_last", "2")), progress=False)
    cfg = _tiny(tmp_path, "run", ("trainer.keep_last", "1"))    # as if the last prune had not run
    out = tmp_path / "run"
    ckpts = sorted((out / "checkpoints").iterdir())
    assert len(ckpts) == 2
    leftovers = [out / "checkpoints" / ".step-000000022.tmp4242", out / ".best.old4242", out / ".best.tmp4242",
                 out / "checkpoints" / ".step-000000005.del4242"]
    for p in leftovers:
        shutil.copytree(ckpts[0], p)
    (out / ".run.json.tmp4242").write_text("{}")
    train(cfg, resume=True, progress=False)
    assert not any(p.exists() for p in leftovers) and not (out / ".run.json.tmp4242").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [ckpts[-1].name]


def test_a_full_disk_while_writing_tensors_is_one_clear_error(tmp_path, monkeypatch):
    """safetensors raises its own SafetensorError (not an OSError) on ENOSPC: the CLI printed a 20-line traceback."""
    from safetensors import SafetensorError

    from statespaces.train import checkpoint as ck

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(OSError, match=r"could not write the checkpoint .*No space left.*--resume"):
        ck.save_checkpoint(tmp_path / "c", {"w": torch.ones(2)}, {"step": 1})
    assert not any(p.name.startswith(".c.tmp") for p in tmp_path.iterdir())


def test_divergence_message_says_what_can_be_done(tmp_path):
    """At lr 1e3 the run diverges at step 1: the message pointed to a checkpoints folder that did not exist and to a
    learning-rate change that --resume refuses."""
    with pytest.raises(FloatingPointError, match="diverged before its first checkpoint") as e:
        train(_tiny(tmp_path, "div", ("trainer.lr", "1000"), ("trainer.ssm_lr", "1000")), progress=False)
    assert "Lower trainer.lr" in str(e.value) and "last good checkpoint is in" not in str(e.value)


def test_a_folder_in_use_by_another_training_process_is_refused(tmp_path):
    """Two runs started into one folder within seconds both trained there, interleaving checkpoints, best/ and the
    summary; a --resume beside a live run trained the same epochs twice. The folder's lock (flock) names the PID."""
    from conftest import run_folder_held

    from statespaces.train.run import RunExistsError

    pytest.importorskip("fcntl")
    with run_folder_held(tmp_path / "run") as holder:
        for resume in (False, True):
            with pytest.raises(RunExistsError, match=rf"is in use: another process \(PID {holder.pid}\)"):
                train(_tiny(tmp_path), resume=resume, progress=False)
    assert train(_tiny(tmp_path, "run", ("trainer.epochs", "1")), progress=False)["epochs"] == 1   # lock released


def test_a_failed_run_releases_its_folder_in_this_process(tmp_path, monkeypatch):
    import statespaces.train.loop as loop

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loop, "load_data", boom)
    with pytest.raises(RuntimeError, match="disk on fire") as failed:   # its traceback keeps the frames alive
        train(_tiny(tmp_path), progress=False)
    monkeypatch.undo()
    assert train(_tiny(tmp_path, "run", ("trainer.epochs", "1")), progress=False)["epochs"] == 1
    assert failed.traceback is not None


def test_metrics_csv_holds_every_finished_epoch_of_a_killed_run(tmp_path, monkeypatch):
    """metrics.csv was written at the end only: a run killed (or still running) had none."""
    import csv

    import statespaces.train.loop as loop

    real, calls = loop.evaluate, []

    def dies_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) > 2:                        # epoch 1 evaluates validation and test, then epoch 2 dies
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "evaluate", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(tmp_path), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1"] and not (tmp_path / "run" / "summary.json").exists()
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]
