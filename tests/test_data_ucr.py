"""UCR/UEA .ts parser and loader (statespaces.data.ucr)."""
import numpy as np
import pytest
import torch

from statespaces.data import ucr

HAVE_AEON = bool(ucr.package_data_dirs()) and "JapaneseVowels" in ucr.available_problems()
needs_aeon = pytest.mark.skipif(not HAVE_AEON, reason=f"no bundled .ts files (install with `{ucr.INSTALL_HINT}`)")

# hand-written: 2 channels, variable length, a missing value, a comment, mixed-case keys
TS = """\
# a comment
% another comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true walk run
@data
1.0,2.0,3.0:10,20,30:walk
4,?,6,7:40,50,60,70:run

0.5,0.25:1e3,-2:walk
"""


def test_parse_handwritten_variable_length_and_missing():
    f = ucr.parse_ts(TS)
    assert f.problem_name == "Toy" and f.class_labels == ["walk", "run"] and not f.is_regression
    assert f.labels == ["walk", "run", "walk"] and f.lengths.tolist() == [3, 4, 2] and f.n_channels == 2
    np.testing.assert_array_equal(f.series[0], [[1, 2, 3], [10, 20, 30]])
    assert np.isnan(f.series[1][0, 1]) and f.series[1][0, 3] == 7 and f.series[1][1, 3] == 70
    np.testing.assert_array_equal(f.series[2], [[0.5, 0.25], [1000, -2]])


def test_format_parse_roundtrip():
    f = ucr.parse_ts(TS)
    text = ucr.format_ts(f.series, f.labels, problem_name="Toy", class_labels=f.class_labels)
    g = ucr.parse_ts(text)
    assert g.labels == f.labels and g.class_labels == f.class_labels
    for a, b in zip(f.series, g.series):
        np.testing.assert_array_equal(a, b)  # NaN == NaN for assert_array_equal
    # regression targets and univariate series survive too
    reg = ucr.format_ts([np.array([1.0, np.nan]), np.array([3.0, 4.0])], [0.5, -1.25], regression=True)
    r = ucr.parse_ts(reg)
    assert r.is_regression and r.labels == [0.5, -1.25] and np.isnan(r.series[0][0, 1])


def test_parse_timestamps_and_shorter_channels():
    text = "@timeStamps true\n@univariate false\n@dimensions 2\n@classLabel true a b\n@data\n" \
           "(2007-01-01 00:00:00,1.5),(2007-01-01 00:01:00,2.5):(2007-01-01 00:00:00,7):b\n"
    f = ucr.parse_ts(text)
    assert f.labels == ["b"] and f.lengths.tolist() == [2]
    np.testing.assert_array_equal(f.series[0][0], [1.5, 2.5])
    assert f.series[0][1, 0] == 7 and np.isnan(f.series[0][1, 1])  # shorter channel NaN-padded


@pytest.mark.parametrize("text, match", [
    ("@classLabel true a b\n@data\n1,2:c\n", "not declared"),
    ("@dimensions 2\n@classLabel true a\n@data\n1,2:a\n", "found 1 channels, expected 2"),
    ("@classLabel true a\n@data\n1,x:a\n", "cannot read 'x'"),
    ("@classLabel true a\n", "no @data"),
    ("@equalLength true\n@classLabel true a\n@data\n1,2:a\n1:a\n", "equalLength"),
    ("hello\n@data\n", "header"),
])
def test_parse_errors(text, match):
    with pytest.raises(ValueError, match=match):
        ucr.parse_ts(text)


def _write_problem(tmp_path, name="Toy"):
    d = tmp_path / name
    d.mkdir()
    (d / f"{name}_TRAIN.ts").write_text(TS)
    test = TS.replace("0.5,0.25:1e3,-2:walk", "?,?:1,2:run")  # a channel that is missing entirely
    (d / f"{name}_TEST.ts").write_text(test)
    return d


def test_load_from_path_missing_values_normalization_and_padding(tmp_path):
    d = _write_problem(tmp_path)
    for arg in (d, d / "Toy_TRAIN.ts", str(d / "Toy_TEST.ts")):
        data = ucr.load_ucr(arg)
        assert data.name == "ucr:Toy" and data.classes == ["walk", "run"] and data.length == 4
    x, y, lengths = data.train.tensors
    assert x.shape == (3, 4, 2) and y.tolist() == [0, 1, 0] and lengths.tolist() == [3, 4, 2]
    # missing value interpolated in time: 4, (5), 6, 7
    raw_c0 = np.array([1, 2, 3, 4, 5, 6, 7, 0.5, 0.25])
    mean0, std0 = np.mean([1, 2, 3, 4, 6, 7, 0.5, 0.25]), np.std([1, 2, 3, 4, 6, 7, 0.5, 0.25])
    np.testing.assert_allclose(data.info["mean"][0], mean0)
    np.testing.assert_allclose(x[1, :, 0].numpy(), (raw_c0[3:7] - mean0) / std0, rtol=1e-5)
    # padding after each length is pad_value (0)
    assert float(x[0, 3:].abs().sum()) == 0 and float(x[2, 2:].abs().sum()) == 0
    # a fully missing channel becomes the training mean -> 0 after normalization
    xt = data.test.tensors[0]
    assert float(xt[2, :2, 0].abs().max()) < 1e-6 and data.info["missing_filled"] == 1 + 1 + 2
    assert torch.isfinite(x).all() and torch.isfinite(xt).all()
    m = ucr.load_ucr(d, missing="mean", normalize=False, pad_value=-1.0)
    assert m.train.tensors[0][1, 1, 0] == pytest.approx(mean0) and m.train.tensors[0][0, 3, 0] == -1.0


