"""Language models through ``statespaces train`` / ``evaluate`` / ``generate`` (the chorales presets): random
token windows, validation on held-out pieces, resume, the test NLL against a direct computation, and sampling
from a checkpoint against the model's own scoring."""
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from statespaces.data.augment import SeriesAugment, TokenWindows, from_spec
from statespaces.train import build_config, train
from statespaces.train.config import LM_PRESETS, PRESETS, ConfigError

music21 = pytest.importorskip("music21")
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_lm(tmp_path, *extra, out="lm"):
    return build_config(overrides=[
        ("data.name", "chorales"), ("data.augment", '{"window": 32}'), ("model.d_model", "8"), ("model.n_layers", "1"),
        ("model.layer.d_state", "4"), ("model.dropout", "0"), ("model.mixing", "linear"), ("trainer.epochs", "1"),
        ("trainer.batch_size", "64"), ("trainer.lr", "3e-3"), ("trainer.out", str(tmp_path / out)),
        ("trainer.tensorboard", "off"), *extra])


# ---- random windows of tokens ----------------------------------------------------------------------------------

def test_token_windows_are_slices_of_the_valid_steps_with_their_targets_cut_alike():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50, (7, 40, 3), generator=gen)
    y = x + 100                                             # targets aligned step by step, told apart from x
    lengths = torch.tensor([40, 39, 12, 1, 25, 16, 17])
    aug = TokenWindows(16, seed=3)
    xw, yw, lw = aug.with_targets(x, y, lengths, step=5)
    assert xw.shape == (7, 16, 3) and yw.shape == (7, 16, 3)
    assert lw.tolist() == [16, 16, 12, 1, 16, 16, 16]
    for b in range(7):
        n, w = int(lengths[b]), int(lw[b])
        starts = [s for s in range(0, max(n - 16, 0) + 1) if torch.equal(xw[b, :w], x[b, s:s + w])]
        assert starts, f"row {b} is not a window of its valid steps"
        assert torch.equal(yw[b, :w], xw[b, :w] + 100)
    again = aug.with_targets(x, y, lengths, step=5)
    assert all(torch.equal(a, b) for a, b in zip(again, (xw, yw, lw)))      # seeded by (seed, step)
    other = aug.with_targets(x, y, lengths, step=6)[0]
    assert not torch.equal(other, xw)
    # offsets cover the allowed range: row 0 (n = 40, W = 16) starts anywhere in [0, 24]
    seen = {int(torch.nonzero((aug.with_targets(x, y, lengths, s)[0][0, 0] == x[0, :, :]).all(-1))[0])
            for s in range(400)}
    assert min(seen) == 0 and max(seen) == 24 and len(seen) > 20
    short = TokenWindows(64).with_targets(x, None, None, 0)
    assert short[0].shape == (7, 40, 3) and short[1] is None and short[2] is None


def test_token_windows_refuse_what_they_cannot_cut():
    with pytest.raises(ValueError, match="window=1"):
        TokenWindows(1)
    with pytest.raises(ValueError, match="token ids"):
        TokenWindows(4).with_targets(torch.randn(2, 8, 1), None, None, 0)
    with pytest.raises(ValueError, match="not aligned"):
        TokenWindows(4).with_targets(torch.zeros(2, 8, 1, dtype=torch.long), torch.zeros(2, 7, 1), None, 0)
    assert isinstance(from_spec({"window": 8}), TokenWindows)
    assert isinstance(from_spec({"roll": 0.5}), SeriesAugment)
    with pytest.raises(ValueError, match="cannot be combined"):
        from_spec({"window": 8, "roll": 1.0})
    with pytest.raises(ValueError, match="for token sequences .*window"):
        from_spec({"shift": 1})
    with pytest.raises(ConfigError, match="window"):
        build_config(overrides=[("data.augment", '{"window": 1}')])


def test_trim_collate_cuts_targets_aligned_with_the_inputs():
    from statespaces.data.sampler import trim_collate

    tok = torch.arange(12).view(6, 2)
    x, y, lengths = trim_collate([(tok, tok, torch.tensor(3)), (tok, tok, torch.tensor(4))])
    assert x.shape == (2, 4, 2) and torch.equal(x, y)
    x, y, lengths = trim_collate([(tok, torch.tensor(1), torch.tensor(3)), (tok, torch.tensor(0), torch.tensor(2))])
    assert x.shape == (2, 3, 2) and y.tolist() == [1, 0]          # labels are not cut


