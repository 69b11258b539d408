"""Synthetic memory tasks (statespaces.data.synthetic): determinism and labels checked from the inputs."""
import numpy as np
import pytest
import torch

from statespaces.data import synthetic as syn
from statespaces.data.base import TokenDataset


def _same(a, b):
    return all(torch.equal(s, t) for s, t in zip(a.tensors, b.tensors))


@pytest.mark.parametrize("load, kw", [
    (syn.load_copying, dict(n_tokens=4, delay=20)),
    (syn.load_adding, dict(length=30)),
    (syn.load_selective_copying, dict(length=30, n_tokens=4)),
    (syn.load_associative_recall, dict(n_pairs=4, n_keys=8, n_values=6, length=40)),
])
def test_same_seed_same_data(load, kw):
    a, b, c = (load(n_train=40, n_test=10, seed=s, **kw) for s in (3, 3, 4))
    assert _same(a.train, b.train) and _same(a.test, b.test)
    assert not _same(a.train, c.train)
    assert not torch.equal(a.train.tensors[0][:10], a.test.tensors[0])  # train/test drawn independently


def test_copying_inputs_and_targets():
    d = syn.make_copying(50, n_tokens=5, delay=12, n_symbols=6, seed=0)
    ids, t = d["ids"], d["targets"]
    assert ids.shape == (50, 22) and t.shape == (50, 5)
    np.testing.assert_array_equal(ids[:, :5] - 1, t)                     # memorized block
    assert (ids[:, 16] == 7).all() and (np.delete(ids[:, 5:], 11, axis=1) == 0).all()  # blanks + delimiter
    data = syn.load_copying(n_train=20, n_test=5, n_tokens=5, delay=12, n_symbols=6, target="sequence")
    ids_tr, y = data.train.tensors
    assert data.task == "seq2seq" and y.shape == (20, 5)
    np.testing.assert_array_equal(ids_tr[:, :5].long().numpy() - 1, y.numpy())
    cls = syn.load_copying(n_train=20, n_test=5, n_tokens=5, delay=12, n_symbols=6, recall_index=2)
    ids_tr, y = cls.train.tensors
    assert cls.task == "classification" and torch.equal(ids_tr[:, 2].long() - 1, y)
    # items are one-hot; blank (0) is the zero vector
    x0, y0 = cls.train[0]
    assert x0.shape == (22, cls.d_input) == (22, 7) and x0.dtype == torch.float32
    assert torch.equal(x0.sum(1), (ids_tr[0] != 0).float())
    assert int(x0[2].argmax()) + 1 == int(ids_tr[0, 2])


def test_adding_targets_recomputed_from_inputs():
    d = syn.make_adding(100, length=40, seed=1)
    x, t = d["x"], d["targets"]
    marks = x[..., 1]
    assert (marks.sum(1) == 2).all()
    first, second = np.argmax(marks[:, :20], 1), 20 + np.argmax(marks[:, 20:], 1)
    assert marks[np.arange(100), first].all() and marks[np.arange(100), second].all()
    np.testing.assert_allclose((x[..., 0] * marks).sum(1), t, rtol=1e-6)
    data = syn.load_adding(n_train=64, n_test=8, length=40, n_bins=4)
    xs, y = data.train.tensors
    sums = (xs[..., 0] * xs[..., 1]).sum(1).numpy()
    assert torch.equal(y, torch.from_numpy(np.clip(np.floor(sums * 2), 0, 3).astype(np.int64)))
    reg = syn.load_adding(n_train=8, n_test=8, length=40, target="regression")
    assert reg.task == "regression" and reg.train.tensors[1].dtype == torch.float32


def test_selective_copying_targets_in_order():
    d = syn.make_selective_copying(30, length=25, n_tokens=4, n_symbols=5, seed=2)
    ids = d["ids"]
    assert ids.shape == (30, 29) and (ids[:, 25:] == 6).all()
    body = ids[:, :25]
    for row, tgt in zip(body, d["targets"]):
        np.testing.assert_array_equal(row[row != 0] - 1, tgt)   # non-blank symbols, left to right


def test_associative_recall_answer_found_by_scanning():
    n_keys, n_values = 10, 7
    d = syn.make_associative_recall(200, n_pairs=5, n_keys=n_keys, n_values=n_values, length=30, seed=3)
    for row, tgt in zip(d["ids"], d["targets"]):
        query = row[-1]
        assert 1 <= query <= n_keys
        pos = [i for i in range(len(row) - 1) if row[i] == query]
        assert len(pos) == 1 and pos[0] % 2 == 0                       # keys are distinct
        assert row[pos[0] + 1] - n_keys - 1 == tgt
    data = syn.load_associative_recall(n_train=16, n_test=4, n_pairs=5, n_keys=n_keys, n_values=n_values)
    assert isinstance(data.train, TokenDataset) and data.length == 11 and data.d_input == n_keys + n_values


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_keys >= n_pairs"):
        syn.make_associative_recall(4, n_pairs=5, n_keys=4)
    with pytest.raises(ValueError, match="does not fit"):
        syn.make_selective_copying(4, length=3, n_tokens=5)
    with pytest.raises(ValueError, match="target"):
        syn.load_adding(target="sequence")
    with pytest.raises(ValueError, match="n_train must be an integer >= 1"):
        syn.load_copying(n_train=0)
