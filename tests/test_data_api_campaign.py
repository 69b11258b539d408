"""Defects a new-user campaign found in the data API (2026-12-07), each pinned by a test that fails without its fix
(the file-format ones are in tests/test_data_ucr.py)."""
from __future__ import annotations

import numpy as np
import pytest

from statespaces.data import get_dataset
from statespaces.data.digits import load_digits_sequences
from statespaces.data.sampler import BucketBatchSampler
from statespaces.data.synthetic import make_copying


def test_get_dataset_names_a_missing_file_as_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file or folder at"):
        get_dataset(str(tmp_path / "nope" / "X_TRAIN.tsv"))


def test_bucket_sampler_refuses_lengths_below_one():
    with pytest.raises(ValueError, match="example 0 has -1"):
        BucketBatchSampler([-1, 0, 3], 2)
    with pytest.raises(ValueError, match="lengths is empty"):
        BucketBatchSampler([], 2)
    with pytest.raises(ValueError, match="must be integers"):
        BucketBatchSampler([1.5, 2.0], 2)
    assert sorted(i for b in BucketBatchSampler([3, 4, 5], 2) for i in b) == [0, 1, 2]


def test_digits_seed_is_checked_by_the_project():
    with pytest.raises(TypeError, match="seed must be an integer"):
        load_digits_sequences(seed=1.5)


def test_chorales_refuse_fractions_that_empty_a_split():
    pytest.importorskip("music21")
    from statespaces.data.chorales import load_chorales

    with pytest.raises(ValueError, match="leave the valid and test split"):
        load_chorales(fractions=(1, 0, 0))


def test_copying_layout_is_as_documented():
    """symbols, delay - 1 blanks, the delimiter at n_tokens + delay - 1, n_tokens blanks (the docstring said delay
    blanks, then the delimiter)."""
    ids = make_copying(4, 3, 5, 8, np.random.default_rng(0))["ids"]
    n_tokens, delay = 3, 5
    assert ids.shape[1] == 2 * n_tokens + delay
    assert (ids[:, :n_tokens] >= 1).all() and (ids[:, :n_tokens] <= 8).all()
    assert (ids[:, n_tokens:n_tokens + delay - 1] == 0).all()
    assert (ids[:, n_tokens + delay - 1] == 9).all() and (ids[:, n_tokens + delay:] == 0).all()
