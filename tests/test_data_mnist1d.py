"""MNIST-1D regenerated offline with the mnist1d package (statespaces.data.mnist1d)."""
import random

import numpy as np
import pytest
import torch

pytest.importorskip("mnist1d", reason="mnist1d not installed: `pip install mnist1d`")

from statespaces.data.mnist1d import load_mnist1d  # noqa: E402


def test_small_regeneration_shapes_determinism_and_global_rng_untouched():
    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    d = load_mnist1d(num_samples=300)
    assert np.random.rand() == expect_np and random.random() == expect_py  # global RNG states restored
    x, y = d.train.tensors
    assert x.shape == (240, 40, 1) and len(d.test) == 60 and x.dtype == torch.float32 and y.dtype == torch.int64
    assert d.length == 40 and d.n_classes == 10 and set(y.tolist()) == set(range(10))
    again = load_mnist1d(num_samples=300, seed=99)   # the trainer's seed does not change the data
    assert torch.equal(again.train.tensors[0], x)
    other = load_mnist1d(num_samples=300, data_seed=7)
    assert not torch.equal(other.train.tensors[0], x)
    with pytest.raises(ValueError, match="train_split"):
        load_mnist1d(train_split=1.5)


def test_missing_package_error_names_it(monkeypatch):
    import builtins

    from statespaces.data import mnist1d as m

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("mnist1d"):
            raise ImportError("No module named 'mnist1d'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    m._generate.cache_clear()
    with pytest.raises(ImportError, match="pip install mnist1d"):
        m.load_mnist1d(num_samples=100)
