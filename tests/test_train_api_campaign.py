"""Training and data API defects found by a campaign using the Python API (2026-12-07): messages that did not
name the mistake, a resume that made the summary contradict itself, an R^2 printed as a percentage."""
import warnings

import pytest
import torch

from statespaces.data import get_dataset
from statespaces.data import ucr
from statespaces.train import build_config, train
from statespaces.train.config import ConfigError
from statespaces.train.loop import load_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(tmp_path, *extra, out="run"):
    return build_config(overrides=[
        ("model.d_model", "8"), ("model.n_layers", "1"), ("model.layer.d_state", "4"), ("model.layer.init", "lin"),
        ("trainer.epochs", "1"), ("trainer.batch_size", "64"), ("trainer.out", str(tmp_path / out)),
        ("trainer.tensorboard", "off"), *extra])


def test_data_kwargs_mistakes_are_named():
    """data.kwargs.seed and .permute failed with "got multiple values for keyword argument", a string value with
    Python's "'<' not supported between 'float' and 'str'", both inside train()."""
    for kwargs, err, match in (('{"seed": 5}', ConfigError, "data.kwargs.seed: the data's seed is trainer.seed"),
                               ('{"permute": true}', TypeError, "dataset 'digits' sets 'permute' itself"),
                               ('{"test_fraction": "0.3"}', ConfigError, r"data.kwargs .*test_fraction must be a number")):
        with pytest.raises(err, match=match):
            load_data(build_config(overrides=[("data.kwargs", kwargs)]))
    with pytest.raises(TypeError, match="data.name chooses the order"):
        get_dataset("pdigits", permute=False)
    with pytest.raises(ValueError, match="leaves fewer than 10 images"):
        get_dataset("digits", test_fraction=0.001)


def test_a_regression_epoch_line_prints_r2_as_a_number(tmp_path, capsys):
    """The epoch line printed R^2 as a percentage ("R2 -322.6%") while the summary printed -0.8862."""
    cfg = _tiny(tmp_path, ("data.name", "adding"),
                ("data.kwargs", '{"target": "regression", "n_train": 64, "n_test": 32, "length": 12}'),
                ("trainer.val_fraction", "0"))
    train(cfg, progress=False)
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch"))
    assert "%" not in line and ("R2" in line or "R^2" in line), line


def test_test_eval_is_not_switched_on_resume(tmp_path):
    """Switched on resume, a run held test figures for some epochs under test_eval = "off" (summary and metrics
    contradicted each other); it is a setting of the run, refused as a conflict like the others."""
    train(_tiny(tmp_path, ("trainer.epochs", "2")), progress=False)
    with pytest.raises(ConfigError, match="test_eval"):
        train(_tiny(tmp_path, ("trainer.epochs", "2"), ("trainer.test_eval", "off")), resume=True, progress=False)


def test_a_warmup_longer_than_the_run_warns(tmp_path):
    with pytest.warns(UserWarning, match=r"warmup_steps = 1000000 is not shorter than the whole run"):
        train(_tiny(tmp_path, ("trainer.warmup_steps", "1000000"), out="w"), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train(_tiny(tmp_path, ("trainer.warmup_steps", "2"), out="w2"), progress=False)


def test_dropping_the_lengths_of_a_variable_length_problem_warns(tmp_path):
    folder = tmp_path / "Var"
    folder.mkdir()
    for split in ("TRAIN", "TEST"):
        (folder / f"Var_{split}.tsv").write_text("1\t0.1\t0.5\t0.3\n2\t0.4\t0.2\n1\t0.3\t0.6\t0.1\t0.2\n2\t1\t2\n")
    with pytest.warns(UserWarning, match="return_lengths=False on series of different lengths"):
        d = ucr.load_ucr(folder / "Var_TRAIN.tsv", return_lengths=False)
    assert len(d.train.tensors) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert len(ucr.load_ucr(folder / "Var_TRAIN.tsv").train.tensors) == 3


# ---- second Python-API campaign (2026-12-07, afternoon): fit/evaluate on a user's own tensors ----

def _pairs(task):
    from statespaces.train.tasks import get_task

    return get_task(task)


def test_regression_targets_of_shape_n_by_1_are_one_target_per_example():
    """y (B, 1) against predictions (B,) broadcast to a (B, B) error: the loss and R^2 were silently wrong (MSE
    7.9 where the true MSE was 0.42)."""
    task = _pairs("regression")
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(16, 1, generator=g), torch.randn(16, generator=g)
    true = float(((out[:, 0] - y) ** 2).mean())
    assert float(task.loss(out, y[:, None])) == pytest.approx(true)
    assert task.hits(out, y[:, None]) == pytest.approx(true * 16)
    with pytest.raises(ValueError, match=r"one output per example, \(B, 1\); got \(16, 4\)"):
        task.loss(torch.randn(16, 4), y)       # the other three outputs were ignored
    with pytest.raises(ValueError, match=r"targets must be \(B,\) or \(B, 1\)"):
        task.loss(out, torch.randn(16, 2))
    with pytest.raises(ValueError, match="regression targets must be floats"):
        task.loss(out, torch.ones(16, dtype=torch.int64))


def test_classification_labels_are_checked_in_fit_and_evaluate():
    """Raw torch errors: "Target 7 is out of bounds.", "expected target dtype to be Long or Byte, but got Float"."""
    task = _pairs("classification")
    logits = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\) for a model with 3 outputs"):
        task.loss(logits, torch.tensor([0, 1, 7, 2]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        task.train_loss(logits, torch.tensor([0, -1, 1, 2]))
    for loss in (task.loss, task.train_loss):     # -100, cross_entropy's default ignore_index, was skipped silently
        with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
            loss(logits, torch.tensor([0, -100, 1, 2]))
    with pytest.raises(ValueError, match=r"integer class indices .* got dtype torch.float32 \(float targets: "
                                         r"task='regression'\)"):
        task.loss(logits, torch.tensor([0.0, 1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"logits must be \(B, C\) and the labels \(B,\)"):
        task.loss(logits, torch.tensor([[0], [1], [1], [2]]))
    assert float(task.loss(logits, torch.tensor([0, 1, 1, 2], dtype=torch.int32))) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1, 2]))))


def test_evaluate_refuses_an_empty_loader():
    """It returned {'loss': 0.0, 'acc': 0.0}, a perfect loss for no data (fit refused the same loader)."""
    from statespaces.train.engine import evaluate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="evaluate: the loader yields no example"):
        evaluate(model, [])


def test_resume_into_an_empty_folder_says_it_starts_a_new_run(tmp_path, capsys):
    """train(cfg, resume=True) with a mistyped trainer.out started from scratch without a word."""
    train(_tiny(tmp_path), resume=True, progress=False)
    assert "holds no run yet; starting a new one" in capsys.readouterr().err
    train(_tiny(tmp_path), resume=True, progress=False)
    assert "holds no run yet" not in capsys.readouterr().err


def test_a_refused_folder_names_the_python_spelling_too(tmp_path):
    from statespaces.train.run import RunExistsError

    train(_tiny(tmp_path), progress=False)
    with pytest.raises(RunExistsError, match=r"--resume \(Python: train\(cfg, resume=True\)\)"):
        train(_tiny(tmp_path), progress=False)
