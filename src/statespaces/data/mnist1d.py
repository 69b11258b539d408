r"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"), regenerated offline.

The ``mnist1d`` package (PyPI, Apache-2.0) ships only the generator: ten 1-D digit templates that
are padded, translated, sheared, scaled and corrupted with correlated and i.i.d. noise, then
resampled to 40 steps. ``make_dataset(get_dataset_args())`` rebuilds the standard dataset
(4,000 train + 1,000 test, seed 42, 10 classes) in about two seconds without the network;
``get_dataset`` would download a pickle and write it to the working directory, so it is never
used here. Nothing is cached on disk (an in-process cache avoids regenerating within one run).

Install: ``pip install mnist1d``. The package imports ``requests``, ``matplotlib.pyplot`` and
``scipy`` at import time (they are its declared dependencies); the generator itself needs numpy
and scipy. ``make_dataset`` seeds the *global* ``random`` and ``numpy.random`` states; this
module saves and restores them so that loading MNIST-1D does not change other random streams.

Shapes: x (n, 40, 1) float32 (the package already standardizes the whole set to mean 0, std 1),
y (n,) int64 in 0..9.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .base import SequenceData, check_count

INSTALL_HINT = "pip install mnist1d"


def _mnist1d_data_module():
    try:
        from mnist1d import data as m1d  # noqa: F401 - imports requests and matplotlib.pyplot too
    except ImportError as e:
        raise ImportError(
            f"MNIST-1D needs the 'mnist1d' package: `{INSTALL_HINT}` (it imports requests, matplotlib and scipy "
            f"at import time); the import failed with: {e}"
        ) from e
    return m1d


@lru_cache(maxsize=4)
def _generate(num_samples: int, data_seed: int, train_split: float, shuffle_seq: bool) -> Tuple[np.ndarray, ...]:
    m1d = _mnist1d_data_module()
    args = m1d.get_dataset_args()
    args.num_samples = num_samples
    args.seed = data_seed
    args.train_split = train_split
    args.shuffle_seq = shuffle_seq
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = m1d.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    out = (np.asarray(d["x"], dtype=np.float32), np.asarray(d["y"], dtype=np.int64),
           np.asarray(d["x_test"], dtype=np.float32), np.asarray(d["y_test"], dtype=np.int64))
    for a in out:
        a.setflags(write=False)
    return out


def load_mnist1d(
    num_samples: int = 5000,
    train_split: float = 0.8,
    data_seed: int = 42,
    shuffle_seq: bool = False,
    seed: int = 0,
) -> SequenceData:
    """MNIST-1D as sequences (n, 40, 1).

    Args:
        num_samples: total examples (the package's default 5000 -> 4000 train / 1000 test).
        train_split: fraction used for training.
        data_seed: generator seed (42 = the published dataset).
        shuffle_seq: apply the package's fixed random permutation of the 40 steps (a "permuted" variant).
        seed: unused (the data depends only on ``data_seed``); accepted for the ``DATASETS`` interface,
            which passes the trainer's seed.
    """
    num_samples = check_count("num_samples", num_samples, 10)
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"train_split must be in (0, 1), got {train_split}")
    xtr, ytr, xte, yte = _generate(num_samples, int(data_seed), float(train_split), bool(shuffle_seq))

    def to_ds(x, y):
        return TensorDataset(torch.from_numpy(x.copy())[..., None], torch.from_numpy(y.copy()))

    return SequenceData(
        train=to_ds(xtr, ytr), test=to_ds(xte, yte), d_input=1, n_classes=10, length=xtr.shape[1],
        name="mnist1d" + ("_shuffled" if shuffle_seq else ""), classes=[str(k) for k in range(10)],
        info={"source": "mnist1d.make_dataset (offline regeneration)", "data_seed": data_seed,
              "num_samples": num_samples, "train_split": train_split},
    )