def test_unknown_and_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(ucr, "package_data_dirs", lambda: [])
    monkeypatch.delenv("STATESPACES_UCR", raising=False)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps aeon"):
        ucr.load_ucr("GunPoint")
    _write_problem(tmp_path)
    with pytest.raises(ValueError, match=r"unknown UCR/UEA problem 'Nope'; available: Toy"):
        ucr.load_ucr("Nope", root=tmp_path)
    assert ucr.load_ucr("toy", root=tmp_path).name == "ucr:Toy"  # case-insensitive name lookup
    with pytest.raises(FileNotFoundError):
        ucr.load_ucr(tmp_path / "missing_TRAIN.ts")


@needs_aeon
def test_locates_aeon_without_importing_it():
    import sys

    assert any("aeon" in str(p) for p in ucr.package_data_dirs())
    assert "aeon" not in sys.modules


@needs_aeon
@pytest.mark.parametrize("name, n_train, n_test, channels, length, n_classes", [
    ("BasicMotions", 40, 40, 6, 100, 4),
    ("GunPoint", 50, 150, 1, 150, 2),
    ("ArrowHead", 36, 175, 1, 251, 3),
    ("ItalyPowerDemand", 67, 1029, 1, 24, 2),
    ("ACSF1", 100, 100, 1, 1460, 10),
])
def test_real_equal_length_problems(name, n_train, n_test, channels, length, n_classes):
    d = ucr.load_ucr(name)
    x, y = d.train.tensors  # equal length: no lengths tensor
    assert x.shape == (n_train, length, channels) and len(d.test) == n_test and d.n_classes == n_classes
    assert set(y.tolist()) == set(range(n_classes)) and not d.has_lengths
    # per-channel z-normalization with train statistics
    flat = x.reshape(-1, channels)
    assert flat.mean(0).abs().max() < 1e-4 and (flat.std(0, unbiased=False) - 1).abs().max() < 1e-3


@needs_aeon
def test_japanese_vowels_padding_and_lengths():
    d = ucr.load_ucr("JapaneseVowels")
    raw_tr = ucr.read_ts(ucr.resolve("JapaneseVowels")[1])
    x, y, lengths = d.train.tensors
    assert d.d_input == 12 and d.n_classes == 9 and d.length == 29 and x.shape == (270, 29, 12)
    assert len(d.test) == 370 and int(d.lengths_test.min()) == 7 and d.has_lengths
    assert lengths.tolist() == raw_tr.lengths.tolist() and lengths.min() == 7
    mean, std = d.info["mean"], d.info["std"]
    for i in (0, 100, 269):
        n = int(lengths[i])
        np.testing.assert_allclose(x[i, :n].numpy(), ((raw_tr.series[i] - mean[:, None]) / std[:, None]).T,
                                   rtol=1e-5, atol=1e-5)
        assert float(x[i, n:].abs().sum()) == 0
    assert y[0].item() == d.classes.index(raw_tr.labels[0])
    # statistics over valid steps only (padding excluded)
    valid = torch.cat([x[i, : int(lengths[i])] for i in range(len(x))])
    assert valid.mean(0).abs().max() < 1e-4 and (valid.std(0, unbiased=False) - 1).abs().max() < 1e-3


@needs_aeon
def test_padded_batch_gives_same_logits_as_unpadded():
    """lengths let a causal classifier ignore the padding: padded == truncated input."""
    try:
        from statespaces.models import SequenceClassifier
    except ImportError as e:  # pragma: no cover - another module being edited
        pytest.skip(f"statespaces.models does not import: {e}")
    d = ucr.load_ucr("JapaneseVowels")
    x, _, lengths = d.train[:4]
    model = SequenceClassifier(d.d_input, d.n_classes, d_model=16, n_layers=2, layer={"kind": "s4d", "d_state": 8}).eval()
    with torch.no_grad():
        padded = model(x, lengths)
        for i in range(4):
            alone = model(x[i:i + 1, : int(lengths[i])])
            torch.testing.assert_close(padded[i], alone[0], rtol=1e-4, atol=1e-5)


def test_sktime_folder_is_found_without_import(tmp_path, monkeypatch):
    import sys

    pkg = tmp_path / "sktime"
    (pkg / "datasets" / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('sktime must not be imported')\n")
    _write_problem(pkg / "datasets" / "data", name="Toy2")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert pkg / "datasets" / "data" in ucr.package_data_dirs()
    assert ucr.load_ucr("Toy2").name == "ucr:Toy2" and "sktime" not in sys.modules
