"""Promises that a tenth mutation audit found untested (each test here fails on the mutant the audit planted):
sampling filters at their limits, complex weights in the moving average, mixup's input check and per-step
permutation, the ensemble's mode restore and member checks, the recipes' warmup, clipping, task and batch
indices, streaming export of language models and the ONNX opset, and the command line's override parsing,
interrupt hint, ``analyze --no-plots``, channel listing, ensemble wording, one-line errors and ``--data.name``."""
import json
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import cli_run

from statespaces.cli import _parse_overrides, _print_channels

pytestmark = pytest.mark.usefixtures("one_thread")


_cli = cli_run


# --- sampling (models/generate.py) ------------------------------------------------------------------
def test_top_p_one_filters_nothing():
    """top_p = 1.0 means no nucleus filter: rare tokens (whose float32 cumulative mass saturates at 1) stay."""
    from statespaces.models.generate import filter_logits

    logits = torch.tensor([[0.0, -20.0, -20.0, -25.0]])
    out = filter_logits(logits, top_p=1.0)
    assert torch.equal(out, logits), out


def test_top_k_above_the_vocabulary_is_clipped():
    """top_k > V is clipped to V (no top-k filter), for filter_logits and sample_logits alike."""
    from statespaces.models.generate import filter_logits, sample_logits

    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(filter_logits(logits, top_k=5 + 10), logits)
    tok = sample_logits(logits, top_k=5 + 10, generator=torch.Generator().manual_seed(0))
    assert tok.shape == (3,) and bool(((tok >= 0) & (tok < 5)).all())


# --- weight averaging ---------------------------------------------------------------------------------
def test_weight_ema_averages_complex_parameters():
    """Complex parameters are averaged like real ones (not copied like integer counters)."""
    from statespaces.train.averaging import WeightEMA, ema_factor

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3, dtype=torch.complex64))

    m = M()
    ema = WeightEMA(m, 0.5)
    ema.update()                                   # the first update copies: 0
    with torch.no_grad():
        m.w.fill_(1 + 1j)
    ema.update()
    beta = ema_factor(0.5, 1)                      # min(0.5, 2 / 11)
    want = torch.full((3,), (1 - beta) * (1 + 1j), dtype=torch.complex64)
    torch.testing.assert_close(ema.module.w.detach(), want)


# --- mixup ---------------------------------------------------------------------------------------------
def test_mixup_refuses_a_float_batch_that_is_not_b_l_c():
    """A float (B, C) batch is refused with the documented ValueError, not mixed."""
    from statespaces.train.mixup import MixUp

    with pytest.raises(ValueError, match="float series"):
        MixUp(0.2)(torch.ones(2, 3), torch.tensor([0, 1]), None, 0)


def test_mixup_partners_are_drawn_afresh_each_step():
    """The partner permutation depends on (seed, step): it varies over steps, and is reproducible."""
    from statespaces.train.mixup import MixUp

    x, y = torch.randn(8, 4, 1, dtype=torch.float64), torch.arange(8)
    mix = MixUp(0.4, seed=0)
    partners = {tuple(mix(x, y, None, step)[2].tolist()) for step in range(20)}
    assert len(partners) > 1, partners
    assert mix(x, y, None, 3)[2].tolist() == MixUp(0.4, seed=0)(x, y, None, 3)[2].tolist()


