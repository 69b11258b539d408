"""Length-bucketed batches, passes per epoch (the ucr preset's step rule), trimmed collation, and
the series downsampling of load_ucr (statespaces.data.sampler, statespaces.data.ucr.pool_series)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Subset, TensorDataset

from statespaces.data import ucr
from statespaces.data.sampler import BucketBatchSampler, dataset_lengths, passes_for, trim_collate
from statespaces.models import SequenceClassifier


@given(min_steps=st.integers(0, 5000), epochs=st.integers(1, 60), bpp=st.integers(1, 40))
@settings(max_examples=80, deadline=None)
def test_passes_for_is_the_smallest_number_of_passes_reaching_min_steps(min_steps, epochs, bpp):
    p = passes_for(min_steps, epochs, bpp)
    assert p >= 1 and epochs * p * bpp >= min_steps
    if p > 1:                                   # one pass fewer would fall short
        assert epochs * (p - 1) * bpp < min_steps


def test_passes_for_examples_and_errors():
    assert passes_for(400, 20, 3) == 7          # ArrowHead: 36 series, batch 16 -> 3 batches a pass
    assert passes_for(400, 20, 30) == 1         # a large split: one pass per epoch
    assert passes_for(0, 5, 2) == 1
    for bad in ((-1, 5, 2), (10, 0, 2), (10, 5, 0), (1.5, 5, 2), (True, 5, 2)):
        with pytest.raises(ValueError, match="passes_for"):
            passes_for(*bad)


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


@pytest.mark.parametrize("window,passes", [(1, 1), (3, 2), (50, 1), (50, 3)])
def test_each_index_once_per_pass_and_len_matches(window, passes):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 100, (53,), generator=g)
    s = BucketBatchSampler(lengths, 8, window=window, passes=passes, seed=3)
    batches = _epoch(s, 0)
    assert len(batches) == len(s) == passes * s.batches_per_pass()
    assert all(1 <= len(b) <= 8 for b in batches)
    counts = torch.bincount(torch.tensor(sum(batches, [])), minlength=53)
    assert counts.tolist() == [passes] * 53
    # a function of (seed, epoch): the same again, another epoch or seed differs
    assert _epoch(s, 0) == batches
    assert _epoch(s, 1) != batches
    assert _epoch(BucketBatchSampler(lengths, 8, window=window, passes=passes, seed=4), 0) != batches


def test_a_whole_window_sorted_gives_batches_of_adjacent_lengths():
    lengths = torch.randperm(40) + 1                        # distinct lengths 1..40
    s = BucketBatchSampler(lengths, 5, window=100, seed=0)   # one window: the split sorted whole
    batches = sorted(_epoch(s, 0), key=lambda b: min(lengths[b].tolist()))
    for a, b in zip(batches, batches[1:]):
        assert max(lengths[a].tolist()) < min(lengths[b].tolist())
    # against plain shuffled batches: less padding (sum over batches of size x longest)
    def padded(bs):
        return sum(len(b) * int(lengths[b].max()) for b in bs)
    plain = BucketBatchSampler(lengths, 5, window=1, seed=0)
    assert padded(batches) < padded(_epoch(plain, 0))


def test_equal_length_and_unshuffled_batches():
    s = BucketBatchSampler(None, 4, n=10, shuffle=False)
    assert list(s) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    s = BucketBatchSampler(None, 4, n=10, seed=1)
    assert sorted(sum(list(s), [])) == list(range(10))


@pytest.mark.parametrize("kwargs,match", [
    (dict(lengths=None, batch_size=4), "n \\(the number"), (dict(lengths=[3, 4], batch_size=0), "batch_size"),
    (dict(lengths=[3, 4], batch_size=2, window=0), "window"), (dict(lengths=[3, 4], batch_size=2, passes=0), "passes"),
    (dict(lengths=[3.0, 4.0], batch_size=2), "integer"), (dict(lengths=[3, 4], batch_size=2, n=5), "n=5"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BucketBatchSampler(**kwargs)


@pytest.mark.slow
def test_trimmed_batches_give_the_outputs_of_the_padded_ones():
    """Cutting a batch to its longest series changes no output of a masked bidirectional model
    (the padded steps are masked), float64."""
    torch.manual_seed(0)
    n, L = 8, 30
    lengths = torch.randint(3, 18, (n,))
    x = torch.randn(n, L, 2, dtype=torch.float64) * (torch.arange(L)[None, :, None] < lengths[:, None, None])
    ds = TensorDataset(x, torch.zeros(n, dtype=torch.long), lengths)
    model = SequenceClassifier(2, 3, d_model=8, n_layers=2, layer={"kind": "s4d", "d_state": 8, "bidirectional": True},
                               dropout=0.0).double().eval()
    s = BucketBatchSampler(lengths, 4, window=10, seed=0)
    loader = DataLoader(ds, batch_sampler=s, collate_fn=trim_collate)
    with torch.no_grad():
        for idx, (xb, _, lb) in zip(s, loader):          # the loader draws the sampler's batches
            assert xb.shape[1] == int(lb.max()) < L and lb.tolist() == lengths[idx].tolist()
            torch.testing.assert_close(model(xb, lb), model(x[idx], lengths[idx]), rtol=1e-10, atol=1e-12)
    # items without lengths are collated unchanged
    plain = trim_collate([(torch.ones(5, 1), torch.tensor(0))] * 3)
    assert plain[0].shape == (3, 5, 1)


def test_dataset_lengths_of_subsets():
    ds = TensorDataset(torch.zeros(5, 3, 1), torch.zeros(5), torch.tensor([1, 2, 3, 1, 2]))
    assert dataset_lengths(ds).tolist() == [1, 2, 3, 1, 2]
    assert dataset_lengths(Subset(ds, [4, 2])).tolist() == [2, 3]
    assert dataset_lengths(TensorDataset(torch.zeros(2, 3), torch.zeros(2))) is None


# ------------------------------------------------------------------------------- downsampling


@given(n=st.integers(1, 40), k=st.integers(1, 9))
@settings(max_examples=60, deadline=None)
def test_pool_series_is_the_mean_of_each_window(n, k):
    a = np.random.default_rng(n * 10 + k).normal(size=(2, n))
    got = ucr.pool_series(a, k)
    want = np.stack([[a[c, i:i + k].mean() for i in range(0, n, k)] for c in range(2)])
    assert got.shape == (2, math.ceil(n / k))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_pool_series_rejects_bad_k():
    with pytest.raises(ValueError, match="positive integer"):
        ucr.pool_series(np.zeros((1, 4)), 0)


def test_load_ucr_max_length_pools_normalised_series(tmp_path):
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(1, n)) for n in (10, 7, 9, 4)]
    d = tmp_path / "Pool"
    d.mkdir()
    for split, part in (("TRAIN", series[:2]), ("TEST", series[2:])):
        (d / f"Pool_{split}.ts").write_text(ucr.format_ts(part, ["a", "b"], "Pool"))
    data = ucr.load_ucr(d, normalize="series", max_length=4)        # L_max 10 -> k = 3
    assert data.info["pool"] == 3 and data.length == 4
    x, _, lens = data.train.tensors
    assert lens.tolist() == [4, 3]
    for i, s in enumerate(series[:2]):
        z = (s - s.mean()) / s.std()
        np.testing.assert_allclose(x[i, : lens[i], 0].numpy(), ucr.pool_series(z, 3)[0], rtol=1e-5, atol=1e-6)
        assert float(x[i, lens[i]:].abs().sum()) == 0
    assert ucr.load_ucr(d, max_length=10).info["pool"] == 1
    with pytest.raises(ValueError, match="max_length"):
        ucr.load_ucr(d, max_length=0)


# --------------------------------------------------------------------------------- the trainer


def _toy_run(tmp_path, out, *extra):
    """The ucr preset, shrunk, on a variable-length two-class file of 16 + 8 series (lengths 5..29)."""
    from statespaces.train import build_config

    d = tmp_path / "Var"
    if not d.is_dir():
        rng = np.random.default_rng(1)
        series = [rng.normal(size=(1, int(n))) for n in rng.integers(5, 30, 24)]
        d.mkdir()
        labels = ["a", "b"] * 12
        (d / "Var_TRAIN.ts").write_text(ucr.format_ts(series[:16], labels[:16], "Var"))
        (d / "Var_TEST.ts").write_text(ucr.format_ts(series[16:], labels[16:], "Var"))
    return build_config("ucr", overrides=[
        ("data.name", str(d)), ("model.d_model", "4"), ("model.n_layers", "1"), ("model.layer.d_state", "4"),
        ("trainer.epochs", "2"), ("trainer.min_steps", "9"), ("trainer.batch_size", "4"),
        ("trainer.out", str(tmp_path / out)), ("trainer.tensorboard", "off"), ("trainer.compile", "off"), *extra])


@pytest.mark.slow
def test_trainer_takes_min_steps_with_bucketed_batches(tmp_path):
    """The ucr preset on a variable-length file: trainer.min_steps and trainer.bucket make the run
    take epochs x passes x batches-per-pass steps, at least min_steps."""
    from statespaces.train import train

    s = train(_toy_run(tmp_path, "run"), progress=False)
    assert s["passes_per_epoch"] == passes_for(9, 2, 4) == 2 and s["steps"] == 2 * 2 * 4 >= 9
    meta = json.loads((tmp_path / "run" / "best" / "meta.json").read_text())
    assert meta["epoch"] == 2 and meta["step"] == 16


@pytest.mark.slow
def test_bucketed_run_resumed_mid_epoch_equals_uninterrupted(tmp_path, monkeypatch):
    """Killed in the middle of an epoch (step 9 of 16) and resumed: the same weights, bit for bit
    (the batch order is a function of (seed, epoch), and the loader does not draw from the global
    RNG that dropout uses)."""
    import statespaces.train.loop as loop
    from statespaces.train import train
    from statespaces.train.checkpoint import load_checkpoint

    train(_toy_run(tmp_path, "a"), progress=False)
    real_save, calls = loop._Checkpoints.save, {"n": 0}

    def crash(self, *a, **k):
        real_save(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 4:     # saves at steps 3, 6, 8 (end of epoch 1), 9: killed inside epoch 2
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(loop._Checkpoints, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_toy_run(tmp_path, "b", ("trainer.checkpoint_every", "3")), progress=False)
    monkeypatch.setattr(loop._Checkpoints, "save", real_save)
    train(_toy_run(tmp_path, "b", ("trainer.checkpoint_every", "3")), resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / r / "best")[0] for r in ("a", "b"))
    for k in a:
        if k.startswith("model."):
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_every_pass_of_every_epoch_draws_its_own_order():
    """With several passes per epoch, the pass orders of all epochs differ (pass p of epoch e is seeded by
    e * passes + p: epoch 1's first pass is not epoch 0's second)."""
    from statespaces.data.sampler import BucketBatchSampler

    s = BucketBatchSampler(list(range(1, 41)), batch_size=4, window=2, passes=2, seed=0)
    orders = []
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        per_pass = len(batches) // 2
        orders += [tuple(map(tuple, batches[:per_pass])), tuple(map(tuple, batches[per_pass:]))]
    assert len(set(orders)) == len(orders)


def test_trim_collate_cuts_to_the_longest_series_of_the_batch():
    from statespaces.data.sampler import trim_collate

    items = [(torch.ones(6, 1), 0, 3), (torch.ones(6, 1), 1, 5)]
    x, y, lengths = trim_collate(items)
    assert tuple(x.shape) == (2, 5, 1) and lengths.tolist() == [3, 5]
    x, y = trim_collate([(torch.ones(6, 1), 0), (torch.ones(6, 1), 1)])                # no lengths: unchanged
    assert tuple(x.shape) == (2, 6, 1)
