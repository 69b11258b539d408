"""Defects a new-user campaign found in the command line's subcommands (2026-12-07), each pinned by a test that
fails without its fix (the run-folder lock is in tests/test_train_ux.py)."""
import shutil

import numpy as np
import pytest
from conftest import cli_run, trained_token_lm

from statespaces.train import build_config, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny language model trained on a token file (6 test sequences), and that file."""
    run, path, _ = trained_token_lm(tmp_path_factory.mktemp("cli_campaign"), n=48, n_test=6)
    return run, path


def test_export_takes_moved_data_and_names_an_unwritable_path(lm_run, tmp_path, capsys):
    run, path = lm_run
    moved = tmp_path / "moved.npz"
    shutil.copy(path, moved)
    path.rename(path.with_suffix(".away"))
    try:
        rc, _, err = cli_run(capsys, "export", str(run), str(tmp_path / "a.pt2"))
        assert rc == 2 and "--data.name NEW_PATH" in err and "export" in err
        rc, out, _ = cli_run(capsys, "export", str(run), str(tmp_path / "a.pt2"), "--data.name", f"tokens:{moved}")
        assert rc == 0 and "max |difference|" in out
    finally:
        path.with_suffix(".away").rename(path)
    rc, _, err = cli_run(capsys, "export", str(run), "/proc/x.pt2")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "not writable" in err, err


def test_generate_into_a_folder_and_its_repeats_are_said(lm_run, tmp_path, capsys):
    run, _ = lm_run
    folder = tmp_path / "gen"
    folder.mkdir()
    rc, out, _ = cli_run(capsys, "generate", str(run), "--out", str(folder), "--n", "8", "--steps", "4",
                         "--prompt", "4")
    assert rc == 0 and (folder / "sample_0.npy").is_file() and (folder / "sample_0.json").is_file()
    assert "6 distinct" in out and "cycles through the test split" in out       # 6 test sequences, 8 prompts
    (tmp_path / "afile").write_text("x")
    rc, _, err = cli_run(capsys, "generate", str(run), "--out", str(tmp_path / "afile" / "x"), "--steps", "2")
    assert rc == 2 and "is a file" in err


def test_analyze_names_dlinoss_and_a_file_in_the_way(tmp_path, capsys):
    train(build_config(overrides=[("model.layer", "dlinoss"), ("model.d_model", "8"), ("model.n_layers", "1"),
                                  ("model.layer.n_oscillators", "4"), ("trainer.epochs", "1"),
                                  ("trainer.batch_size", "256"), ("trainer.out", str(tmp_path / "d")),
                                  ("trainer.tensorboard", "off"), ("trainer.compile", "off")]), progress=False)
    rc, out, _ = cli_run(capsys, "analyze", str(tmp_path / "d"), "--no-plots")
    assert rc == 0 and "(dlinoss" in out and "(linoss" not in out
    (tmp_path / "afile").write_text("x")
    rc, _, err = cli_run(capsys, "analyze", str(tmp_path / "d"), str(tmp_path / "afile"), "--no-plots")
    assert rc == 2 and "is a file; give a folder" in err


def test_evaluate_refuses_data_of_another_task(lm_run, capsys):
    run, _ = lm_run
    rc, _, err = cli_run(capsys, "evaluate", str(run), "--data.name", "digits")
    assert rc == 2 and "task 'classification'" in err and "task 'lm'" in err and "scored anyway" not in err


def test_flags_are_not_abbreviated_and_errors_name_the_subcommand(capsys):
    rc, _, err = cli_run(capsys, "evaluate", "somewhere", "--data", "digits")
    assert rc == 2 and "unrecognized arguments: --data digits (see statespaces evaluate -h)" in err
    rc, _, err = cli_run(capsys, "train", "--resum")
    assert rc == 2 and "unexpected argument '--resum'" in err


def test_reproduce_lists_its_claims(capsys):
    from statespaces.reproduce import CLAIMS

    rc, out, _ = cli_run(capsys, "reproduce", "--list")
    assert rc == 0 and len(out.strip().splitlines()) == len(CLAIMS) and out.startswith("A1 ")


def test_missing_optional_packages_are_named_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """A packaging campaign: tensorboard 'on' without the package failed after the banner, run.json and the lock;
    analyze without matplotlib said only "No module named 'matplotlib'" and left an empty folder."""
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)       # import fails as if not installed
    rc, out, err = cli_run(capsys, "train", "--trainer.tensorboard", "on", "--trainer.out", str(tmp_path / "tb"))
    assert rc == 2 and "pip install tensorboard" in err and "training" not in out and not (tmp_path / "tb").exists()
    train(build_config(overrides=[("model.d_model", "8"), ("model.n_layers", "1"), ("trainer.epochs", "1"),
                                  ("trainer.batch_size", "256"), ("trainer.out", str(tmp_path / "r")),
                                  ("trainer.tensorboard", "off")]), progress=False)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    rc, _, err = cli_run(capsys, "analyze", str(tmp_path / "r"))
    assert rc == 2 and "pip install matplotlib" in err and "--no-plots" in err
    assert not (tmp_path / "r" / "analysis").exists()                  # no empty folder left behind


def test_the_package_version_is_the_one_in_pyproject():
    from pathlib import Path

    import statespaces

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'version = "{statespaces.__version__}"' in text


def test_midi_without_music21_names_what_needs_it(monkeypatch):
    import sys

    from statespaces.data.chorales import REST, grid_to_score

    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(ImportError, match="writing MIDI needs music21 .*pip install music21"):
        grid_to_score(np.full((4, 4), REST))