# --- ensembles -----------------------------------------------------------------------------------------
class _Pool(nn.Module):
    """(B, L, 2) -> (B, 3): mean over time, linear head."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(2, 3)

    def forward(self, x, lengths=None):
        return self.lin(x.mean(1))


def test_predict_restores_the_training_mode():
    """ensemble.predict() runs in eval mode and puts a training model back in training mode."""
    from statespaces.train.ensemble import predict
    from statespaces.train.tasks import get_task

    model = _Pool().train()
    loader = DataLoader(TensorDataset(torch.randn(5, 4, 2), torch.randint(0, 3, (5,))), batch_size=2)
    out, y = predict(model, loader, get_task("classification"))
    assert out.shape == (5, 3) and y.shape == (5,)
    assert model.training, "predict left the model in eval mode"


def _fake_members(tmp_path, monkeypatch, specs):
    """Run folders ``tmp_path/<name>/best/meta.json`` whose loading (``load_for_evaluation``) is replaced by
    ``specs[name] = (task, dataset name)``: a small model and the same test split for every member."""
    import statespaces.train.ensemble as ens

    g = torch.Generator().manual_seed(0)
    test = TensorDataset(torch.randn(6, 4, 2, generator=g), torch.randint(0, 3, (6,), generator=g))
    for name in specs:
        (tmp_path / name / "best").mkdir(parents=True)
        (tmp_path / name / "best" / "meta.json").write_text("{}")

    def load(folder, data_name=None):
        task, dataset = specs[folder.parent.name]
        return _Pool(len(dataset)), None, {"epoch": 1}, SimpleNamespace(task=task, name=dataset, test=test)

    monkeypatch.setattr(ens, "load_for_evaluation", load)


def test_ensemble_refuses_members_of_other_datasets(tmp_path, monkeypatch):
    """Members trained on different datasets are refused even when their test targets coincide."""
    from statespaces.train import evaluate_ensemble

    _fake_members(tmp_path, monkeypatch, {"a": ("classification", "ucr:Waves"), "b": ("classification", "ucr:Other"),
                                          "c": ("classification", "ucr:Waves")})
    assert evaluate_ensemble([str(tmp_path / "a"), str(tmp_path / "c")])["n_members"] == 2   # the fake is sound
    with pytest.raises(ValueError, match="share task and data"):
        evaluate_ensemble([str(tmp_path / "a"), str(tmp_path / "b")])


def test_ensemble_refuses_one_checkpoint_spelled_two_ways(tmp_path, monkeypatch):
    """The same run given as a relative and an absolute path (or via ..) is a duplicate member."""
    from statespaces.train import evaluate_ensemble

    _fake_members(tmp_path, monkeypatch, {"r0": ("classification", "d"), "r1": ("classification", "d")})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="same checkpoint"):
        evaluate_ensemble(["r0", str(tmp_path / "r0")])
    with pytest.raises(ValueError, match="same checkpoint"):
        evaluate_ensemble(["r0", os.path.join("r1", "..", "r0")])


def test_ensemble_refuses_seq2seq_checkpoints(tmp_path, monkeypatch):
    """A seq2seq checkpoint is refused with the documented one-line ValueError."""
    from statespaces.train import evaluate_ensemble

    _fake_members(tmp_path, monkeypatch, {"s0": ("seq2seq", "copying"), "s1": ("seq2seq", "copying")})
    with pytest.raises(ValueError, match="ensembles average pooled outputs"):
        evaluate_ensemble([str(tmp_path / "s0"), str(tmp_path / "s1")])


# --- recipes -------------------------------------------------------------------------------------------
def test_adamw_cosine_warms_up():
    """adamw_cosine's warmup reaches the schedule: the first steps' rates follow warmup_cosine(total, warmup)."""
    from statespaces.train.engine import warmup_cosine
    from statespaces.train.recipes import adamw_cosine

    opt, sched = adamw_cosine(nn.Linear(3, 2), total_steps=10, lr=1.0, warmup=4)
    f = warmup_cosine(10, 4)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([f(s) for s in range(6)]) and lrs[0] == pytest.approx(0.25), lrs


def test_fit_dataset_clips_gradients():
    """fit_dataset's grad_clip reaches the training loop: a tiny clip gives other weights than none."""
    from statespaces.train.recipes import fit_dataset

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 4, 2, generator=g), torch.randint(0, 3, (16,), generator=g))

    def run(clip):
        model = _Pool()
        fit_dataset(model, data, 1, 1e-1, batch_size=8, seed=3, grad_clip=clip, weight_decay=0.0)
        return [p.detach().clone() for p in model.parameters()]

    a, b = run(0.0), run(1e-4)
    assert not all(torch.equal(p, q) for p, q in zip(a, b)), "grad_clip had no effect"


