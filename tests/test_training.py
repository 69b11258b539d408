"""Parameter groups, blocks, classifier, training loop, checkpoints and resume, CLI."""
import json
import os

import pytest
import torch

from statespaces import S4D, ResidualBlock, SequenceClassifier, param_groups
from statespaces.data import load_digits_sequences
from statespaces.train import TrainConfig, load_checkpoint, save_checkpoint, train
from statespaces.train.cli import main


def test_param_groups_partition_every_parameter_once():
    model = SequenceClassifier(1, 10, d_model=8, n_layers=2, layer_kwargs=dict(d_state=4, init="lin"))
    groups = param_groups(model, lr=1e-2, weight_decay=0.1, ssm_lr=1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    by_name = {g["name"]: g for g in groups}
    assert by_name["ssm"]["lr"] == 1e-3 and by_name["ssm"]["weight_decay"] == 0.0
    assert by_name["decay"]["weight_decay"] == 0.1 and by_name["no_decay"]["weight_decay"] == 0.0
    layer = model.blocks[0].layer
    ssm = {id(p) for p in by_name["ssm"]["params"]}
    assert {id(layer.A_real), id(layer.A_imag), id(layer.B), id(layer.log_dt)} <= ssm
    assert id(layer.C) not in ssm and id(layer.D) not in ssm
    torch.optim.AdamW(groups)  # accepted by a real optimizer


def test_param_groups_bad_lr():
    with pytest.raises(ValueError, match="lr"):
        param_groups(S4D(2, 4), lr=0)


def test_residual_block_step_matches_forward():
    block = ResidualBlock(S4D(4, 8, init="inv", seed=0), dropout=0.0).eval()
    x = torch.randn(2, 12, 4)
    with torch.no_grad():
        y = block(x)
        st = block.layer.initial_state(2)
        ys = []
        for t in range(12):
            yt, st = block.step(x[:, t], st)
            ys.append(yt)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-5, rtol=1e-5)


def test_residual_block_rejects_non_ssm():
    with pytest.raises(TypeError, match="SSMLayer"):
        ResidualBlock(torch.nn.Linear(3, 3))


def test_classifier_shapes_and_lengths():
    model = SequenceClassifier(2, 5, d_model=8, n_layers=1, layer_kwargs=dict(d_state=4, init="lin")).eval()
    x = torch.randn(3, 10, 2)
    assert model(x).shape == (3, 5)
    lengths = torch.tensor([10, 4, 7])
    out = model(x, lengths)
    # causal layers: padding after the length cannot change the prediction
    x2 = x.clone()
    x2[1, 4:] = 100.0
    torch.testing.assert_close(model(x2, lengths), out)
    with pytest.raises(ValueError, match="lengths"):
        model(x, torch.tensor([0, 4, 7]))


def test_digits_data():
    data = load_digits_sequences()
    x, y = data.train.tensors
    assert x.shape[1:] == (64, 1) and x.dtype == torch.float32
    assert len(data.train) + len(data.test) == 1797
    assert set(y.tolist()) == set(range(10))
    p = load_digits_sequences(permute=True)
    assert not torch.equal(p.train.tensors[0], x)


def test_checkpoint_atomic_and_safe(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"a": torch.ones(2), "n": 3}, path)
    assert load_checkpoint(path)["n"] == 3
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]  # no temp files left
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a valid"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, path)
    with pytest.raises(ValueError):
        load_checkpoint(path)


def _cfg(tmp_path, **kw):
    base = dict(d_model=32, n_layers=2, d_state=8, init="lin", epochs=3, batch_size=16, out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


def test_resume_mid_run_equals_uninterrupted(tmp_path, monkeypatch):
    import statespaces.train.loop as loop

    full = train(_cfg(tmp_path, out=str(tmp_path / "a")), progress=False)
    assert full["test_acc"] > 0.3  # 3 short epochs of a tiny model already learn well above chance (0.1)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["test_acc"] == full["test_acc"]
    calls = {"n": 0}
    real_save = loop.save_checkpoint

    def crash_after_two(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill after epoch 2")

    monkeypatch.setattr(loop, "save_checkpoint", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, out=str(tmp_path / "b")), progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = train(_cfg(tmp_path, out=str(tmp_path / "b")), resume=True, progress=False)
    assert resumed["test_acc"] == full["test_acc"]
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_resume_with_other_config_refuses(tmp_path):
    train(_cfg(tmp_path, epochs=1), progress=False)
    with pytest.raises(ValueError, match="different config"):
        train(_cfg(tmp_path, epochs=1, lr=0.5), resume=True, progress=False)


def test_unknown_task():
    with pytest.raises(ValueError, match="valid tasks"):
        train(TrainConfig(task="imagenet"), progress=False)


def test_cli_runs(tmp_path, capsys):
    rc = main(["train", "--epochs", "1", "--d-model", "8", "--n-layers", "1", "--d-state", "4",
               "--init", "lin", "--out", str(tmp_path / "cli"), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "epoch   1/1" in out and "test accuracy" in out
    assert (tmp_path / "cli" / "last.pt").exists()
