"""Promises of the training engine, data preprocessing, serialization and the reproduction registry that a third
mutation audit found untested (each test here fails on the mutant the audit planted; the audit's scripts showed
each mutant changing behaviour): the epoch loss per example, autocast really on, evaluate restoring the mode,
per-series normalisation with lengths, training-split statistics, strict loading, reproduce's exit status and
crashing claims, the recorded training loss and accuracy, resumable overrides, TensorBoard's purge step."""
import csv
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from statespaces.train.engine import evaluate, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_epoch_loss_is_the_mean_over_examples_not_batches():
    torch.manual_seed(0)
    m = nn.Linear(2, 3)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])
    state = fit(m, [(x[:4], y[:4]), (x[4:], y[4:])], opt, epochs=1)            # batches of 4 and 1
    assert state.epoch_losses[0] == pytest.approx(nn.functional.cross_entropy(m(x), y).item(), rel=1e-6)


def test_amp_runs_the_forward_in_bfloat16():
    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.seen = nn.Linear(2, 3), None

        def forward(self, x, lengths=None):
            out = self.lin(x)
            self.seen = out.dtype
            return out

    m = Probe()
    fit(m, [(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]))], torch.optim.SGD(m.parameters(), lr=0.1), amp=True)
    assert m.seen == torch.bfloat16
    fit(m, [(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]))], torch.optim.SGD(m.parameters(), lr=0.1))
    assert m.seen == torch.float32


def test_evaluate_restores_the_models_mode():
    m = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5))
    loader = DataLoader(TensorDataset(torch.randn(4, 2), torch.tensor([0, 1, 2, 0])), batch_size=2)
    for mode in (False, True):
        m.train(mode)
        evaluate(m, loader)
        assert m.training is mode


def test_normalize_series_uses_each_series_valid_steps_only():
    """Per-series z-normalisation (``data.normalize = "series"``) of a padded series: mean 0 and (population)
    std 1 over its valid steps, padding left at 0."""
    from statespaces.data.base import normalize_series
    from statespaces.data.digits import load_digits_sequences

    data = load_digits_sequences()
    x = torch.randn(2, 64, 1, generator=torch.Generator().manual_seed(0)) * 2 + 3
    lengths = torch.tensor([40, 64])
    ds = TensorDataset(x, torch.tensor([0, 1]), lengths)
    z = normalize_series(dataclasses.replace(data, train=ds, test=ds)).train.tensors[0]
    for b, n in enumerate(lengths.tolist()):
        valid = z[b, :n].double()
        torch.testing.assert_close(valid.mean(0), torch.zeros(1, dtype=torch.float64), atol=1e-6, rtol=0)
        torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(1, dtype=torch.float64), atol=1e-5, rtol=0)
        assert float(z[b, n:].abs().sum()) == 0.0


def test_digits_are_standardised_with_training_statistics_only():
    from statespaces.data.digits import load_digits_sequences

    x = load_digits_sequences().train.tensors[0].double()
    assert abs(float(x.mean())) < 1e-6 and abs(float(x.std(unbiased=False)) - 1) < 1e-6


def test_fashion_mnist_float_path_uses_training_statistics():
    from statespaces.data.fashion_mnist import _standardize

    xtr, xte = np.linspace(0, 255, 100).reshape(4, 25), np.full((2, 25), 230.0)     # float pixels in [0, 255]
    a, b, mean, std = _standardize(xtr, xte)
    assert abs(float(a.mean())) < 1e-6 and abs(float(a.std()) - 1) < 1e-6
    scaled = xtr / 255
    assert mean == pytest.approx(scaled.mean()) and std == pytest.approx(scaled.std())
    np.testing.assert_allclose(b, (xte / 255 - scaled.mean()) / scaled.std(), rtol=1e-5)


def test_from_pretrained_refuses_a_file_with_a_missing_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    from statespaces.layers import S4D

    path = S4D(4, 4, seed=0).save_pretrained(tmp_path)
    weights = next(p for p in path.iterdir() if p.suffix == ".safetensors")
    tensors = load_file(weights)
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, weights)
    with pytest.raises(Exception, match="Missing key"):
        S4D.from_pretrained(path)