def test_score_uses_its_task():
    """score(..., task="regression") is R^2, computed here by hand."""
    from statespaces.train.recipes import score

    class Mean(nn.Module):
        def forward(self, x, lengths=None):
            return x.mean(1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 4, 1, generator=g)
    pred = x.mean(1).squeeze(-1)
    y = pred + 0.1 * torch.randn(20, generator=g)
    want = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert score(Mean(), TensorDataset(x, y), task="regression") == pytest.approx(float(want), abs=1e-4)


def test_batches_makes_indices_from_zero():
    """Batches(make, steps) calls make(i) for i = 0 .. steps - 1."""
    from statespaces.train.recipes import Batches

    assert list(Batches(lambda i: i, 3)) == [0, 1, 2]


# --- export --------------------------------------------------------------------------------------------
def test_streaming_a_language_model_with_continuous_inputs_is_refused():
    """streaming_model refuses a language model with d_input (continuous inputs) with a clear ValueError."""
    from statespaces.export import streaming_model
    from statespaces.models.lm import SSMLanguageModel

    with pytest.raises(ValueError, match="continuous inputs"):
        streaming_model(SSMLanguageModel(11, 8, 1, layer="s4d", d_input=3))


def test_export_onnx_honours_the_opset(tmp_path):
    """export_onnx(..., opset=18) writes a file whose default-domain opset is 18 (the exporter's default is newer)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from statespaces.export import export_onnx
    from statespaces.layers import S4D

    p = export_onnx(S4D(4, 4, seed=0).eval(), tmp_path / "s.onnx", opset=18)
    assert {o.domain: o.version for o in onnx.load(str(p)).opset_import}.get("") == 18


def test_export_step_of_a_multi_stream_language_model():
    """export_step of an LM with n_streams = 2 traces (B, 1, 2) tokens and streams like the model."""
    from statespaces.export import export_step, streaming_model
    from statespaces.models.lm import SSMLanguageModel

    lm = SSMLanguageModel(11, 8, 1, layer="s4d", n_streams=2).eval()
    sm = streaming_model(lm)
    assert sm.example_inputs(2)[0].shape == (2, 1, 2)
    prog = export_step(lm, batch_size=2).module()
    x = torch.randint(0, 11, (2, 5, 2), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = lm(x)
        state, ys = sm.initial_state(2), []
        for t in range(5):
            out = prog(x[:, t:t + 1], *state)
            ys.append(out[0])
            state = out[1:]
    torch.testing.assert_close(torch.cat(ys, 1), ref, rtol=1e-5, atol=1e-5)


# --- command line --------------------------------------------------------------------------------------
def test_a_trailing_override_without_value_is_one_line(capsys):
    """`train --trainer.epochs` (no value) exits 2 with one stderr line saying it needs a value."""
    rc, _, err = _cli(capsys, "train", "--trainer.epochs")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "--trainer.epochs needs a value" in lines[0], (rc, err)


def test_dashes_in_override_keys_become_underscores():
    """--trainer.val-fraction is the key trainer.val_fraction (both spellings of an override)."""
    assert _parse_overrides(["--trainer.val-fraction", "0", "--trainer.batch-size=8"]) == \
        [("trainer.val_fraction", "0"), ("trainer.batch_size", "8")]


def test_an_override_value_may_hold_an_equals_sign():
    """--key=value splits at the first '=' only: a path holding '=' stays whole."""
    assert _parse_overrides(["--data.name=runs/a=b.tsv", "--trainer.epochs", "3"]) == \
        [("data.name", "runs/a=b.tsv"), ("trainer.epochs", "3")]


def _checkpoint(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({}))
    return str(tmp_path)


def test_interrupted_analyze_has_no_resume_hint(tmp_path, capsys, monkeypatch):
    """Ctrl-C in `analyze` exits 130 with one line and no --resume hint (only train resumes)."""
    import statespaces.analysis as analysis

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(analysis, "analyze_checkpoint", interrupted)
    rc, _, err = _cli(capsys, "analyze", _checkpoint(tmp_path))
    assert rc == 130 and err.strip() == "statespaces analyze: interrupted", err


def test_analyze_no_plots_and_out_dir_reach_the_analysis(tmp_path, capsys, monkeypatch):
    """`analyze RUN OUT --no-plots` asks for no plots and writes to OUT; without the flag plots are made."""
    import statespaces.analysis as analysis

    calls = []

    def fake(folder, out, plots=True):
        calls.append((str(out), plots))
        return {"layers": []}

    monkeypatch.setattr(analysis, "analyze_checkpoint", fake)
    ckpt, out = _checkpoint(tmp_path), str(tmp_path / "an")
    assert _cli(capsys, "analyze", ckpt, out, "--no-plots")[0] == 0
    assert _cli(capsys, "analyze", ckpt, out)[0] == 0
    assert calls == [(out, False), (out, True)], calls


def test_exactly_sixteen_channels_are_all_listed(capsys):
    """_print_channels lists every channel's R^2 up to and including 16 channels."""
    _print_channels({"r2_channels": [0.5 + i / 100 for i in range(16)]})
    line = capsys.readouterr().out.strip()
    assert line.startswith("test R^2 per channel: 0: 0.5000") and line.endswith("15: 0.6500"), line
    assert line.count(": ") == 17