# ---- the chorales dataset and the trainer ------------------------------------------------------------------------

def test_chorales_dataset_is_whole_pieces_split_by_piece():
    from statespaces.data import get_dataset
    from statespaces.data.chorales import REST, load_chorales

    d = get_dataset("chorales", seed=5)            # the seed never moves the split: runs of seeds share test pieces
    ref = load_chorales(verbose=False)
    assert d.task == "lm" and (d.d_input, d.n_classes) == (4, 129)
    for split, pieces in (("train", ref.train), ("valid", ref.valid), ("test", ref.test)):
        x, y, lengths = getattr(d, split).tensors
        assert torch.equal(x, y) and len(x) == len(pieces)
        assert lengths.tolist() == [len(p) for p in pieces]
        for b in (0, len(pieces) - 1):
            n = len(pieces[b])
            np.testing.assert_array_equal(x[b, :n].numpy(), pieces[b])
            assert (x[b, n:] == REST).all()
    assert d.info["names"]["test"] == ref.names["test"]


def test_lm_run_validates_on_held_out_pieces_and_evaluate_gives_the_test_nll(tmp_path, capsys):
    from statespaces.cli import main
    from statespaces.data import get_dataset
    from statespaces.train.evaluation import evaluate_checkpoint, load_trained

    s = train(_tiny_lm(tmp_path, ("trainer.epochs", "2")), progress=False)
    out = capsys.readouterr().out
    assert s["task"] == "lm" and s["selection"] == "validation NLL" and s["val_split"] == "the dataset's own"
    assert s["n_train"] == 263 and s["n_val"] == 33 and s["n_test"] == 33
    assert "val nll" in out and "nats/step" in out and "acc" not in out
    model, cfg = load_trained(str(tmp_path / "lm"))
    d = get_dataset("chorales")
    x, _, lengths = d.test.tensors
    with torch.no_grad():                           # the NLL by hand: log-softmax of the logits, masked, summed
        logits = model(x, lengths=lengths)                                     # (B, L, 4, V)
        lp = F.log_softmax(logits[:, :-1].double(), -1).gather(-1, x[:, 1:, :, None]).squeeze(-1).sum(-1)
        mask = torch.arange(1, x.shape[1])[None] < lengths[:, None]
        direct = float(-(lp * mask).sum() / mask.sum())
    res = evaluate_checkpoint(str(tmp_path / "lm"))
    assert res["loss"] == pytest.approx(direct, rel=1e-5) and res["acc"] == pytest.approx(-direct, rel=1e-5)
    assert s["test_acc"] == pytest.approx(-direct, rel=1e-5)
    assert main(["evaluate", str(tmp_path / "lm")]) == 0
    printed = capsys.readouterr().out
    assert f"test NLL {direct:.4f} nats/step" in printed and "chosen by validation NLL" in printed
    assert "%" not in printed


def test_lm_run_resumed_mid_epoch_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    import statespaces.train.loop as loop
    from statespaces.train.checkpoint import load_checkpoint

    args = (("trainer.epochs", "2"), ("trainer.checkpoint_every", "2"), ("model.dropout", "0.1"))
    train(_tiny_lm(tmp_path, *args, out="a"), progress=False)
    real_save, calls = loop._Checkpoints.save, {"n": 0}

    def crash(self, *a, **k):
        real_save(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 4:        # steps 2, 4, 5 (end of epoch 1), 6: killed inside epoch 2
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(loop._Checkpoints, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny_lm(tmp_path, *args, out="b"), progress=False)
    monkeypatch.setattr(loop._Checkpoints, "save", real_save)
    train(_tiny_lm(tmp_path, *args, out="b"), resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / r / "best")[0] for r in ("a", "b"))
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith("model."):
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


