r"""Sequential and permuted Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.

The Debian package ships the original Zalando idx files (MIT license)::

    /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz

60,000 training and 10,000 test images, 28x28 uint8, 10 balanced classes. Install with
``apt-get install -y dataset-fashion-mnist``; the folder can be overridden with ``root=`` or the
environment variable ``STATESPACES_FASHION_MNIST``. The files are parsed here with ``gzip`` and
``numpy`` (no torchvision).

* :func:`load_fashion_mnist` -- pixel-by-pixel sequences (n, 784, 1) in row-major order (the
  thesis' sMNIST protocol on Fashion-MNIST), ``permute=True`` for one fixed random pixel
  permutation (psMNIST protocol), ``pool=2`` for 2x2 average pooling to 14x14 (L = 196),
  ``n_train`` to subsample the training set (stratified by class, seeded).
* :func:`load_fashion_mnist_images` -- the same images as (n, 28, 28, 1) tensors for 2-D models.
* :func:`read_idx` -- a small parser for the idx format (any of its dtypes).

Pixels are scaled to [0, 1] and then standardized with the training set's mean and std (one
scalar each), like the digits task.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .base import SequenceData, check_count

#: Where Debian's ``dataset-fashion-mnist`` puts the files.
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
INSTALL_HINT = f"apt-get install -y {DEBIAN_PACKAGE}"
FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
#: Class names in label order (Zalando's README).
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SIDE = 28

# idx type codes -> numpy big-endian dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """Parse an idx file (optionally gzip-compressed) into a numpy array.

    Format: two zero bytes, a type code byte, the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: idx header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_root(root: Optional[Union[str, Path]] = None) -> Path:
    """The folder holding the four idx files; ``FileNotFoundError`` naming the Debian package if absent."""
    if root is None:
        root = os.environ.get("STATESPACES_FASHION_MNIST") or DEFAULT_ROOT
    root = Path(root)
    missing = [name for name in FILES.values() if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found in {root} (missing: {', '.join(missing)}). They come from the "
            f"Debian package '{DEBIAN_PACKAGE}': install it with `{INSTALL_HINT}` (as root), or pass root=/ set "
            "STATESPACES_FASHION_MNIST to a folder with the four idx .gz files."
        )
    return root


