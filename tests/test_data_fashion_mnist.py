"""Fashion-MNIST from Debian's dataset-fashion-mnist (statespaces.data.fashion_mnist)."""
import gzip
import struct

import numpy as np
import pytest
import torch

from statespaces.data import fashion_mnist as fm

try:
    fm.find_root()
    HAVE_FILES = True
except FileNotFoundError:
    HAVE_FILES = False
needs_files = pytest.mark.skipif(not HAVE_FILES, reason=f"Fashion-MNIST files absent: `{fm.INSTALL_HINT}`")


def _write_idx(path, arr, code=0x08):
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape))
        f.write(arr.astype(arr.dtype.newbyteorder(">")).tobytes())


def test_read_idx_roundtrip_and_bad_magic(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "a.gz"), a)
    b = np.array([[1.5, -2.0]], dtype=np.float32)
    _write_idx(tmp_path / "b.gz", b, code=0x0D)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "b.gz"), b)
    (tmp_path / "c").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        fm.read_idx(tmp_path / "c")
    with gzip.open(tmp_path / "d.gz", "wb") as f:  # header promises more data than present
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="bytes"):
        fm.read_idx(tmp_path / "d.gz")


def test_missing_files_name_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset-fashion-mnist.*apt-get install -y dataset-fashion-mnist"):
        fm.load_fashion_mnist(root=tmp_path)


@needs_files
def test_real_files_shapes_labels_and_pooling():
    xtr, ytr, xte, yte = fm.load_raw()
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28) and xtr.dtype == np.uint8
    assert np.bincount(ytr).tolist() == [6000] * 10 and np.bincount(yte).tolist() == [1000] * 10

    d = fm.load_fashion_mnist(n_train=500, n_test=100, seed=1)
    x, y = d.train.tensors
    assert x.shape == (500, 784, 1) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert d.length == 784 and d.d_input == 1 and d.n_classes == 10 and d.classes[9] == "Ankle boot"
    assert np.bincount(y.numpy()).tolist() == [50] * 10            # stratified subset
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    # sequence = row-major pixels of the chosen raw image, standardized
    idx = fm._subsample(ytr, 500, np.random.default_rng(1), "n_train")
    raw = xtr[idx[0]].reshape(-1) / 255.0
    np.testing.assert_allclose(x[0, :, 0].numpy(), (raw - d.info["mean"]) / d.info["std"], rtol=1e-5, atol=1e-5)

    p = fm.load_fashion_mnist(permute=True, pool=2, n_train=500, n_test=100, seed=1)
    assert p.length == 196 and p.train.tensors[0].shape == (500, 196, 1) and p.name == "psfashion_mnist14"
    perm = p.info["permutation"]
    assert sorted(perm.tolist()) == list(range(196))
    pooled = xtr[idx[0]].reshape(14, 2, 14, 2).mean(axis=(1, 3)).reshape(-1)[perm] / 255.0
    np.testing.assert_allclose(p.train.tensors[0][0, :, 0].numpy(), (pooled - p.info["mean"]) / p.info["std"],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pool must divide 28"):
        fm.load_fashion_mnist(pool=3, n_train=10, n_test=10)
    with pytest.raises(ValueError, match="exceeds"):
        fm.load_fashion_mnist(n_train=70000)


@needs_files
def test_image_form():
    im = fm.load_fashion_mnist_images(n_train=20, n_test=10, normalize=False)
    x, y = im.train.tensors
    assert x.shape == (20, 28, 28, 1) and (im.height, im.width, im.channels) == (28, 28, 1)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    s = fm.load_fashion_mnist(n_train=20, n_test=10)
    # same examples, same order as the sequence form
    assert torch.equal(y, s.train.tensors[1])