@pytest.mark.parametrize("override, match", [
    (("model.layer.bidirectional", "true"), "causal"),
    (("model.stem", "3"), "model.stem"),
    (("data.augment", '{"roll": 1.0}'), "window"),
    (("data.normalize", "series"), "normalize|tokens|int64"),
    (("model.backbone_kwargs", '{"pools": 4}'), "pools"),
])
def test_lm_settings_that_cannot_apply_are_refused(tmp_path, override, match):
    with pytest.raises((ConfigError, ValueError, TypeError), match=match):
        train(_tiny_lm(tmp_path, override), progress=False)


@pytest.mark.parametrize("override, match", [
    (("model.backbone", "sashimi"), "language models"),
    (("data.augment", '{"window": 16}'), "language models"),
])
def test_lm_settings_on_a_classifier_are_refused(tmp_path, override, match):
    cfg = build_config(overrides=[("model.d_model", "8"), ("model.n_layers", "1"), ("trainer.epochs", "1"),
                                  ("trainer.out", str(tmp_path / "c")), override])
    with pytest.raises(ConfigError, match=match):
        train(cfg, progress=False)


def test_the_chorales_presets_build_their_models():
    from statespaces.models.lm import SSMLanguageModel
    from statespaces.models.sashimi import SaShiMi
    from statespaces.train.loop import build_model

    assert set(LM_PRESETS) == {"chorales-sashimi", "chorales-s4d"}
    for name, backbone in (("chorales-sashimi", SaShiMi), ("chorales-s4d", None)):
        cfg = build_config(name)
        assert cfg.data.name == "chorales" and cfg.data.augment == {"window": 128}
        m = build_model(cfg, 4, 129, "lm")
        assert isinstance(m, SSMLanguageModel) and m.n_streams == 4 and m.vocab_size == 129
        assert backbone is None or isinstance(m.backbone, backbone)
        assert 200_000 < sum(p.numel() for p in m.parameters()) < 300_000
    assert "chorales-sashimi" in PRESETS


# ---- generation from a checkpoint ---------------------------------------------------------------------------------

def test_generate_writes_midi_and_tokens_that_the_model_scores_as_reported(tmp_path, capsys):
    from statespaces.cli import main
    from statespaces.data import get_dataset
    from statespaces.train.generation import generate_from_checkpoint
    from statespaces.train.evaluation import load_trained

    train(_tiny_lm(tmp_path), progress=False)
    run = str(tmp_path / "lm")
    assert main(["generate", run, "--n", "2", "--steps", "20", "--piece", "32", "--seed", "3",
                 "--out", str(tmp_path / "g" / "s")]) == 0
    printed = capsys.readouterr().out
    tokens = np.load(tmp_path / "g" / "s.npy")
    assert (tmp_path / "g" / "s_0.mid").stat().st_size > 0 and (tmp_path / "g" / "s_1.mid").exists()
    from statespaces.data.chorales import score_to_grid

    reference = score_to_grid(music21.converter.parse(str(tmp_path / "g" / "s_0_reference.mid")))
    piece = get_dataset("chorales").test.tensors[0][32].numpy()
    np.testing.assert_array_equal(reference[:36], piece[:36])      # the real piece beside the sample, same span
    assert tokens.shape == (2, 16 + 20, 4) and tokens.min() >= 0 and tokens.max() < 129
    x = get_dataset("chorales").test.tensors[0]
    np.testing.assert_array_equal(tokens[0, :16], x[32, :16].numpy())     # pieces 32, then 0 (wrapping around)
    np.testing.assert_array_equal(tokens[1, :16], x[0, :16].numpy())
    assert "test sequence(s) 32 (bach/" in printed and "wrote" in printed
    res = generate_from_checkpoint(run, steps=20, piece=32, n=2, seed=3, out=tmp_path / "h" / "s")
    np.testing.assert_array_equal(np.load(res["tokens"]), tokens)          # the same seed, the same notes
    other = generate_from_checkpoint(run, steps=20, piece=32, n=2, seed=4, out=tmp_path / "h" / "t")
    assert not np.array_equal(np.load(other["tokens"]), tokens)
    # again into the same stem with one piece: the two-piece call's MIDI files no longer lie beside its summary
    (tmp_path / "h" / "keep.mid").write_bytes(b"not ours")
    generate_from_checkpoint(run, steps=20, piece=32, n=1, seed=3, out=tmp_path / "h" / "s")
    assert sorted(p.name for p in (tmp_path / "h").glob("s*.mid")) == ["s.mid", "s_reference.mid"]
    assert (tmp_path / "h" / "keep.mid").exists() and (tmp_path / "h" / "t_1.mid").exists()
    # the reported NLL of the samples, by hand from a convolution-mode pass over prompt + samples
    model, _ = load_trained(run)
    t = torch.from_numpy(tokens)
    with torch.no_grad():
        lp = F.log_softmax(model(t)[:, :-1].double(), -1).gather(-1, t[:, 1:, :, None]).squeeze(-1).sum(-1)
    assert res["sample_nll"] == pytest.approx(float(-lp[:, 15:].mean()), rel=1e-4)


