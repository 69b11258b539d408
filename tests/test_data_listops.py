"""ListOps generator (statespaces.data.listops) checked by an independent stack evaluator."""
import numpy as np
import pytest
import torch

from statespaces.data import listops as lo


def test_stack_evaluator_on_handwritten_expressions():
    cases = {
        "7": 7,
        "[MAX 2 9 [MIN 4 7 ] 0 ]": 9,
        "[MIN 3 [MAX 5 8 ] 1 ]": 1,
        "[MED 1 9 4 ]": 4,
        "[MED 1 9 4 6 ]": 5,          # (4 + 6) // 2
        "[MED 2 3 ]": 2,              # (2 + 3) // 2
        "[SM 9 8 7 ]": 4,             # 24 % 10
        "[SUM_MOD 5 5 [SM 3 4 ] ]": 7,
        "[MAX [MED [SM 1 2 ] 8 5 ] [MIN 9 6 ] ]": 6,
    }
    for text, value in cases.items():
        ids = lo.tokenize(text)
        assert lo.evaluate_tokens(ids + [lo.PAD] * 3) == value, text
    assert lo.detokenize(lo.tokenize("[SM 3 [MED 1 5 8 ] ]")) == "[SM 3 [MED 1 5 8 ] ]"
    for bad in ("[MAX 1 2", "1 2", "]", "[MIN ]"):
        with pytest.raises(ValueError):
            lo.evaluate_tokens(lo.tokenize(bad))
    with pytest.raises(ValueError, match="unknown ListOps token"):
        lo.tokenize("[AVG 1 2 ]")


def test_generated_labels_match_independent_evaluator():
    d = lo.generate_listops(300, min_length=10, max_length=120, seed=5)
    for ids, n, label in zip(d["ids"], d["lengths"], d["labels"]):
        assert 10 <= n <= 120 and (ids[n:] == lo.PAD).all() and (ids[:n] != lo.PAD).all()
        assert lo.evaluate_tokens(ids) == label
    assert len(np.unique(d["labels"])) == 10
    # depth limit respected
    depth = np.cumsum(np.isin(d["ids"], range(lo.OP0, lo.OP0 + 4)).astype(int) - (d["ids"] == lo.CLOSE), axis=1)
    assert depth.max() <= 10


def test_long_sequences_and_dataset():
    d = lo.load_listops(n_train=6, n_test=3, min_length=1500, max_length=2000, seed=1)
    ids, y, lengths = d.train.tensors
    assert ids.shape == (6, 2000) and d.length == 2000 and d.d_input == 15 and d.n_classes == 10
    assert ((lengths >= 1500) & (lengths <= 2000)).all()
    for row, label in zip(ids, y):
        assert lo.evaluate_tokens(row.tolist()) == int(label)
    x, yy, n = d.train[0]
    assert x.shape == (2000, 15) and torch.equal(x[int(n):], torch.zeros(2000 - int(n), 15))
    assert torch.equal(x[: int(n)].sum(1), torch.ones(int(n)))
    again = lo.load_listops(n_train=6, n_test=3, min_length=1500, max_length=2000, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(d.train.tensors, again.train.tensors))
    with pytest.raises(ValueError, match="min_length"):
        lo.generate_listops(2, min_length=50, max_length=10)
