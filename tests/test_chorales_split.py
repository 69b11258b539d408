"""Bach chorales split (statespaces.data.chorales): each piece once, so no held-out piece is a copy
of a training piece.

Audit: music21 lists 21 chorales twice and holds two pairs of files with identical note grids
(bwv274 = bwv62.6, bwv69.6-a = bwv69.6); with every entry kept, the seed-0 split had 3 of 35 test
and 9 of 35 validation pieces identical to training pieces. The synthetic tests below stand in for
the corpus (no music21 needed); the slow one checks the corpus itself.
"""
import hashlib

import numpy as np
import pytest

from statespaces.data import chorales as ch


def _key(grid):
    return hashlib.sha1(np.ascontiguousarray(grid, dtype=np.int64).tobytes() + repr(grid.shape).encode()).hexdigest()


def _grid(seed, length=32):
    return np.random.default_rng(seed).integers(40, 80, size=(length, ch.N_VOICES))


def _assert_each_piece_once(data):
    """No two pieces of the three splits (the same split or two of them) share a name or a grid."""
    names = data.names["train"] + data.names["valid"] + data.names["test"]
    keys = [_key(g) for split in ("train", "valid", "test") for g in data.split(split)]
    assert len(set(names)) == len(names) and len(set(keys)) == len(keys)


@pytest.fixture
def corpus(monkeypatch, tmp_path):
    """A stand-in corpus of 40 listed names: 30 distinct pieces, 6 names listed twice, 3 more names
    whose grids copy other pieces (one of them listed twice as well) and one three-part piece."""
    grids = {f"bach/p{i}": _grid(i, 16 + i) for i in range(30)}
    grids.update({"bach/copy0": grids["bach/p3"], "bach/copy1": grids["bach/p17"], "bach/copy2": grids["bach/p17"]})
    listed = list(grids) + ["bach/p1", "bach/p5", "bach/p8", "bach/p13", "bach/p21", "bach/copy0", "bach/three"]

    def parse(name):
        if name == "bach/three":
            raise ValueError("expected a score with 4 parts (S, A, T, B), got 3")
        return grids[name].copy()

    monkeypatch.setenv("STATESPACES_DATA", str(tmp_path))
    monkeypatch.setattr(ch, "chorale_names", lambda: listed)
    monkeypatch.setattr(ch, "parse_chorale", parse)
    return grids


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_piece_is_in_one_split_once(corpus, seed):
    data = ch.load_chorales(fractions=(0.6, 0.2, 0.2), seed=seed, verbose=False)
    _assert_each_piece_once(data)
    kept = data.names["train"] + data.names["valid"] + data.names["test"]
    assert sorted(kept) == sorted(f"bach/p{i}" for i in range(30))          # the first of each copy is kept
    assert (len(data.train), len(data.valid), len(data.test)) == (18, 6, 6)
    assert data.duplicates == {"bach/copy0": "bach/p3", "bach/copy1": "bach/p17", "bach/copy2": "bach/p17"}


def test_a_cache_holding_copies_is_split_without_them(corpus, tmp_path):
    """A cache written with repeated pieces (as the v1 cache was) is still split with each piece once."""
    names = ["bach/p0", "bach/p1", "bach/p0", "bach/copy0", "bach/p3", "bach/p4"]
    grids = [corpus[n].astype(np.int16) for n in names]
    np.savez_compressed(tmp_path / ch._CACHE_NAME, grid=np.concatenate(grids),
                        offsets=np.cumsum([0] + [len(g) for g in grids]), names=np.array(names))
    data = ch.load_chorales(fractions=(0.5, 0.25, 0.25), verbose=False)
    _assert_each_piece_once(data)
    assert len(data.train) + len(data.valid) + len(data.test) == 4


def test_unique_pieces_keeps_the_first_of_each_grid():
    a, b = _grid(0), _grid(1)
    names, grids, aliases = ch.unique_pieces(["x", "y", "x", "z", "w"], [a, b, a, b.astype(np.int16), a[:20]])
    assert names == ["x", "y", "w"] and aliases == {"z": "y"}
    assert [g is h for g, h in zip(grids, (a, b))] == [True, True] and grids[2].shape == (20, ch.N_VOICES)
    assert ch.grid_key(a) == ch.grid_key(a.astype(np.int16)) != ch.grid_key(a[:20])


@pytest.mark.slow
def test_the_corpus_split_holds_each_piece_once(tmp_path):
    """The music21 corpus itself (parsed into a fresh cache, about 20 s): the two known pairs of
    identical files are merged and no piece appears twice in or across the splits."""
    pytest.importorskip("music21")
    data = ch.load_chorales(path=tmp_path, verbose=False)
    _assert_each_piece_once(data)
    assert data.duplicates.get("bach/bwv274") == "bach/bwv62.6"
    assert data.duplicates.get("bach/bwv69.6") == "bach/bwv69.6-a"
    keys = [ch.transposition_key(g) for split in ("train", "valid", "test") for g in data.split(split)]
    split_of = {}
    for split in ("train", "valid", "test"):
        for g in data.split(split):
            assert split_of.setdefault(ch.transposition_key(g), split) == split   # transpositions in one split
    assert len(keys) == 329


def test_transpositions_of_a_piece_share_a_split(monkeypatch, tmp_path):
    """music21 holds bwv18.5-l and bwv18.5-w, one harmonisation a tone apart: both were kept (not identical grids)
    and seeds 7, 9, 16, 18 put them in different splits. Transposed copies now join the split of the one drawn
    first; an unrelated piece is not grouped."""
    grids = {f"bach/p{i}": _grid(i, 16 + i) for i in range(20)}
    up = grids["bach/p4"].copy()
    up[up != ch.REST] += 2
    grids["bach/p4-up"] = up
    rested = grids["bach/p7"].copy()
    rested[3] = ch.REST
    grids["bach/p7-rest"] = rested                                      # not a transposition: a different piece
    monkeypatch.setenv("STATESPACES_DATA", str(tmp_path))
    monkeypatch.setattr(ch, "chorale_names", lambda: list(grids))
    monkeypatch.setattr(ch, "parse_chorale", lambda name: grids[name].copy())
    assert ch.transposition_key(up) == ch.transposition_key(grids["bach/p4"]) != ch.transposition_key(rested)
    apart = 0
    for seed in range(30):
        data = ch.load_chorales(fractions=(0.6, 0.2, 0.2), seed=seed, verbose=False)
        split_of = {n: k for k in ("train", "valid", "test") for n in data.names[k]}
        assert split_of["bach/p4"] == split_of["bach/p4-up"] and len(split_of) == 22
        apart += split_of["bach/p7"] != split_of["bach/p7-rest"]
        # the group takes the split of the member drawn first in the seed's permutation (its own draw)
        names = list(grids)
        order = list(np.random.default_rng(seed).permutation(len(names)))
        where = ["train"] * 13 + ["valid"] * 4 + ["test"] * 5                  # round(0.6 x 22), round(0.2 x 22)
        drawn = {names[i]: where[pos] for pos, i in enumerate(order)}
        first = min(("bach/p4", "bach/p4-up"), key=lambda n: order.index(names.index(n)))
        assert split_of["bach/p4"] == drawn[first]
    assert apart > 0
