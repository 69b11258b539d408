"""Bach chorales (statespaces.data.chorales): 16th-note grid parser round trips, cache and split."""
import sys

import numpy as np
import pytest

from statespaces.data import chorales as ch

music21 = pytest.importorskip("music21")

PIECES = ["bach/bwv269", "bach/bwv347", "bach/bwv153.1"]


@pytest.fixture(scope="module")
def grids():
    return {name: ch.parse_chorale(name) for name in PIECES}


def test_grid_stream_grid_round_trip(grids):
    for name, g in grids.items():
        assert g.ndim == 2 and g.shape[1] == 4 and len(g) > 50
        assert ((g >= 36) & (g <= 84) | (g == ch.REST)).all()
        # voices are ordered soprano >= alto >= tenor >= bass almost everywhere
        sounding = (g != ch.REST).all(1)
        assert (np.diff(g[sounding], axis=1) <= 0).mean() > 0.95
        np.testing.assert_array_equal(ch.score_to_grid(ch.grid_to_score(g)), g, err_msg=name)


def test_midi_file_round_trip(grids, tmp_path):
    g = grids["bach/bwv347"]
    path = ch.write_midi(g, tmp_path / "x.mid")
    back = ch.score_to_grid(music21.converter.parse(str(path)))
    np.testing.assert_array_equal(back[: len(g)], g)
    assert (back[len(g):] == ch.REST).all()                 # MIDI may pad to the bar


def test_first_notes_of_bwv269(grids):
    g = grids["bach/bwv269"]
    # soprano G4 held for a quarter (4 sixteenths), bass G2 then G3
    assert g[:4, 0].tolist() == [67] * 4 and g[:8, 3].tolist() == [43] * 4 + [55] * 4


def test_bad_grid():
    with pytest.raises(ValueError):
        ch.grid_to_score(np.zeros((4, 3), dtype=int))
    with pytest.raises(ValueError):
        ch.grid_to_score(np.full((4, 4), 200))


def test_cache_and_split_by_piece(tmp_path, monkeypatch):
    monkeypatch.setenv("STATESPACES_DATA", str(tmp_path))
    monkeypatch.setattr(ch, "chorale_names", lambda: PIECES)
    data = ch.load_chorales(fractions=(1 / 3, 1 / 3, 1 / 3), verbose=False)
    assert (tmp_path / ch._CACHE_NAME).exists()
    names = data.names["train"] + data.names["valid"] + data.names["test"]
    assert sorted(names) == sorted(PIECES)                  # every piece in exactly one split
    again = ch.load_chorales(fractions=(1 / 3, 1 / 3, 1 / 3), verbose=False)
    assert again.names == data.names
    for a, b in zip(data.train, again.train):
        np.testing.assert_array_equal(a, b)
    x, lengths = ch.pad_batch(data.train + data.test, multiple=16)
    assert x.shape[1] % 16 == 0 and x.shape[1] >= lengths.max()
    crops = ch.random_crops(data.train, 64, 3, np.random.default_rng(0))
    assert crops.shape == (3, 64, 4)
    with pytest.raises(ValueError):
        ch.load_chorales(fractions=(0.5, 0.5, 0.5))


def test_missing_music21_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(ImportError, match="pip install music21"):
        ch.parse_chorale("bach/bwv269")