def test_generate_refuses_a_classifier_and_bad_arguments(tmp_path, capsys):
    from statespaces.cli import main
    from statespaces.train.generation import generate_from_checkpoint

    cfg = build_config(overrides=[("model.d_model", "8"), ("model.n_layers", "1"), ("trainer.epochs", "1"),
                                  ("trainer.out", str(tmp_path / "c")), ("trainer.tensorboard", "off")])
    train(cfg, progress=False)
    with pytest.raises(ValueError, match="holds a classification model; generation needs a language model"):
        generate_from_checkpoint(tmp_path / "c")
    train(_tiny_lm(tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"piece=33; the test split has 33 pieces"):
        generate_from_checkpoint(tmp_path / "lm", piece=33)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        generate_from_checkpoint(tmp_path / "lm", steps=0)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["generate", str(tmp_path / "lm"), "--temperature", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "temperature" in err and "generate: generate" not in err
    for flag, value in (("--top-k", "0"), ("--top-p", "1.5"), ("--temperature", "-1")):
        with pytest.raises(SystemExit) as e:
            main(["generate", str(tmp_path / "lm"), flag, value])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and f"{flag} must be" in err, err
        assert "top_k" not in err and "top_p" not in err


# ---- found by a new-user campaign (2026-12-07) -------------------------------------------------------------------

class _Wrapper(torch.nn.Module):
    """A stand-in for DistributedDataParallel / a compiled module: the model in ``.module``, calls counted."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


def test_a_wrapped_language_model_trains_through_the_wrappers_forward():
    """Under torchrun the task called model.loss on the DDP wrapper (AttributeError); calling the inner model's
    loss would have skipped DDP's gradient synchronisation, which only its forward sets up."""
    from statespaces.models.lm import SSMLanguageModel
    from statespaces.train.tasks import get_task

    torch.manual_seed(0)
    model = SSMLanguageModel(11, d_model=8, n_layers=1, layer={"kind": "s4d", "d_state": 4}, n_streams=2)
    x = torch.randint(0, 11, (3, 9, 2))
    lengths = torch.tensor([9, 4, 6])
    net = _Wrapper(model)
    task = get_task("lm")
    loss = task.train_output(net, x, None, lengths)
    assert net.calls == 1
    torch.testing.assert_close(loss, model.loss(x, None, lengths), atol=0, rtol=0)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert task.train_output(model, x, x, lengths).item() == pytest.approx(loss.item())
    with torch.no_grad():                       # the public twin: nll from logits computed elsewhere
        total, count = model.nll_of_logits(model(x, lengths=lengths), x, lengths)
        ref_total, ref_count = model.nll(x, lengths=lengths)
    assert int(count) == int(ref_count) == 8 + 3 + 5 and float(total) == pytest.approx(float(ref_total), rel=1e-6)
    with pytest.raises(ValueError, match="not aligned"):
        model.nll_of_logits(model(x)[:, :5], x)


def _lm_ddp_worker(rank, world, init_file, out_file):
    import gc

    import torch.distributed as dist

    from statespaces.models.lm import SSMLanguageModel
    from statespaces.train.tasks import get_task

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.parallel.DistributedDataParallel(
        SSMLanguageModel(11, d_model=8, n_layers=1, layer={"kind": "s4d", "d_state": 4}, n_streams=2))
    x = torch.randint(0, 11, (4, 10, 2), generator=torch.Generator().manual_seed(1))
    get_task("lm").train_output(net, x[2 * rank:2 * rank + 2], None, None).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in net.module.named_parameters()}, out_file)
    del net
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gradients_of_a_language_model_equal_the_full_batch(tmp_path):
    import torch.multiprocessing as mp

    from statespaces.models.lm import SSMLanguageModel

    out = tmp_path / "grads.pt"
    mp.spawn(_lm_ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    grads = torch.load(out)
    torch.manual_seed(0)
    model = SSMLanguageModel(11, d_model=8, n_layers=1, layer={"kind": "s4d", "d_state": 4}, n_streams=2)
    x = torch.randint(0, 11, (4, 10, 2), generator=torch.Generator().manual_seed(1))
    model.loss(x).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-6, rtol=1e-5)


