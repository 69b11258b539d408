r"""Pathfinder (Linsley et al. 2018; Long Range Arena, Tay et al. 2021), generated here with numpy.

No package ships the Pathfinder images or their generator; this module draws its own version of
the task. Each image (``size x size``, 32 by default; 64, 128, ... allowed) holds several smooth
dashed curves and two endpoint markers (3x3 squares). **Label 1** when both markers sit on the
two ends of the same curve, **0** when they sit on ends of two different curves. Every image
has the same curves regardless of its label: two "main" curves (markers go on curve A's two
ends, or on one end of A and one end of B) and ``n_distractors`` more curves, so the only
difference between the classes is the marker placement.

Curves are random walks with unit steps whose heading turns by ``N(0, curvature^2)`` radians
per step (steering away from the border and from earlier curves), rasterized to 8-connected
pixel chains, then dashed (``dash_on`` pixels drawn,
``dash_off`` skipped, random phase). Curves never touch or cross: every pixel of a curve (and
the marker squares of the main curves) keeps a Chebyshev distance >= ``spacing`` from every
other curve, and curves do not touch themselves. Hence on the *undashed* curve mask the two
markers are in the same 8-connected component exactly when the label is 1 -- the tests check
this with ``scipy.ndimage.label``, independently of the generator. With the default
``spacing=3`` and ``dash_off=1`` the task is also well posed on the rendered image itself:
joining drawn pixels at Chebyshev distance <= 2 bridges every dash gap but never jumps to
another curve (the tests check this with their own flood fill).

:func:`load_pathfinder` returns ``SequenceData`` of flattened images (n, size*size, 1) in
row-major order (L = 1024 for 32x32), standardized with the training mean/std; labels are
balanced exactly (half positive).
"""
from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .base import SequenceData, check_count, split_rngs

Pixel = Tuple[int, int]


_TURNS = (0.0, 0.35, -0.35, 0.7, -0.7, 1.05, -1.05, 1.4, -1.4)


def _walk(rnd: random.Random, size: int, n_steps: int, curvature: float, border: int,
          blocked: np.ndarray) -> Optional[List[Pixel]]:
    """Pixels (row, col) of a smooth random walk with unit steps that stays inside the image,
    off ``blocked`` pixels and away from itself, or None if it gets stuck.

    The heading turns by ``N(0, curvature^2)`` per step; when the next pixel is not allowed the
    walk steers (tries turns of up to +-1.4 rad). Consecutive pixels are 8-neighbours (steps of
    length 1 round to moves of at most one pixel per axis); a new pixel may touch only the last
    two pixels of the chain (no self-contact)."""
    lo, hi = border, size - 1 - border
    r, c = rnd.uniform(lo, hi), rnd.uniform(lo, hi)
    start = (int(math.floor(r + 0.5)), int(math.floor(c + 0.5)))
    if blocked[start]:
        return None
    theta = rnd.uniform(0, 2 * math.pi)
    pix = [start]
    index = {start: 0}
    for _ in range(n_steps):
        base = theta + rnd.gauss(0.0, curvature)
        sign = 1.0 if rnd.random() < 0.5 else -1.0
        for turn in _TURNS:
            th = base + sign * turn
            nr, nc = r + math.sin(th), c + math.cos(th)
            if not (lo <= nr <= hi and lo <= nc <= hi):
                continue
            p = (int(math.floor(nr + 0.5)), int(math.floor(nc + 0.5)))
            if p == pix[-1]:
                break
            if blocked[p] or p in index:
                continue
            last = len(pix) - 2
            if any(index.get((p[0] + dr, p[1] + dc), last) < last for dr in (-1, 0, 1) for dc in (-1, 0, 1)):
                continue
            break
        else:
            return None
        theta, r, c = th, nr, nc
        if p != pix[-1]:
            index[p] = len(pix)
            pix.append(p)
    return pix