@lru_cache(maxsize=2)
def _load_raw(root: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r = Path(root)
    arrays = []
    for split in ("train", "test"):
        images = read_idx(r / FILES[(split, "images")])
        labels = read_idx(r / FILES[(split, "labels")])
        if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE) or images.dtype != np.uint8:
            raise ValueError(f"{split} images: expected uint8 (n, 28, 28), got {images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"{split} labels: expected shape ({len(images)},), got {labels.shape}")
        if labels.size and labels.max() >= len(CLASSES):
            raise ValueError(f"{split} labels: found label {labels.max()}, expected 0..{len(CLASSES) - 1}")
        images.setflags(write=False)
        labels.setflags(write=False)
        arrays += [images, labels]
    return tuple(arrays)  # type: ignore[return-value]


def load_raw(root: Optional[Union[str, Path]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` as read-only uint8 arrays
    (n, 28, 28) / (n,). Parsed once per process (cached in memory, never on disk)."""
    return _load_raw(str(find_root(root)))


def _subsample(y: np.ndarray, n: Optional[int], rng: np.random.Generator, what: str) -> np.ndarray:
    """Indices of a class-stratified random subset of size ``n`` (all, in order, if ``n`` is None)."""
    if n is None:
        return np.arange(len(y))
    n = check_count(what, n)
    if n > len(y):
        raise ValueError(f"{what}={n} exceeds the {len(y)} available examples")
    classes = np.unique(y)
    # per-class quotas proportional to class frequency, remainders to random classes
    counts = np.array([(y == c).sum() for c in classes])
    quota = np.floor(n * counts / counts.sum()).astype(int)
    extra = (rng.choice(len(classes), size=n - quota.sum(), replace=False, p=counts / counts.sum())
             if n > quota.sum() else [])
    for k in extra:
        quota[k] += 1
    picked = [rng.choice(np.flatnonzero(y == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def _pool(images: np.ndarray, pool: int) -> np.ndarray:
    """Average-pool (n, 28, 28) uint8 over pool x pool blocks -> (n, 28/pool, 28/pool) float32 in [0, 255]."""
    n, h, w = images.shape
    sums = images.reshape(n, h // pool, pool, w // pool, pool).sum(axis=(2, 4), dtype=np.uint32)
    return sums.astype(np.float32) / np.float32(pool * pool)


def _standardize(xtr: np.ndarray, xte: np.ndarray) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """Scale pixels to [0, 1] and standardize with the training mean/std (scalars).

    uint8 input goes through a 256-entry lookup table (exact statistics from integer sums), which
    is much faster than float arithmetic on 47M pixels."""
    if xtr.dtype == np.uint8:
        n = xtr.size
        s1 = int(xtr.sum(dtype=np.uint64))
        s2 = int(np.square(xtr, dtype=np.uint16).sum(dtype=np.uint64))
        mean = s1 / n / 255.0
        std = float(np.sqrt(max(s2 / n / 255.0**2 - mean**2, 0.0)))
        lut = ((np.arange(256) / 255.0 - mean) / std).astype(np.float32)
        return lut[xtr], lut[xte], mean, std
    xtr, xte = xtr / np.float32(255), xte / np.float32(255)
    mean, std = float(xtr.mean(dtype=np.float64)), float(xtr.std(dtype=np.float64))
    return ((xtr - mean) / std).astype(np.float32), ((xte - mean) / std).astype(np.float32), mean, std


def _check_pool(pool: int) -> int:
    pool = check_count("pool", pool)
    if SIDE % pool:
        raise ValueError(f"pool must divide 28 (1, 2, 4, 7, 14, 28), got {pool}")
    return pool


def load_fashion_mnist(
    permute: bool = False,
    pool: int = 1,
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    seed: int = 0,
    root: Optional[Union[str, Path]] = None,
) -> SequenceData:
    """Fashion-MNIST as pixel sequences (n, L, 1), L = (28 / pool)^2.

    Args:
        permute: apply one fixed random permutation of the L pixels (seeded by ``seed``) to every image.
        pool: average-pool non-overlapping ``pool x pool`` blocks first (``pool=2`` -> 14x14, L = 196).
        n_train: use a class-stratified random subset of this many training images (default: all 60,000).
        n_test: likewise for the 10,000 test images (default: all).
        seed: seed of the permutation and of the subsets.
        root: folder with the idx files (default ``/usr/share/datasets/fashion-mnist``).

    Memory: the full training set is 60,000 x 784 float32 = 188 MB.
    """
    pool = _check_pool(pool)
    xtr, ytr, xte, yte = load_raw(root)
    rng = np.random.default_rng(seed)
    perm = None
    side = SIDE // pool
    if permute:
        perm = np.random.default_rng(seed).permutation(side * side)
    itr = _subsample(ytr, n_train, rng, "n_train")
    ite = _subsample(yte, n_test, rng, "n_test")
    xtr, xte = xtr[itr], xte[ite]
    if pool > 1:
        xtr, xte = _pool(xtr, pool), _pool(xte, pool)
    xtr, xte = xtr.reshape(len(itr), -1), xte.reshape(len(ite), -1)
    if perm is not None:
        xtr, xte = xtr[:, perm], xte[:, perm]
    xtr, xte, mean, std = _standardize(xtr, xte)

    def to_ds(x, y):
        return TensorDataset(torch.from_numpy(x)[..., None], torch.from_numpy(y.astype(np.int64)))

    name = ("p" if permute else "") + "sfashion_mnist" + (f"{side}" if pool > 1 else "")
    return SequenceData(
        train=to_ds(xtr, ytr[itr]), test=to_ds(xte, yte[ite]), d_input=1, n_classes=len(CLASSES),
        length=side * side, name=name, classes=list(CLASSES),
        info={"source": f"Debian {DEBIAN_PACKAGE}", "root": str(find_root(root)), "pool": pool,
              "permutation": perm, "mean": mean, "std": std, "seed": seed},
    )


@dataclass
class ImageData:
    """Images for 2-D models: each split is a ``TensorDataset`` of ``x`` (n, H, W, C) float32 and
    ``y`` (n,) int64."""

    train: TensorDataset
    test: TensorDataset
    height: int
    width: int
    channels: int
    n_classes: int
    name: str
    classes: List[str] = field(default_factory=list)


def load_fashion_mnist_images(
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    seed: int = 0,
    normalize: bool = True,
    root: Optional[Union[str, Path]] = None,
) -> ImageData:
    """Fashion-MNIST as images (n, 28, 28, 1) float32 (channels last, like a (B, L, d) sequence
    reshaped to 2-D). ``normalize=True`` standardizes with the training mean/std, else values are
    in [0, 1]. Subsets as in :func:`load_fashion_mnist`."""
    xtr, ytr, xte, yte = load_raw(root)
    rng = np.random.default_rng(seed)
    itr = _subsample(ytr, n_train, rng, "n_train")
    ite = _subsample(yte, n_test, rng, "n_test")
    a, b = xtr[itr], xte[ite]
    if normalize:
        a, b, _, _ = _standardize(a, b)
    else:
        a, b = a.astype(np.float32) / np.float32(255), b.astype(np.float32) / np.float32(255)

    def to_ds(x, y):
        return TensorDataset(torch.from_numpy(np.ascontiguousarray(x))[..., None],
                             torch.from_numpy(y.astype(np.int64)))

    return ImageData(train=to_ds(a, ytr[itr]), test=to_ds(b, yte[ite]), height=SIDE, width=SIDE, channels=1,
                     n_classes=len(CLASSES), name="fashion_mnist_images", classes=list(CLASSES))
