"""Parameter groups, blocks, classifier, training loop, checkpoints and resume, CLI."""
import csv
import json
import os
import sys

import pytest
import torch

from statespaces import S4D, ResidualBlock, SequenceClassifier, param_groups
from statespaces.data import load_digits_sequences
from statespaces.train import CorruptCheckpointError, build_config, load_checkpoint, save_checkpoint, train
from statespaces.train.checkpoint import pack_state, unpack_state
from statespaces.cli import main

from conftest import killed_after_saves


def test_param_groups_partition_every_parameter_once():
    model = SequenceClassifier(1, 10, d_model=8, n_layers=2, layer=dict(kind="s4d", d_state=4, init="lin"))
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


@pytest.mark.parametrize("kind", ["s4d", "s4", "linoss", "s5"])
def test_param_groups_put_C_with_the_global_settings_as_documented(kind):
    """Thesis §7.1: A, B, dt get their own lr and no weight decay; C trains like the linear layers
    (group "decay"), D without decay. The docstring says the same (it once listed C under no_decay)."""
    model = SequenceClassifier(1, 3, d_model=8, n_layers=1, layer=dict(kind=kind))
    groups = {g["name"]: {id(p) for p in g["params"]} for g in param_groups(model, weight_decay=0.1)}
    layer = model.blocks[0].layer
    assert id(layer.C) in groups["decay"] and id(layer.D) in groups["no_decay"]
    doc = {line.strip().split(":")[0]: line for line in param_groups.__doc__.split("* ")[1:]}
    assert "C" in doc['``"decay"``'] and ", C" not in doc['``"no_decay"``'] and "C," not in doc['``"no_decay"``']


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
    model = SequenceClassifier(2, 5, d_model=8, n_layers=1, layer=dict(kind="s4d", d_state=4, init="lin")).eval()
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


def test_checkpoint_roundtrip_atomic_and_checksummed(tmp_path):
    path = tmp_path / "ck"
    save_checkpoint(path, {"a": torch.ones(2)}, {"n": 3})
    tensors, meta = load_checkpoint(path)
    assert meta["n"] == 3 and torch.equal(tensors["a"], torch.ones(2))
    save_checkpoint(path, {"a": torch.zeros(2)}, {"n": 4})  # replacing is atomic too
    assert load_checkpoint(path)[1]["n"] == 4
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ck"]  # no temp dirs left
    data = (path / "tensors.safetensors").read_bytes()
    (path / "tensors.safetensors").write_bytes(data[: len(data) // 2])  # truncated on disk
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    import statespaces.train.checkpoint as ck

    path = tmp_path / "ck"
    save_checkpoint(path, {"a": torch.ones(2)}, {"n": 1})

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"a": torch.zeros(2)}, {"n": 2})
    assert load_checkpoint(path)[1]["n"] == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ck"]


def test_pickle_is_never_loaded(tmp_path):
    """A planted malicious pickle in place of the tensor file is refused, never executed."""
    path = tmp_path / "ck"
    save_checkpoint(path, {"a": torch.ones(2)}, {"n": 1})

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"x": Evil()}, path / "tensors.safetensors")
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_pack_unpack_optimizer_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors = {}
    packed = pack_state("optim", opt.state_dict(), tensors)
    json.dumps(packed)
    restored = unpack_state(json.loads(json.dumps(packed)), tensors)
    opt2 = torch.optim.AdamW(model.parameters())
    opt2.load_state_dict(restored)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def _cfg(tmp_path, out="run", **trainer):
    cfg = build_config(overrides=[("model.d_model", "32"), ("model.n_layers", "2"), ("model.layer.d_state", "8"),
                                  ("model.layer.init", "lin"), ("trainer.epochs", "3"), ("trainer.batch_size", "16"),
                                  ("trainer.out", str(tmp_path / out))])
    for k, v in trainer.items():
        cfg = cfg.override(f"trainer.{k}", v)
    return cfg


def _weights(path):
    return {k: v for k, v in load_checkpoint(path)[0].items() if k.startswith("model.")}


