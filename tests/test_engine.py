"""The training engine (issue 19 item 2): ``fit`` against a hand-written loop, resume inside an epoch,
the divergence check, the tasks' losses and scores against direct formulas, and the layer options
that replaced in-place model surgery (``c_scale``, ``imag_scale``, ``trainable_ssm``)."""
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from statespaces.data.augment import SeriesAugment
from statespaces.layers import S4, S4D
from statespaces.optim import param_groups
from statespaces.train.engine import Callback, LossCurve, OnStep, evaluate, fit, warmup_cosine
from statespaces.train.recipes import Batches, adamw_cosine, fit_dataset, score
from statespaces.train.tasks import Classification, Forecast, LanguageModel, Regression, Seq2Seq, get_task


class _Tiny(nn.Module):
    """(B, L, 2) -> (B, 3): one S4D layer, mean pool, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(2, 4)
        self.ssm = S4D(4, 4, seed=0)
        self.head = nn.Linear(4, 3)

    def forward(self, x, lengths=None):
        return self.head(self.ssm(self.enc(x)).mean(1))


def _data(n=24, L=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, L, 2, generator=g), torch.randint(0, 3, (n,), generator=g))


def _setup(epoch_seeded=False):
    torch.manual_seed(0)
    model = _Tiny()
    if epoch_seeded:   # the order is a function of (seed, epoch), as in `statespaces train`
        sampler = DistributedSampler(_data(), num_replicas=1, rank=0, shuffle=True, seed=1)
        loader = DataLoader(_data(), batch_size=8, sampler=sampler)
    else:
        loader = DataLoader(_data(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
    opt, sched = adamw_cosine(model, 2 * len(loader), lr=1e-2, ssm_lr=1e-3, weight_decay=0.01, warmup=2)
    return model, loader, opt, sched


def test_fit_equals_a_hand_written_loop():
    model, loader, opt, sched = _setup()
    losses = LossCurve()
    state = fit(model, loader, opt, "classification", epochs=2, scheduler=sched, grad_clip=0.5, callbacks=[losses])
    ref, loader2, opt2, sched2 = _setup()
    ref_losses = []
    for _ in range(2):
        for x, y in loader2:
            loss = nn.functional.cross_entropy(ref(x), y)
            opt2.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
            opt2.step()
            sched2.step()
            ref_losses.append(loss.item())
    assert state.step == 6 and losses.losses == ref_losses
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), n
    assert state.epoch_losses[-1] == pytest.approx(sum(ref_losses[3:]) / 3)


class _StopAt(Callback):
    def __init__(self, step):
        self.at = step

    def on_step_end(self, state):
        state.stop = state.step == self.at


@pytest.mark.parametrize("augment", [None, SeriesAugment(crop=0.8, scale=0.1, jitter=0.05, seed=1)],
                         ids=["plain", "augmented"])
def test_resume_inside_an_epoch_equals_the_uninterrupted_run(augment):
    """Also with train-time augmentation: its draws are a function of (seed, step), not of the RNG."""
    whole, loader, opt, sched = _setup(epoch_seeded=True)
    fit(whole, loader, opt, epochs=2, scheduler=sched, augment=augment)
    part, loader, opt, sched = _setup(epoch_seeded=True)
    assert fit(part, loader, opt, epochs=2, scheduler=sched, callbacks=[_StopAt(4)], augment=augment).step == 4
    torch.manual_seed(123)   # the global RNG moved on: augmentation must not depend on it
    done = fit(part, loader, opt, epochs=2, scheduler=sched, start_step=4, augment=augment)
    assert done.step == 6
    for (n, p), q in zip(whole.named_parameters(), part.parameters()):
        assert torch.equal(p, q), n


def test_divergence_names_step_and_parameter():
    model, loader, opt, sched = _setup()
    with torch.no_grad():
        model.ssm.log_dt[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"at step 0 \(epoch 1\).*ssm\.log_dt.*Lower the lr"):
        fit(model, loader, opt, divergence_hint="lower the lr")


def test_fit_rejects_bad_arguments():
    model, loader, opt, _ = _setup()
    with pytest.raises(ValueError, match="epochs=-1"):
        fit(model, loader, opt, epochs=-1)
    with pytest.raises(ValueError, match="grad_clip=-1"):
        fit(model, loader, opt, grad_clip=-1.0)
    with pytest.raises(ValueError, match="no batch"):
        fit(model, [], opt)
    with pytest.raises(ValueError, match="task: got 'pixels'"):
        get_task("pixels")
    with pytest.raises(ValueError, match="steps=0"):
        Batches(lambda i: i, 0)
    with pytest.raises(ValueError, match="total=0"):
        warmup_cosine(0)


def test_warmup_cosine_formula():
    f = warmup_cosine(10, 2)
    assert [f(0), f(1)] == [0.5, 1.0]
    for s in range(2, 12):
        assert f(s) == pytest.approx(0.5 * (1 + math.cos(math.pi * min(1.0, (s - 2) / 8))))


def test_fit_dataset_matches_fit_and_on_step_sees_every_step():
    torch.manual_seed(0)
    a = _Tiny()
    seen = []
    state = fit_dataset(a, _data(), 2, 1e-2, batch_size=8, seed=3, callbacks=[OnStep(seen.append)])
    torch.manual_seed(0)
    b = _Tiny()
    loader = DataLoader(_data(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.AdamW(param_groups(b, lr=1e-2, weight_decay=0.05, ssm_lr=1e-3))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / 6))))
    fit(b, loader, opt, epochs=2, scheduler=sched)
    assert seen == [1, 2, 3, 4, 5, 6] and state.step == 6 and not a.training
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    hits = sum(int((b(x).argmax(-1) == y).sum()) for x, y in DataLoader(_data(seed=5), batch_size=7))
    assert score(a, _data(seed=5)) == hits / 24


def test_task_scores_against_direct_formulas():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, generator=g)
    y = torch.randn(10, generator=g)
    model = nn.Identity()   # the data are the outputs
    res = evaluate(model, DataLoader(TensorDataset(x[:, :1], y), batch_size=3), task=Regression())
    sse = float(((x[:, 0].double() - y.double()) ** 2).sum())
    assert res["acc"] == pytest.approx(1 - sse / float(((y - y.mean()) ** 2).sum()), rel=1e-5)
    assert res["loss"] == pytest.approx(sse / 10, rel=1e-6)
    # seq2seq: loss per token and accuracy per token over the last k steps
    logits = torch.randn(6, 5, 4, generator=g)
    labels = torch.randint(0, 4, (6, 2), generator=g)
    res = evaluate(model, DataLoader(TensorDataset(logits, labels), batch_size=4), task="seq2seq")
    direct = nn.functional.cross_entropy(logits[:, -2:].reshape(-1, 4), labels.reshape(-1))
    assert res["loss"] == pytest.approx(float(direct), rel=1e-5)
    assert res["acc"] == pytest.approx(float((logits[:, -2:].argmax(-1) == labels).float().mean()))
    # forecast: MSE per entry, R^2 over every entry
    out, tgt = torch.randn(5, 3, 2, generator=g), torch.randn(5, 3, 2, generator=g)
    res = evaluate(model, DataLoader(TensorDataset(out, tgt), batch_size=2), task=Forecast())
    assert res["loss"] == pytest.approx(float(((out - tgt) ** 2).mean()), rel=1e-5)
    with pytest.raises(ValueError, match=r"output shape \(5, 3, 2\) differs from the target shape \(5, 3\)"):
        Forecast().loss(out, tgt[..., 0])
    assert isinstance(get_task("classification"), Classification) and not get_task(Seq2Seq()).pooled


def test_forecast_reports_each_channels_r2():
    """A pooled R^2 can hide a channel worse than its own mean when the channels' scales differ (the audit's case:
    pooled 0.51, per channel -0.005 and -354): evaluations also report each channel's R^2, against direct formulas,
    over several batches; a channel with constant targets reports nan. The CLI prints them."""
    from statespaces.cli import _print_channels

    g = torch.Generator().manual_seed(1)
    tgt = torch.randn(7, 4, 3, generator=g, dtype=torch.float64) * torch.tensor([100.0, 0.01, 1.0], dtype=torch.float64)
    tgt[..., 2] = 0.5                                                     # constant: no variance to explain
    out = tgt + torch.randn(7, 4, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.1, 0.3], dtype=torch.float64)
    res = evaluate(nn.Identity(), DataLoader(TensorDataset(out, tgt), batch_size=3), task=Forecast())
    y, o = tgt.reshape(-1, 3), out.reshape(-1, 3)
    for d in range(2):
        direct = 1 - float(((o[:, d] - y[:, d]) ** 2).sum()) / float(((y[:, d] - y[:, d].mean()) ** 2).sum())
        assert res["r2_channels"][d] == pytest.approx(direct, rel=1e-12, abs=1e-12)
    assert res["r2_channels"][1] < 0 < 0.99 < res["r2_channels"][0] and math.isnan(res["r2_channels"][2])
    assert res["acc"] > 0.99                                               # pooled: channel 0's scale dominates
    # pooled R^2 around the mean of all entries (channels with different offsets: a per-channel centring differs)
    off = torch.randn(7, 4, 2, generator=g, dtype=torch.float64) + torch.tensor([0.0, 10.0], dtype=torch.float64)
    pred = off.mean((0, 1)).expand_as(off).clone()                      # each channel's mean: pooled R^2 ~ 0.96
    pooled = evaluate(nn.Identity(), DataLoader(TensorDataset(pred, off), batch_size=3), task=Forecast())
    direct = 1 - float(((pred - off) ** 2).sum()) / float(((off - off.mean()) ** 2).sum())
    assert pooled["acc"] == pytest.approx(direct, rel=1e-12) and direct > 0.5
    lines = []
    import builtins
    real = builtins.print
    builtins.print = lambda *a, **k: lines.append(" ".join(map(str, a)))
    try:
        _print_channels(res)
        _print_channels({**res, "r2_channels": [0.5] * 20 + [-3.0, math.nan]})
        _print_channels({"acc": 0.9})
    finally:
        builtins.print = real
    assert lines[0].startswith("test R^2 per channel: 0: 0.99") and "1: -" in lines[0] and "2: nan" in lines[0]
    assert lines[1] == ("test R^2 per channel (22 channels): worst 20: -3.0000, 0: 0.5000, 1: 0.5000, 2: 0.5000, "
                        "3: 0.5000; best 0.5000; 1 with constant targets (nan)") and len(lines) == 2


class _Bigram(nn.Module):
    """A language model with the ``loss``/``nll`` interface: next-token logits from the current token."""

    def __init__(self, V=5):
        super().__init__()
        self.emb = nn.Embedding(V, V)

    def nll(self, x, y=None, lengths=None):
        logits = self.emb(x[:, :-1])
        total = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                            reduction="sum")
        return total, torch.tensor(x[:, 1:].numel())

    def loss(self, x, y=None, lengths=None):
        total, count = self.nll(x, y, lengths)
        return total / count


def test_language_model_task_trains_and_scores_minus_nll():
    torch.manual_seed(0)
    lm = _Bigram()
    tokens = torch.arange(40).remainder(5).reshape(4, 10)       # 0 1 2 3 4 0 1 ...: learnable
    before = evaluate(lm, [(tokens,)], task="lm")
    opt = torch.optim.Adam(lm.parameters(), lr=0.1)
    fit(lm, Batches(lambda i: (tokens,), 5), opt, LanguageModel(), epochs=4)
    after = evaluate(lm, [(tokens,)], task="lm")
    assert after["loss"] < before["loss"] and after["acc"] == -after["loss"]
    with torch.no_grad():
        assert after["loss"] == pytest.approx(float(lm.loss(tokens)), rel=1e-6)


def test_s4d_scale_options_equal_editing_the_initialised_layer():
    edited = S4D(4, 8, init="lin", seed=1)
    with torch.no_grad():
        edited.C.mul_(100.0)
        edited.A_imag.mul_(100.0)
    built = S4D(4, 8, init="lin", seed=1, c_scale=100.0, imag_scale=100.0)
    assert torch.equal(edited.C, built.C) and torch.equal(edited.A_imag, built.A_imag)
    assert torch.equal(edited.kernel(16), built.kernel(16))
    with pytest.raises(ValueError, match="c_scale=nan"):
        S4D(4, 8, c_scale=float("nan"))


@pytest.mark.parametrize("make", [lambda **k: S4D(4, 8, seed=0, **k), lambda **k: S4(4, 8, seed=0, **k)])
def test_trainable_ssm_false_trains_only_c_and_d(make):
    layer = make(trainable_ssm=False)
    layer(torch.randn(2, 8, 4)).pow(2).sum().backward()
    trained = {n for n, p in layer.named_parameters() if p.grad is not None}
    assert trained == {"C", "D"}
    assert set(make().state_dict()) == set(layer.state_dict())
    with pytest.raises(TypeError, match="trainable_ssm=1"):
        make(trainable_ssm=1)


def test_warmup_constant_formula():
    from statespaces.train.engine import SCHEDULES, warmup_constant

    f = warmup_constant(10, 4)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0] and f(100) == 1.0
    assert SCHEDULES["constant"] is warmup_constant and SCHEDULES["cosine"] is warmup_cosine
    with pytest.raises(ValueError, match="total=0"):
        warmup_constant(0)


def test_task_losses_keep_float64_and_widen_half_precision():
    """Losses are computed in the outputs' precision, at least float32: float64 stays float64 (it was cast to float32),
    bfloat16/float16 autocast outputs are widened."""
    g = torch.Generator().manual_seed(0)
    out64 = torch.randn(4, 3, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 2, 1, 0])
    for task in (Classification(), Classification(label_smoothing=0.1)):
        assert task.loss(out64, y).dtype == torch.float64 and task.train_loss(out64, y).dtype == torch.float64
        assert task.loss(out64.bfloat16(), y).dtype == torch.float32
    reg = Regression()
    yr = torch.randn(4, dtype=torch.float64, generator=g)
    out1 = out64[:, :1]                       # regression: one output per example
    assert reg.loss(out1, yr).dtype == torch.float64
    torch.testing.assert_close(reg.loss(out1, yr), ((out64[:, 0] - yr) ** 2).mean(), rtol=1e-15, atol=0)
    assert reg.loss(out1.half(), yr.float()).dtype == torch.float32
    seq = torch.randn(2, 5, 3, dtype=torch.float64, generator=g)
    assert Seq2Seq().loss(seq, torch.tensor([[0, 1], [2, 2]])).dtype == torch.float64
    assert Forecast().loss(seq, torch.zeros(2, 5, 3)).dtype == torch.float64