def _square(p: Pixel, radius: int, size: int) -> List[Pixel]:
    r, c = p
    return [(i, j) for i in range(max(r - radius, 0), min(r + radius, size - 1) + 1)
            for j in range(max(c - radius, 0), min(c + radius, size - 1) + 1)]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Chebyshev dilation of a boolean mask by ``radius`` pixels."""
    out = mask.copy()
    H, W = mask.shape
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            out[max(dr, 0):H + min(dr, 0), max(dc, 0):W + min(dc, 0)] |= \
                mask[max(-dr, 0):H + min(-dr, 0), max(-dc, 0):W + min(-dc, 0)]
    return out


def _one_image(rnd: random.Random, size: int, label: int, n_curves: int, curve_length: int, curvature: float,
               dash_on: int, dash_off: int, spacing: int, marker_radius: int, tries: int):
    border = marker_radius + 1
    for _ in range(tries):
        blocked = np.zeros((size, size), dtype=bool)     # pixels new curves must avoid
        curves: List[List[Pixel]] = []
        ok = True
        for k in range(n_curves):
            for _ in range(tries):
                pix = _walk(rnd, size, curve_length, curvature, border, blocked)
                if pix is None:
                    continue
                footprint = list(pix)
                if k < 2:   # main curves: keep their marker squares clear of other curves too
                    footprint += _square(pix[0], marker_radius, size) + _square(pix[-1], marker_radius, size)
                    if any(blocked[p] for p in footprint):
                        continue
                own = np.zeros((size, size), dtype=bool)
                own[tuple(np.array(footprint).T)] = True
                blocked |= _dilate(own, spacing - 1)
                curves.append(pix)
                break
            else:
                ok = False
                break
        if not ok:
            continue
        image = np.zeros((size, size), dtype=np.float32)
        mask = np.zeros((size, size), dtype=bool)
        period = dash_on + dash_off
        for pix in curves:
            phase = rnd.randrange(period)
            for i, p in enumerate(pix):
                mask[p] = True
                if dash_off == 0 or (i + phase) % period < dash_on:
                    image[p] = 1.0
        a = curves[0]
        if label == 1:
            ends = [a[0], a[-1]]
        else:
            b = curves[1]
            ends = [a[0] if rnd.random() < 0.5 else a[-1], b[0] if rnd.random() < 0.5 else b[-1]]
        for e in ends:
            for p in _square(e, marker_radius, size):
                image[p] = 1.0
        return image, mask, np.array(ends, dtype=np.int64)
    raise RuntimeError(f"could not place {n_curves} curves of length {curve_length} with spacing {spacing} in a "
                       f"{size}x{size} image; use fewer distractors, shorter curves or a larger image")


def make_pathfinder(
    n: int,
    size: int = 32,
    curve_length: Optional[int] = None,
    n_distractors: Optional[int] = None,
    curvature: float = 0.25,
    dash_on: int = 3,
    dash_off: int = 1,
    spacing: int = 3,
    marker_radius: int = 1,
    seed=0,
    tries: int = 200,
) -> Dict[str, Any]:  # arrays, and the int settings
    """``n`` Pathfinder images. Returns ``images`` (n, size, size) float32 in {0, 1}, ``labels``
    (n,) int64 (exactly balanced), ``markers`` (n, 2, 2) int64 (row, col) of the marker centers,
    ``curve_mask`` (n, size, size) bool: the undashed curves (for checking the labels), and the
    resolved ``curve_length`` / ``n_distractors``.

    Defaults: ``curve_length = 0.7 * size`` unit steps, ``n_distractors = max(2, size // 16)``.
    """
    n, size = check_count("n", n), check_count("size", size, 16)
    curve_length = check_count("curve_length", curve_length if curve_length is not None else int(0.7 * size), 3)
    n_distractors = check_count("n_distractors", n_distractors if n_distractors is not None else max(2, size // 16), 0)
    dash_on, dash_off = check_count("dash_on", dash_on), check_count("dash_off", dash_off, 0)
    spacing, marker_radius = check_count("spacing", spacing, 2), check_count("marker_radius", marker_radius, 0)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    rnd = random.Random(int(rng.integers(2**63)))
    images = np.zeros((n, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    markers = np.zeros((n, 2, 2), dtype=np.int64)
    for i in range(n):
        images[i], masks[i], markers[i] = _one_image(rnd, size, int(labels[i]), 2 + n_distractors, curve_length,
                                                     curvature, dash_on, dash_off, spacing, marker_radius, tries)
    return {"images": images, "labels": labels, "markers": markers, "curve_mask": masks,
            "curve_length": curve_length, "n_distractors": n_distractors}


def load_pathfinder(
    n_train: int = 2000,
    n_test: int = 500,
    size: int = 32,
    curve_length: Optional[int] = None,
    n_distractors: Optional[int] = None,
    curvature: float = 0.25,
    dash_on: int = 3,
    dash_off: int = 1,
    seed: int = 0,
) -> SequenceData:
    """Pathfinder as flattened sequences (n, size*size, 1), standardized with training statistics."""
    n_train, n_test = check_count("n_train", n_train), check_count("n_test", n_test)
    raw = []
    for n, rng in zip((n_train, n_test), split_rngs(seed)):
        raw.append(make_pathfinder(n, size, curve_length, n_distractors, curvature, dash_on, dash_off, seed=rng))
    mean = float(raw[0]["images"].mean())
    std = float(raw[0]["images"].std()) or 1.0
    parts = [TensorDataset(torch.from_numpy(((d["images"].reshape(len(d["labels"]), -1, 1) - mean) / std)
                                            .astype(np.float32)), torch.from_numpy(d["labels"])) for d in raw]
    return SequenceData(
        train=parts[0], test=parts[1], d_input=1, n_classes=2, length=size * size, name=f"pathfinder{size}",
        classes=["disconnected", "connected"],
        info={"size": size, "curve_length": raw[0]["curve_length"], "n_distractors": raw[0]["n_distractors"],
              "curvature": curvature,
              "dash": (dash_on, dash_off), "mean": mean, "std": std, "seed": seed},
    )