@pytest.mark.slow   # fast tier: a training run / build / reproduction
def test_resume_mid_run_equals_uninterrupted(tmp_path, monkeypatch):
    full = train(_cfg(tmp_path, "a"), progress=False)
    assert full["test_acc"] > 0.3  # 3 short epochs of a tiny model already learn well above chance (0.1)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["test_acc"] == full["test_acc"]
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") == 4
    # checkpoints every 20 steps, so the kill lands in the middle of an epoch (90 steps/epoch)
    with killed_after_saves(monkeypatch, 3):
        train(_cfg(tmp_path, "b", checkpoint_every=20), progress=False)
    resumed = train(_cfg(tmp_path, "b", checkpoint_every=20), resume=True, progress=False)
    assert resumed["test_acc"] == full["test_acc"]
    last = lambda d: sorted((tmp_path / d / "checkpoints").iterdir())[-1]
    a, b = _weights(last("a")), _weights(last("b"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    # and the recorded metrics (the running training sums of the cut epoch are restored, not restarted)
    metrics = lambda d: [{k: v for k, v in row.items() if k not in ("seconds", "time")}
                         for row in csv.DictReader(open(tmp_path / d / "metrics.csv"))]
    assert metrics("a") == metrics("b")


@pytest.mark.slow   # > 3 s: the fast tier stays under 3 min
def test_resume_skips_corrupt_newest_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, "c", keep_last=3)
    cfg = cfg.override("trainer.epochs", "2")
    train(cfg, progress=False)
    ckpts = sorted((tmp_path / "c" / "checkpoints").iterdir())
    assert len(ckpts) == 2
    (ckpts[-1] / "tensors.safetensors").write_bytes(b"corrupt")
    summary = train(cfg, resume=True, progress=False)  # falls back to epoch 1 and redoes epoch 2
    assert summary["test_acc"] is not None
    assert load_checkpoint(sorted((tmp_path / "c" / "checkpoints").iterdir())[-1])[1]["epoch"] == 2


def test_resume_with_other_config_refuses(tmp_path):
    cfg = _cfg(tmp_path).override("trainer.epochs", "1")
    train(cfg, progress=False)
    with pytest.raises(ValueError, match="different config"):
        train(cfg.override("trainer.lr", "0.5"), resume=True, progress=False)


def test_config_errors_and_overrides(tmp_path):
    with pytest.raises(ValueError, match="valid datasets"):
        train(build_config(overrides=[("data.name", "imagenet")]), progress=False)
    with pytest.raises(ValueError, match="valid keys"):
        build_config(overrides=[("model.layers", "3")])
    with pytest.raises(ValueError, match="section.key"):
        build_config(overrides=[("epochs", "3")])
    with pytest.raises(ValueError, match="expects an integer"):
        build_config(overrides=[("trainer.epochs", "three")])
    with pytest.raises(ValueError, match="valid presets"):
        build_config(preset="cifar")
    # one dataset keyword on the command line, merged into the preset's table (values parsed as JSON)
    cfg = build_config("ucr", overrides=[("data.kwargs.max_length", "2048"), ("data.kwargs.note", "x y")])
    assert cfg.data.kwargs == {"max_length": 2048, "note": "x y"}
    assert build_config("ucr", overrides=[("data.kwargs", '{"a": 1}')]).data.kwargs == {"a": 1}  # a table replaces
    with pytest.raises(ValueError, match="one NAME"):
        build_config(overrides=[("data.kwargs.a.b", "1")])
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nlayer = "s4d"\nd_model = 24\n[trainer]\nepochs = 2\n')
    cfg = build_config("pdigits-s4d", str(toml), [("trainer.epochs", "4")])
    assert (cfg.model.d_model, cfg.trainer.epochs, cfg.data.name) == (24, 4, "pdigits")
    toml.write_text("[model]\nunknown_key = 1\n")
    with pytest.raises(ValueError, match="unknown keys"):
        build_config(config_file=str(toml))
    toml.write_text("not = = toml")
    with pytest.raises(ValueError, match="not valid TOML"):
        build_config(config_file=str(toml))


def test_cli_train_and_evaluate(tmp_path, capsys):
    out = str(tmp_path / "cli")
    rc = main(["train", "--trainer.epochs", "1", "--model.d_model=8", "--model.n_layers", "1",
               "--model.layer.d_state", "4", "--model.layer.init", "lin", "--trainer.out", out, "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "epoch   1/1" in text and "test accuracy" in text
    assert main(["evaluate", str(tmp_path / "cli" / "best")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "3"])


def test_regression_and_seq2seq_tasks_train_and_evaluate(tmp_path):
    """The trainer also fits scalar regression (adding problem, MSE, R^2) and sequence-to-sequence
    targets (copying: per-step outputs, cross-entropy on the last k steps, token accuracy)."""
    from statespaces.train.evaluation import evaluate_checkpoint

    small = [("model.d_model", "16"), ("model.n_layers", "1"), ("model.layer.d_state", "8"), ("trainer.epochs", "2"),
             ("trainer.batch_size", "16")]
    reg = build_config(overrides=small + [
        ("data.name", "adding"), ("data.kwargs", '{"target": "regression", "n_train": 200, "n_test": 50, "length": 30}'),
        ("trainer.out", str(tmp_path / "reg"))])
    s = train(reg, progress=False)
    assert s["task"] == "regression" and s["test_acc"] <= 1.0
    seq = build_config(overrides=small + [
        ("data.name", "copying"), ("data.kwargs", '{"target": "sequence", "n_train": 200, "n_test": 50}'),
        ("trainer.out", str(tmp_path / "seq"))])
    s = train(seq, progress=False)
    assert s["task"] == "seq2seq" and 0.0 <= s["test_acc"] <= 1.0
    res = evaluate_checkpoint(str(tmp_path / "seq" / "best"))
    assert abs(res["acc"] - s["test_acc"]) < 1e-9


@pytest.mark.slow   # > 3 s: the fast tier stays under 3 min
def test_tensorboard_events_match_metrics_csv(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tmp_path, "tb").override("trainer.epochs", "2").override("trainer.tensorboard", "on")
    train(cfg, progress=False)
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    rows = list(csv.DictReader(open(tmp_path / "tb" / "metrics.csv")))
    logged = [e.value for e in acc.Scalars("test/acc")]
    assert logged == pytest.approx([float(r["test_acc"]) for r in rows])
    steps = [e.step for e in acc.Scalars("train/loss_step")]
    assert steps == list(range(1, int(rows[-1]["step"]) + 1))


def test_tensorboard_mode_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="valid: auto, on, off"):
        train(_cfg(tmp_path, "x").override("trainer.tensorboard", "maybe"), progress=False)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # as if the package were missing
    with pytest.raises(ImportError, match="pip install tensorboard"):
        train(_cfg(tmp_path, "y").override("trainer.tensorboard", "on"), progress=False)
    summary = train(_cfg(tmp_path, "z").override("trainer.epochs", "1"), progress=False)   # auto: runs without
    assert summary["test_acc"] is not None and not (tmp_path / "z" / "tensorboard").exists()
