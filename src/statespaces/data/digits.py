r"""Sequential digits: scikit-learn's bundled 8x8 handwritten digits read pixel by pixel (L = 64).

Real handwriting (UCI optdigits, 1797 images, 10 classes) shipped inside scikit-learn, so it
needs no download. This is the default task of ``statespaces train`` and the small stand-in for
the thesis' sequential MNIST (§7.3.1). ``permute=True`` applies one fixed random permutation of
the 64 pixels (the pMNIST protocol).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .._checks import check_int
from .base import SequenceData  # re-exported here for backward compatibility


def load_digits_sequences(permute: bool = False, test_fraction: float = 0.2, seed: int = 0) -> SequenceData:
    """Load sklearn's digits as (n, 64, 1) sequences, stratified split; pixels scaled to [0, 1], then standardised by
    the training split's mean and standard deviation (one of each over all pixels).

    Args:
        permute: apply a fixed pixel permutation (seeded by ``seed``).
        test_fraction: fraction of the 1797 images held out for testing.
        seed: seed of the split (and permutation).
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:  # pragma: no cover - sklearn is a dependency
        raise ImportError("the digits task needs scikit-learn: pip install scikit-learn") from e
    seed = check_int("seed", seed, 0)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise TypeError(f"test_fraction must be a number in (0, 1), got {test_fraction!r} "
                        f"({type(test_fraction).__name__})")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if round(test_fraction * 1797) < 10 or round((1 - test_fraction) * 1797) < 10:
        raise ValueError(f"test_fraction = {test_fraction} leaves fewer than 10 images (one per class) in a split of "
                         "the 1797; use a fraction in [0.006, 0.994]")
    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0            # (1797, 64), pixel order row-major
    y = bunch.target.astype(np.int64)
    if permute:
        x = x[:, np.random.default_rng(seed).permutation(64)]
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    mean, std = xtr.mean(), xtr.std()

    def to_ds(a, b):
        return TensorDataset(torch.from_numpy((a - mean) / std)[..., None], torch.from_numpy(b))

    return SequenceData(
        train=to_ds(xtr, ytr), test=to_ds(xte, yte), d_input=1, n_classes=10, length=64,
        name="pdigits" if permute else "digits", classes=[str(k) for k in range(10)],
        info={"source": "sklearn.datasets.load_digits (UCI optdigits)", "permute": permute, "seed": seed},
    )