def _fake_ensemble(monkeypatch, task="classification", error=None):
    """Replace evaluate_ensemble by one that records its arguments and returns a scripted result."""
    import statespaces.train.ensemble as ens

    calls = []

    def fake(paths, data_name=None):
        calls.append((list(paths), data_name))
        if error is not None:
            raise error
        member = {"checkpoint": "m", "loss": 0.5, "acc": 0.75, "epoch": 1, "selection": "last epoch"}
        return {"members": [member, member], "loss": 0.25, "acc": 0.8, "task": task, "dataset": "d",
                "n_test": 4, "n_members": 2}

    monkeypatch.setattr(ens, "evaluate_ensemble", fake)
    return calls


def test_an_ensemble_of_regression_runs_says_mean_prediction(capsys, monkeypatch):
    """The ensemble line names how members combine: mean prediction for regression, probabilities otherwise."""
    _fake_ensemble(monkeypatch, task="regression")
    rc, out, _ = _cli(capsys, "evaluate", "r1", "r2")
    assert rc == 0 and "(mean prediction;" in out and "class probabilities" not in out, out
    _fake_ensemble(monkeypatch, task="classification")
    rc, out, _ = _cli(capsys, "evaluate", "r1", "r2")
    assert rc == 0 and "(mean class probabilities;" in out, out


def test_a_multi_line_error_message_prints_as_one_line(capsys, monkeypatch):
    """A user error whose message holds newlines is printed on exactly one stderr line."""
    _fake_ensemble(monkeypatch, error=ValueError("first part\n  second part"))
    rc, _, err = _cli(capsys, "evaluate", "r1", "r2")
    assert rc == 2 and err == "statespaces evaluate: error: first part second part\n", err


def test_evaluate_of_an_ensemble_passes_data_name(capsys, monkeypatch):
    """`evaluate R1 R2 --data.name PATH` scores the ensemble on PATH."""
    calls = _fake_ensemble(monkeypatch)
    rc, _, _ = _cli(capsys, "evaluate", "r1", "r2", "--data.name", "ucr:Other")
    assert rc == 0 and calls == [(["r1", "r2"], "ucr:Other")], calls
