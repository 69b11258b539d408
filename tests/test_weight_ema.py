"""The moving average of the weights (trainer.ema): the average against a hand-written one through fit,
counters copied, the trainer evaluating and saving the averaged weights, and resume restoring both the
trained and the averaged weights exactly."""
import json
import math

import pytest
import torch
from conftest import killed_after_saves
from test_engine import _setup
from test_training import _cfg
from torch import nn

from statespaces.train import train
from statespaces.train.averaging import WeightEMA, ema_factor
from statespaces.train.checkpoint import load_checkpoint
from statespaces.train.engine import fit


def test_factor_warms_up_then_holds():
    assert ema_factor(0.99, 0) == pytest.approx(0.1) and ema_factor(0.99, 8) == pytest.approx(0.5)
    assert ema_factor(0.99, 10_000) == 0.99
    assert all(ema_factor(0.999, n) <= ema_factor(0.999, n + 1) for n in range(2000))


def test_fit_with_the_average_equals_a_hand_written_average():
    model, loader, opt, sched = _setup(epoch_seeded=True)
    ema = WeightEMA(model, 0.9)
    ref_model, ref_loader, ref_opt, ref_sched = _setup(epoch_seeded=True)
    fit(model, loader, opt, epochs=2, scheduler=sched, callbacks=[ema])
    avg, n = None, 0
    for _ in range(2):          # the same training by hand; the average kept beside it
        ref_loader.sampler.set_epoch(_)
        for x, y in ref_loader:
            loss = nn.functional.cross_entropy(ref_model(x), y)
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
            ref_sched.step()
            now = {k: v.detach().clone() for k, v in ref_model.state_dict().items()}
            if avg is None:
                avg = now
            else:
                b = min(0.9, (1 + n) / (10 + n))
                avg = {k: b * avg[k] + (1 - b) * now[k] for k in avg}
            n += 1
    assert ema.updates == n == 6
    got = ema.module.state_dict()
    for k in avg:
        torch.testing.assert_close(got[k], avg[k], rtol=1e-6, atol=1e-7, msg=k)
    for (k, p), q in zip(model.named_parameters(), ref_model.parameters()):   # training itself unchanged
        assert torch.equal(p, q), k


def test_counters_are_copied_not_averaged():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = WeightEMA(model, 0.5)
    for _ in range(3):
        model(torch.randn(8, 3))
        ema.update()
    bn = ema.module[1]
    assert bn.num_batches_tracked.dtype == torch.int64 and int(bn.num_batches_tracked) == 3
    assert not torch.equal(bn.running_mean, model[1].running_mean)     # a float buffer: averaged


def test_a_restored_average_continues_as_the_uninterrupted_one():
    """load_state_dict restores the weights and the update count (the warm-up of ema_factor depends on it): an
    average saved after 3 updates and restored into a fresh WeightEMA takes the same 4th update (fast twin of the
    trainer's resume test)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = WeightEMA(model, 0.9)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(0.1)
        ema.update()
    saved = {"module": {k: v.clone() for k, v in ema.state_dict()["module"].items()}, "updates": ema.updates}
    restored = WeightEMA(model, 0.9)
    restored.load_state_dict(saved)
    assert restored.updates == 3
    with torch.no_grad():
        model.weight.add_(0.1)
    ema.update()
    restored.update()
    for a, b in zip(ema.module.state_dict().values(), restored.module.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("decay", [0, 1, -0.5, math.nan, True])
def test_bad_decay_is_refused(decay):
    with pytest.raises(ValueError, match="ema: decay="):
        WeightEMA(nn.Linear(2, 2), decay)


@pytest.mark.slow   # training runs
def test_trainer_saves_the_average_and_resumes_exactly(tmp_path, monkeypatch):
    full = train(_cfg(tmp_path, "a", ema="0.95"), progress=False)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["weights"] == "moving average (decay 0.95)" and summary["test_acc"] == full["test_acc"]
    tensors, meta = load_checkpoint(tmp_path / "a" / "best")
    model_keys = {k[6:] for k in tensors if k.startswith("model.")}
    assert model_keys == {k[6:] for k in tensors if k.startswith("train.")} and meta["ema_updates"] == meta["step"]
    differs = [k for k in model_keys if tensors[f"model.{k}"].is_floating_point()
               and not torch.equal(tensors[f"model.{k}"], tensors[f"train.{k}"])]
    assert differs                                    # best/ holds the average, not the trained weights
    from statespaces.train import evaluate_checkpoint
    from statespaces.train.evaluation import describe_selection
    assert evaluate_checkpoint(str(tmp_path / "a"))["acc"] == pytest.approx(full["test_acc"])
    said = describe_selection(meta, tmp_path / "a" / "best")
    assert said.endswith(f"; weights: the moving average (decay 0.95) over {meta['step']} steps"), said

    with killed_after_saves(monkeypatch, 3):
        train(_cfg(tmp_path, "b", ema="0.95", checkpoint_every=20), progress=False)
    resumed = train(_cfg(tmp_path, "b", ema="0.95", checkpoint_every=20), resume=True, progress=False)
    assert resumed["test_acc"] == full["test_acc"]
    last = lambda d: sorted((tmp_path / d / "checkpoints").iterdir())[-1]      # noqa: E731
    a, b = load_checkpoint(last("a"))[0], load_checkpoint(last("b"))[0]
    for k in a:
        if k.startswith(("model.", "train.")):
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)
