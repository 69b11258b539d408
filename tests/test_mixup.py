"""Mixup and label smoothing (issue 18, regularisers of the generic recipe): the mixed batch and loss
against direct formulas, determinism by (seed, step) and resume, the smoothed cross-entropy against
its definition, and the config refusals."""
import math
from types import SimpleNamespace

import pytest
import torch
from test_engine import _setup, _StopAt
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from statespaces.train.config import ConfigError, TrainConfig
from statespaces.train.engine import Callback, fit
from statespaces.train.loop import _objective
from statespaces.train.mixup import MixUp
from statespaces.train.tasks import Classification


def _batch(B=6, L=5, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, L, C, generator=g, dtype=torch.float64), torch.randint(0, 4, (B,), generator=g),
            torch.randint(1, L + 1, (B,), generator=g))


def test_mixup_is_a_convex_combination_with_a_permutation():
    x, y, n = _batch()
    mixed, n2, partners, lam = MixUp(0.4, seed=3)(x, y, n, step=11)
    assert 0.0 <= lam <= 1.0 and mixed.shape == x.shape and mixed.dtype == x.dtype
    # recover each row's partner j from the inputs alone: mixed[b] = lam x[b] + (1 - lam) x[j]
    rest = (mixed - lam * x) / (1 - lam)                                   # (B, L, C): x[perm]
    dist = (rest[:, None] - x[None]).flatten(2).abs().amax(-1)             # (B, B)
    perm = dist.argmin(1)
    assert sorted(perm.tolist()) == list(range(len(x)))                    # a permutation
    assert torch.allclose(rest, x[perm], atol=1e-9)
    assert torch.equal(partners, y[perm]) and torch.equal(n2, torch.maximum(n, n[perm]))
    assert MixUp(0.4, seed=3)(x, y, None, step=11)[1] is None


def test_mixup_draws_depend_on_seed_and_step_only():
    x, y, n = _batch()
    a = MixUp(0.2, seed=1)(x, y, n, 5)
    torch.manual_seed(99)                                                  # the global RNG is not used
    b = MixUp(0.2, seed=1)(x, y, n, 5)
    c = MixUp(0.2, seed=1)(x, y, n, 6)
    assert torch.equal(a[0], b[0]) and a[3] == b[3] and torch.equal(a[2], b[2])
    assert a[3] != c[3]
    lams = [MixUp(0.2, seed=0)(x, y, n, s)[3] for s in range(400)]         # Beta(0.2, 0.2): mean 1/2, U-shaped
    assert abs(sum(lams) / len(lams) - 0.5) < 0.06
    assert sum(min(v, 1 - v) < 0.1 for v in lams) > 0.5 * len(lams)


@pytest.mark.parametrize("alpha", [0, -1.0, math.nan, math.inf, True])
def test_mixup_refuses_a_bad_alpha(alpha):
    with pytest.raises(ValueError, match="mixup: alpha="):
        MixUp(alpha)


def test_mixup_refuses_tokens_and_unmatched_labels():
    with pytest.raises(ValueError, match="float series"):
        MixUp(0.2)(torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1]), None, 0)
    with pytest.raises(ValueError, match=r"labels of shape \(B,\) = \(2,\)"):
        MixUp(0.2)(torch.ones(2, 3, 1), torch.tensor([0, 1, 1]), None, 0)


class _Record(Callback):
    def __init__(self):
        self.losses = []

    def on_step_end(self, state):
        self.losses.append(state.loss)


def test_fit_with_mixup_takes_the_mixed_loss():
    """The step's loss is lam CE(f(x~), y) + (1 - lam) CE(f(x~), y_perm), computed before the update."""
    model, loader, opt, sched = _setup(epoch_seeded=True)
    for group in opt.param_groups:
        group["lr"] = 0.0
    sched = None
    mix = MixUp(0.3, seed=2)
    rec = _Record()
    fit(model, loader, opt, epochs=1, scheduler=sched, callbacks=[rec], mixup=mix)
    model.train()
    want = []
    for step, (x, y) in enumerate(loader):
        xm, _, partners, lam = mix(x, y, None, step)
        out = model(xm)
        want.append((lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, partners)).item())
    assert rec.losses == pytest.approx(want, rel=1e-6)


def test_resume_with_mixup_equals_the_uninterrupted_run():
    mix = MixUp(0.2, seed=1)
    whole, loader, opt, sched = _setup(epoch_seeded=True)
    fit(whole, loader, opt, epochs=2, scheduler=sched, mixup=mix)
    part, loader, opt, sched = _setup(epoch_seeded=True)
    assert fit(part, loader, opt, epochs=2, scheduler=sched, callbacks=[_StopAt(4)], mixup=mix).step == 4
    torch.manual_seed(123)
    assert fit(part, loader, opt, epochs=2, scheduler=sched, start_step=4, mixup=mix).step == 6
    for (name, p), q in zip(whole.named_parameters(), part.parameters()):
        assert torch.equal(p, q), name


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (7,), generator=g)
    eps = 0.2
    target = (1 - eps) * F.one_hot(y, 5).double() + eps / 5
    want = -(target * out.log_softmax(-1)).sum(-1).mean()
    task = Classification(label_smoothing=eps)
    assert task.train_loss(out, y).item() == pytest.approx(want.item(), rel=1e-6)
    assert task.loss(out, y).item() == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)   # evaluation: plain
    assert Classification().train_loss(out, y).item() == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert "label_smoothing=0.2" in repr(task) and repr(Classification()) == "Classification()"
    for bad in (1.0, -0.1, math.nan, True, "0.1"):
        with pytest.raises(ValueError, match="label_smoothing: got"):
            Classification(label_smoothing=bad)


def _data(task, x):
    return SimpleNamespace(task=task, train=TensorDataset(x, torch.zeros(len(x), dtype=torch.long)))


def test_objective_builds_and_refuses():
    series = torch.zeros(4, 6, 2)
    cfg = TrainConfig.from_dict({"trainer": {"label_smoothing": 0.1, "mixup": 0.2, "seed": 7}})
    task, mix = _objective(cfg, _data("classification", series))
    assert isinstance(task, Classification) and task.label_smoothing == 0.1 and mix == MixUp(0.2, seed=7)
    task, mix = _objective(TrainConfig(), _data("classification", series))
    assert task.label_smoothing == 0.0 and mix is None
    for key in ("label_smoothing", "mixup"):
        one = TrainConfig.from_dict({"trainer": {key: 0.1}})
        with pytest.raises(ConfigError, match=rf"trainer\.{key}=0\.1: .* is a regression task; .*set it to 0"):
            _objective(one, _data("regression", series))
    tokens = TrainConfig.from_dict({"trainer": {"mixup": 0.2}})
    with pytest.raises(ConfigError, match=r"trainer\.mixup=0\.2: .*torch\.int64 tensor .*float time series"):
        _objective(tokens, _data("classification", torch.zeros(4, 6, dtype=torch.long)))