def test_lm_outputs_name_the_nll_and_curves_plot_it(tmp_path, monkeypatch):
    """summary.json held the NLL only as a negative 'test_acc', and curves.png plotted it as an accuracy of
    -1900%."""
    import statespaces.train.monitor as monitor

    plotted = {}
    real = monitor.write_metrics

    def spy(out, history, task="classification"):
        plotted["task"] = getattr(task, "name", task)
        return real(out, history, task)

    monkeypatch.setattr("statespaces.train.loop.write_metrics", spy)
    s = train(_tiny_lm(tmp_path), progress=False)
    assert plotted["task"] == "lm" and (tmp_path / "lm" / "curves.png").stat().st_size > 0
    assert s["test_nll"] == pytest.approx(-s["test_acc"]) and s["test_nll"] > 0
    assert s["selected_val_nll"] == pytest.approx(-s["selected_val_acc"]) and "minus the NLL" in s["score"]


def test_write_metrics_labels_each_task_by_its_own_score(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    labels = []
    real_set = matplotlib.axes.Axes.set

    def record(self, **kw):
        labels.append(kw.get("ylabel"))
        return real_set(self, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "set", record)
    from statespaces.train.monitor import write_metrics

    history = [{"epoch": 1, "train_loss": 3.0, "train_acc": -3.0, "val_loss": 2.9, "val_acc": -2.9,
                "test_loss": 3.1, "test_acc": -3.1}]
    write_metrics(tmp_path, history, "lm")
    assert labels == ["NLL (nats/step)"]
    labels.clear()
    write_metrics(tmp_path, history, "regression")
    assert labels == ["mean squared error", "R^2"]
    labels.clear()
    write_metrics(tmp_path, history, "classification")
    assert labels == ["cross-entropy", "accuracy (%)"]


def test_generate_writes_beside_the_checkpoints_with_its_settings(tmp_path, capsys):
    """Samples went into best/generated, which the next epoch of a live run replaced (the write failed or the
    files vanished); the printed prompt length was the flag's even where a piece was shorter."""
    from statespaces.cli import main
    from statespaces.data import get_dataset

    train(_tiny_lm(tmp_path), progress=False)
    run = tmp_path / "lm"
    lengths = get_dataset("chorales").test.tensors[2]
    short = int(torch.argmin(lengths))
    assert main(["generate", str(run), "--prompt", "10000", "--piece", str(short), "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((run / "generated" / "sample_0.json").read_text())
    assert (run / "generated" / "sample_0.mid").exists() and not (run / "best" / "generated").exists()
    assert meta["prompts"][0]["prompt_steps"] == int(lengths[short]) and meta["seed"] == 0
    assert f"[whole, {int(lengths[short])} steps]" in printed
    assert np.load(run / "generated" / "sample_0.npy").shape == (1, int(lengths[short]) + 4, 4)
    step = sorted((run / "checkpoints").iterdir())[-1]
    from statespaces.train.generation import generate_from_checkpoint

    assert generate_from_checkpoint(step, steps=2)["tokens"] == str(run / "generated" / step.name / "sample_0.npy")
    with pytest.raises(SystemExit):
        main(["generate", str(run), "--prompt", "0"])
    assert "--prompt 0" in capsys.readouterr().err


def test_lm_pool_and_val_fraction_are_not_silently_ignored(tmp_path):
    with pytest.raises(ConfigError, match="model.pool='max': a language model predicts every step"):
        train(_tiny_lm(tmp_path, ("model.pool", "max")), progress=False)
    with pytest.warns(UserWarning, match=r"val_fraction = 0.3: dataset 'chorales' has its own validation split"):
        train(_tiny_lm(tmp_path, ("trainer.val_fraction", "0.3"), out="v"), progress=False)
    for key, value in (("data.normalize", "none"), ("data.normalize", "series"), ("data.time_channel", "true")):
        with pytest.raises(ConfigError, match="holds a language model's tokens"):
            train(_tiny_lm(tmp_path, (key, value), out="n"), progress=False)


def test_the_sashimi_banner_names_the_backbone(tmp_path, monkeypatch, capsys):
    import statespaces.train.loop as loop
    from statespaces.cli import main

    def fake_train(cfg, resume=False, progress=True, announce=None):
        announce()
        return {}

    monkeypatch.setattr(loop, "train", fake_train)
    assert main(["train", "--preset", "chorales-sashimi", "--trainer.out", str(tmp_path / "x")]) == 0
    line = capsys.readouterr().out
    assert line.startswith("training a SaShiMi (1 (SSM, FF) pair(s) per tier, pool=4, n_pools=2") and "S4D(" in line


def test_an_ensemble_of_language_models_mixes_their_next_step_probabilities(tmp_path, capsys):
    from statespaces.cli import main
    from statespaces.data import get_dataset
    from statespaces.train.ensemble import evaluate_ensemble
    from statespaces.train.evaluation import evaluate_checkpoint, load_trained

    for seed in (0, 1):
        train(_tiny_lm(tmp_path, ("trainer.seed", str(seed)), out=f"s{seed}"), progress=False)
    runs = [str(tmp_path / "s0"), str(tmp_path / "s1")]
    res = evaluate_ensemble(runs)
    x, _, lengths = get_dataset("chorales").test.tensors
    with torch.no_grad():                 # by hand: per step, log of the mean of the two models' step probabilities
        lps = []
        for r in runs:
            m, _ = load_trained(r)
            lp = F.log_softmax(m(x, lengths=lengths)[:, :-1].double(), -1)
            lps.append(lp.gather(-1, x[:, 1:, :, None]).squeeze(-1).sum(-1))
        mix = torch.logaddexp(lps[0], lps[1]) - np.log(2)
        mask = torch.arange(1, x.shape[1])[None] < lengths[:, None]
        direct = float(-(mix * mask).sum() / mask.sum())
    assert res["loss"] == pytest.approx(direct, rel=1e-9) and res["task"] == "lm"
    for member, r in zip(res["members"], runs):
        assert member["loss"] == pytest.approx(evaluate_checkpoint(r)["loss"], rel=1e-5)
    assert res["loss"] < max(m["loss"] for m in res["members"])
    assert main(["evaluate", *runs]) == 0
    assert "mean next-step probabilities" in capsys.readouterr().out


def test_derived_outputs_go_beside_the_checkpoints(tmp_path):
    from statespaces.train.run import outputs_dir

    assert outputs_dir(tmp_path / "run" / "best", "analysis") == tmp_path / "run" / "analysis"
    assert outputs_dir(tmp_path / "run" / "checkpoints" / "step-000010", "generated") == \
        tmp_path / "run" / "generated" / "step-000010"
    assert outputs_dir(tmp_path / "elsewhere", "analysis") == tmp_path / "elsewhere" / "analysis"


def test_a_folder_of_checkpoints_is_named_as_such(tmp_path):
    from statespaces.train.run import checkpoint_dir

    for name in ("step-000000003", "step-000000007"):
        (tmp_path / "run" / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "run" / "checkpoints" / name / "meta.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"a run's folder of checkpoints; pass one of them \(.*step-000000007 "
                                                r"is the newest\)"):
        checkpoint_dir(tmp_path / "run" / "checkpoints")
    assert checkpoint_dir(tmp_path / "run" / "checkpoints" / "step-000000003").name == "step-000000003"