def test_reproduce_exits_nonzero_when_a_claim_fails(tmp_path, monkeypatch):
    import statespaces.reproduce as reproduce
    from statespaces.cli import main

    monkeypatch.setattr(reproduce, "run_claims", lambda *a, **k: [{"passed": False}])
    assert main(["reproduce", "A1", "--quick", "--out", str(tmp_path / "o"), "--table", str(tmp_path / "T.md")]) == 1


def test_a_crashing_claim_is_recorded_as_failed(tmp_path, monkeypatch):
    import statespaces.reproduce.registry as registry
    from statespaces.reproduce import CLAIMS, run_claims

    def broken(quick, out):
        raise RuntimeError("broken implementation")

    claim = dataclasses.replace(next(iter(CLAIMS.values())), id="Z1", fn=broken)
    monkeypatch.setitem(CLAIMS, "Z1", claim)
    if getattr(registry, "CLAIMS", CLAIMS) is not CLAIMS:
        monkeypatch.setitem(registry.CLAIMS, "Z1", claim)
    rows = run_claims(["Z1"], True, tmp_path / "o", tmp_path / "T.md", tmp_path / "f")
    assert rows[0]["passed"] is False
    line = next(row for row in (tmp_path / "T.md").read_text().splitlines() if "Z1" in row)
    assert "**no**" in line and "yes" not in line.split("|")[-3:]


def test_resumable_overrides_apply_on_resume():
    from statespaces.train.config import build_config, resume_config

    stored = build_config(overrides=[("trainer.keep_last", "2")]).to_dict()
    cfg = resume_config(stored, "runs/x", overrides=[("trainer.keep_last", "5"), ("trainer.tensorboard", "off")])
    assert cfg.trainer.keep_last == 5 and cfg.trainer.tensorboard == "off"


def test_tensorboard_resumes_with_a_purge_step(tmp_path, monkeypatch):
    """A resumed run's TensorBoard writer drops the events after the checkpoint (``purge_step``), so a curve does not
    show the killed run's tail twice."""
    tb = pytest.importorskip("torch.utils.tensorboard")
    from statespaces.train.monitor import tensorboard_writer

    seen = []

    class Writer:
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("purge_step"))

    monkeypatch.setattr(tb, "SummaryWriter", Writer)
    tensorboard_writer("on", tmp_path, 40)
    tensorboard_writer("on", tmp_path, 0)
    assert seen == [40, None]


def test_recorded_training_loss_and_accuracy_are_the_epochs_means(tmp_path):
    """metrics.csv's train_loss and train_acc are the means over the epoch's training examples of the loss and of
    the hits the engine saw (recomputed here on the saved model: at lr 1e-12 the model does not move)."""
    from statespaces.train import build_config, train
    from statespaces.train.loop import build_model, load_data

    cfg = build_config(overrides=[("model.d_model", "8"), ("model.n_layers", "1"), ("model.layer.d_state", "4"),
                                  ("trainer.epochs", "1"), ("trainer.batch_size", "64"), ("trainer.lr", "1e-12"),
                                  ("trainer.ssm_lr", "1e-12"), ("model.dropout", "0"), ("trainer.val_fraction", "0"),
                                  ("trainer.out", str(tmp_path / "run")), ("trainer.tensorboard", "off")])
    torch.manual_seed(0)
    train(cfg, progress=False)
    row = next(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    data = load_data(cfg)
    from statespaces.train.evaluation import load_trained

    model = load_trained(tmp_path / "run" / "best")[0].eval()
    x, y = data.train.tensors[0], data.train.tensors[1]
    with torch.no_grad():
        out = model(x)
    assert float(row["train_loss"]) == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-4)
    assert float(row["train_acc"]) == pytest.approx(float((out.argmax(-1) == y).float().mean()), abs=1e-6)
