"""Pathfinder generator (statespaces.data.pathfinder): labels checked by connected components."""
from collections import deque

import numpy as np
import pytest
import torch
from scipy import ndimage

from statespaces.data import pathfinder as pf

EIGHT = np.ones((3, 3), dtype=bool)


def _connected(mask, a, b):
    lab, _ = ndimage.label(mask, structure=EIGHT)
    return lab[tuple(a)] > 0 and lab[tuple(a)] == lab[tuple(b)]


@pytest.mark.parametrize("size, n", [(32, 60), (64, 8)])
def test_labels_match_connected_components(size, n):
    d = pf.make_pathfinder(n, size=size, seed=7)
    assert d["images"].shape == (n, size, size) and d["labels"].sum() == n // 2
    for img, mask, ends, label in zip(d["images"], d["curve_mask"], d["markers"], d["labels"]):
        assert mask[tuple(ends[0])] and mask[tuple(ends[1])]          # markers sit on curves
        assert _connected(mask, ends[0], ends[1]) == bool(label)
        # the rendered dashed image lies on the curves or the 3x3 marker squares
        near_marker = np.zeros_like(mask)
        for r, c in ends:
            near_marker[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = True
        assert not (img.astype(bool) & ~mask & ~near_marker).any()
        # curves are separate components: the negative's markers are on two different ones
        n_components = ndimage.label(mask, structure=EIGHT)[1]
        assert n_components == 2 + max(2, size // 16)


def _bridged_reach(image, a, b, radius=2):
    """Flood fill over drawn pixels, jumping gaps: neighbours are pixels at Chebyshev distance <= radius."""
    on = image > 0
    H, W = on.shape
    seen = np.zeros_like(on)
    queue = deque([tuple(a)])
    seen[tuple(a)] = True
    while queue:
        r, c = queue.popleft()
        if (r, c) == tuple(b):
            return True
        for i in range(max(r - radius, 0), min(r + radius, H - 1) + 1):
            for j in range(max(c - radius, 0), min(c + radius, W - 1) + 1):
                if on[i, j] and not seen[i, j]:
                    seen[i, j] = True
                    queue.append((i, j))
    return False


def test_labels_from_the_rendered_dashed_image():
    d = pf.make_pathfinder(40, seed=11)
    for img, mask, ends, label in zip(d["images"], d["curve_mask"], d["markers"], d["labels"]):
        # dashing breaks the curves: the drawn pixels form more 8-components than there are curves
        assert ndimage.label(img > 0, structure=EIGHT)[1] > ndimage.label(mask, structure=EIGHT)[1]
        assert _bridged_reach(img, ends[0], ends[1]) == bool(label)


def test_determinism_and_sequence_form():
    a = pf.load_pathfinder(n_train=16, n_test=8, seed=2)
    b = pf.load_pathfinder(n_train=16, n_test=8, seed=2)
    c = pf.load_pathfinder(n_train=16, n_test=8, seed=3)
    assert all(torch.equal(s, t) for s, t in zip(a.train.tensors, b.train.tensors))
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    x, y = a.train.tensors
    assert x.shape == (16, 1024, 1) and a.length == 1024 and a.n_classes == 2 and int(y.sum()) == 8
    raw = pf.make_pathfinder(16, seed=np.random.default_rng(np.random.SeedSequence(2).spawn(2)[0]))
    flat = (raw["images"].reshape(16, -1) - a.info["mean"]) / a.info["std"]
    np.testing.assert_allclose(x[..., 0].numpy(), flat, rtol=1e-5, atol=1e-6)


def test_impossible_layout_raises():
    with pytest.raises(RuntimeError, match="could not place"):
        pf.make_pathfinder(1, size=16, curve_length=40, n_distractors=12, tries=5)
