"""UCR/UEA .ts parser and loader (statespaces.data.ucr)."""
import warnings

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


def test_unevenly_spaced_timestamps_warn_and_are_kept():
    """The times of a @timeStamps file are kept per case (``TSFile.times``); series whose samples are unevenly spaced
    (numbers or ISO dates) are named in a warning that says how to use them, evenly spaced ones (the bundled ChinaTown
    cut, one minute apart) are read silently."""
    import warnings

    text = ("@timeStamps true\n@classLabel true a b\n@data\n"
            "(2007-01-01 00:00:00,1),(2007-01-01 00:01:00,2),(2007-01-01 00:03:00,3):a\n"
            "(1,1),(2,2),(3,3),(4,4):b\n(0.5,1),(1.5,?),(4,3):b\n")
    with pytest.warns(UserWarning, match=r"x\.ts: @timeStamps true, and the samples of 2 series are unevenly spaced "
                      r"\(first: x\.ts, line 4, channel 0\).*reads them as evenly spaced steps.*"
                      r"--data\.time_channel true.*--model\.intervals true"):
        f = ucr.parse_ts(text, source="x.ts")
    np.testing.assert_array_equal(f.series[1][0], [1, 2, 3, 4])
    np.testing.assert_array_equal(np.diff(f.times[0]), [60e9, 120e9])          # ISO dates in nanoseconds
    np.testing.assert_array_equal(f.times[1], [0, 1, 2, 3])                  # since the case's first sample
    np.testing.assert_array_equal(f.times[2], [0, 1, 3.5])
    assert np.isnan(f.series[2][0, 1]) and f.series[2][0, 2] == 3
    even = ("@timeStamps true\n@classLabel true a\n@data\n"
            "(2007-01-01 00:00:00,1),(2007-01-01 00:01:00,2),(2007-01-01 00:02:00,3):a\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ucr.parse_ts(even)
        g = ucr.parse_ts("@timeStamps true\n@classLabel true a\n@data\n(x,1),(y,2),(zz,3):a\n")   # unreadable: no claim
    assert g.times == [None] and ucr.parse_ts("@classLabel true a\n@data\n1,2:a\n").times is None


def test_channels_sampled_at_different_times_share_the_union_of_their_times():
    text = ("@timeStamps true\n@dimensions 2\n@classLabel true a\n@data\n"
            "(0,1),(2,2),(3,3):(0,7),(1,8),(3,9):a\n(0,1),(5,2):(0,3),(5,4):a\n(2,1),(1,2):(0,5),(1,6):a\n")
    f = ucr.parse_ts(text)
    np.testing.assert_array_equal(f.times[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(f.series[0], [[1, np.nan, 2, 3], [7, 8, np.nan, 9]])
    np.testing.assert_array_equal(f.times[1], [0, 5])                       # sampled together: as they are
    np.testing.assert_array_equal(f.series[1], [[1, 2], [3, 4]])
    assert f.times[2] is None                                               # not increasing: aligned by index
    np.testing.assert_array_equal(f.series[2], [[1, 2], [5, 6]])


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
    # the training split is padded to its longest series (26 steps), the test split to its own (29)
    assert d.d_input == 12 and d.n_classes == 9 and d.length == 26 and x.shape == (270, 26, 12)
    assert d.test_length == 29 and d.test.tensors[0].shape == (370, 29, 12) and d.info["max_length"] == 29
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


# --- audit: UCR tables and problem names ------------------------------------------------------------
def _write_table(path, labels, X, sep="\t"):
    """One case per line: the label, then the values; NaN written as an empty field (as pandas does)."""
    rows = [sep.join([str(lab)] + ["" if np.isnan(v) else repr(float(v)) for v in x]) for lab, x in zip(labels, X)]
    path.write_text("\n".join(rows) + "\n")


def _pair(folder, name, labels_train, labels_test, sep="\t", suffix=".tsv", length=10, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, labels in (("TRAIN", labels_train), ("TEST", labels_test)):
        X = rng.normal(size=(len(labels), length)) + np.asarray([float(lab) for lab in labels])[:, None]
        _write_table(folder / f"{name}_{split}{suffix}", labels, X, sep)
    return folder / f"{name}_TRAIN{suffix}"


@pytest.mark.parametrize("sep, suffix", [("\t", ".tsv"), (",", ".txt"), (",", "")])
def test_empty_fields_are_missing_values_in_place(tmp_path, sep, suffix):
    """An empty field (``1\\t2\\t\\t4``, ``1,2,,4``) is a missing value where it stands, not a field dropped
    (which shifted the rest of the series left), and it is counted in info["missing_filled"]."""
    X = np.arange(1.0, 11.0)[None].repeat(4, 0)
    X[0, 3] = np.nan
    X[1, 6:8] = np.nan
    for split in ("TRAIN", "TEST"):
        _write_table(tmp_path / f"Gap_{split}{suffix}", [0, 1, 0, 1], X, sep)
    d = ucr.load_ucr(tmp_path / f"Gap_TRAIN{suffix}", normalize="none")
    x = d.train.tensors[0][..., 0]
    assert len(d.train.tensors) == 2 and d.length == 10 and d.info["missing_filled"] == 6
    expected = torch.arange(1.0, 11.0)                      # interpolated in place: the series is a ramp
    for i in range(4):
        torch.testing.assert_close(x[i], expected)
    table = ucr.parse_ucr_table(sep.join(["1", "0.5", "", "0.3"]) + "\n", sep=sep if suffix == ".tsv" else None)
    assert table.series[0].shape == (1, 3) and np.isnan(table.series[0][0, 1])


def test_white_space_runs_still_separate_the_old_archive(tmp_path):
    f = ucr.parse_ucr_table("  1.0000000e+00   0.5  0.25\n2  3    4 \n", sep=None)
    assert f.labels == ["1", "2"] and f.series[0].tolist() == [[0.5, 0.25]] and f.series[1].tolist() == [[3, 4]]


@pytest.mark.parametrize("line, sep", [("\t1.0\t2.0\t3.0", "\t"), (",1.0,2.0,3.0", None), ("NaN\t1\t2", "\t")])
def test_a_missing_label_names_the_file_and_line(tmp_path, line, sep):
    path = tmp_path / "Lab_TRAIN.tsv"
    path.write_text("1\t0.1\t0.2\t0.3\n" + line + "\n")
    with pytest.raises(ValueError, match=r"Lab_TRAIN.tsv, line 2: the class label \(the first field\) is missing"):
        ucr.parse_ucr_table(path.read_text(), source=str(path), sep=sep)


def test_fewer_than_two_training_classes_are_refused(tmp_path):
    path = _pair(tmp_path / "One", "One", [0] * 8, [0] * 4)
    with pytest.raises(ValueError, match=r"One_TRAIN.tsv: every training case has class '0'; .*at least 2 classes"):
        ucr.load_ucr(path)


def test_test_only_classes_are_named_in_a_warning(tmp_path):
    path = _pair(tmp_path / "Unseen", "Unseen", [0, 1] * 4, [0, 1, 2, 2, 3])
    with pytest.warns(UserWarning, match=r"Unseen_TEST.tsv: classes \['2', '3'\] \(3 test cases\) never occur in "
                                         r"Unseen_TRAIN.tsv"):
        d = ucr.load_ucr(path)
    assert d.classes == ["0", "1", "2", "3"]                # labels kept as they are
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # normal data: no warning
        ucr.load_ucr(_pair(tmp_path / "Fine", "Fine", [0, 1] * 4, [1, 0, 1]))


def test_a_column_header_line_is_refused(tmp_path):
    path = _pair(tmp_path / "Hdr", "Hdr", [0, 1] * 4, [0, 1])
    path.write_text("label\t" + "\t".join(str(i) for i in range(10)) + "\n" + path.read_text())
    with pytest.raises(ValueError, match=r"Hdr_TRAIN.tsv, line 1: looks like a column header \(label 'label'"):
        ucr.load_ucr(path)
    ok = ucr.parse_ucr_table("cat\t1\t2\ndog\t3\t4\n", sep="\t")   # named classes are no header
    assert ok.labels == ["cat", "dog"]


@pytest.mark.parametrize("case", [str.lower, str.capitalize, str.upper])
def test_the_companion_file_keeps_the_case_as_written(tmp_path, case):
    folder = tmp_path / "wine"
    train = _pair(folder, "wine", [0, 1] * 3, [1, 0])
    for split in ("TRAIN", "TEST"):
        (folder / f"wine_{split}.tsv").rename(folder / f"wine_{case(split)}.tsv")
    train, test = folder / f"wine_{case('TRAIN')}.tsv", folder / f"wine_{case('TEST')}.tsv"
    for arg in (train, test, folder):
        assert ucr.resolve(arg) == ("wine", train, test)
    assert len(ucr.load_ucr(test).test) == 2


def test_a_problem_name_is_read_from_the_search_folders_not_the_working_folder(tmp_path, monkeypatch):
    """``ucr:<Name>`` reads the same files whatever the working folder, and the run stores those files:
    a bare name only when they are data shipped with a package, else their absolute path."""
    from statespaces.data import DATASETS, canonical_name

    pkg = tmp_path / "site" / "sktime"                          # a stand-in for aeon's/sktime's shipped data
    (pkg / "datasets" / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('sktime must not be imported')\n")
    shipped = _pair(pkg / "datasets" / "data" / "Shipped", "Shipped", [0, 1] * 4, [0, 1], seed=1)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    work = tmp_path / "work"
    _pair(work / "Shipped", "Shipped", [5, 6] * 4, [5, 6], seed=2)     # other data under the same name
    local = _pair(work / "Local", "Local", [0, 1] * 4, [0, 1], seed=3)
    elsewhere = _pair(tmp_path / "env" / "Env", "Env", [0, 1] * 4, [0, 1], seed=4)
    monkeypatch.setenv("STATESPACES_UCR", str(tmp_path / "env"))
    monkeypatch.chdir(work)
    with pytest.warns(UserWarning, match="not .*work/Shipped in the working folder"):
        assert canonical_name("ucr:Shipped") == "ucr:Shipped"
    with pytest.warns(UserWarning):
        assert DATASETS["ucr:Shipped"]().info["train_file"] == str(shipped)
    with pytest.warns(UserWarning, match="'Local' is in no search folder"):
        assert canonical_name("ucr:Local") == f"ucr:{local.resolve()}"
    assert canonical_name("ucr:Env") == f"ucr:{elsewhere.resolve()}"   # $STATESPACES_UCR differs per shell
    monkeypatch.chdir(tmp_path)
    assert DATASETS[canonical_name(f"ucr:{local.resolve()}")]().classes == ["0", "1"]


# --------------------------------------------------------------------------------- training inputs vs the test file


def _problem_with_test(folder, train, test):
    """Write a two-class problem P: the series ``train`` and ``test`` (each (channels, length)) into ``folder``."""
    folder.mkdir()
    for split, series in (("TRAIN", train), ("TEST", test)):
        labels = [("a", "b")[i % 2] for i in range(len(series))]
        (folder / f"P_{split}.ts").write_text(ucr.format_ts(series, labels, "P", class_labels=["a", "b"]))
    return folder


@pytest.mark.parametrize("kwargs", [{}, {"max_length": 4}, {"normalize": "series", "max_length": 5}])
def test_training_inputs_do_not_depend_on_the_test_file(tmp_path, kwargs):
    """Audit: the padded length, the ``max_length`` pooling window and the time channel's clock were
    taken from the longest series of train and test together, so the training inputs changed with
    the test file (JapaneseVowels, max_length 13: pooled by 3, not 2). They come from the training
    file alone: a test file of shorter or of longer series leaves every training tensor
    bit-identical, and the test series are put on the training grid (same window, same clock),
    kept whole."""
    from statespaces.data.base import with_time_channel

    rng = np.random.default_rng(0)
    train = [rng.normal(size=(2, n)) for n in (12, 7, 10, 5)]
    long_lengths = (30, 4, 17)
    short = _problem_with_test(tmp_path / "short", train, [rng.normal(size=(2, n)) for n in (3, 12, 6)])
    long = _problem_with_test(tmp_path / "long", train, [rng.normal(size=(2, n)) for n in long_lengths])
    a, b = (with_time_channel(ucr.load_ucr(d, **kwargs)) for d in (short, long))
    assert a.length == b.length and a.info["pool"] == b.info["pool"]
    assert len(a.train.tensors) == len(b.train.tensors) == 3
    for ta, tb in zip(a.train.tensors, b.train.tensors):
        assert ta.dtype == tb.dtype and ta.shape == tb.shape and torch.equal(ta, tb)
    # the test split on the training grid: pooled by the training window, clock t / (L_train - 1)
    k, L = b.info["pool"], b.length
    x, _, lengths = b.test.tensors
    assert lengths.tolist() == [-(-n // k) for n in long_lengths]
    assert b.test_length == x.shape[1] == int(lengths.max()) > L and a.test_length is None
    n0 = int(lengths[0])
    torch.testing.assert_close(x[0, :n0, 0], torch.arange(n0, dtype=torch.float32) / (L - 1), rtol=0, atol=0)
    assert float(x[1, int(lengths[1]):].abs().sum()) == 0                 # padding (clock included) is 0


def test_an_equal_length_training_split_takes_nothing_from_a_variable_test_file(tmp_path):
    """Whether the training split carries a lengths tensor (which length bucketing reads) is its
    own choice: a test file of padded series adds one to the test split only."""
    rng = np.random.default_rng(1)
    train = [rng.normal(size=(1, 8)) for _ in range(4)]
    equal = _problem_with_test(tmp_path / "equal", train, [rng.normal(size=(1, 8)) for _ in range(3)])
    varied = _problem_with_test(tmp_path / "varied", train, [rng.normal(size=(1, n)) for n in (8, 3, 12)])
    a, b = ucr.load_ucr(equal), ucr.load_ucr(varied)
    assert len(a.train.tensors) == len(b.train.tensors) == 2 and not b.has_lengths
    assert all(torch.equal(ta, tb) for ta, tb in zip(a.train.tensors, b.train.tensors))
    assert b.lengths_test.tolist() == [8, 3, 12] and b.test_length == 12 and len(a.test.tensors) == 2


def test_sequence_data_checks_the_test_length():
    """``test_length`` declares a test split longer than the training grid; without it both splits
    must have ``length`` steps, and lengths are checked against their own split's length."""
    from torch.utils.data import TensorDataset

    from statespaces.data.base import SequenceData

    y = torch.tensor([0, 1])
    train = TensorDataset(torch.zeros(2, 3, 1), y, torch.tensor([3, 2]))
    test = TensorDataset(torch.zeros(2, 5, 1), y, torch.tensor([5, 1]))
    d = SequenceData(train, test, 1, 2, 3, "toy", test_length=5)
    assert d.split_length("train") == 3 and d.split_length("test") == 5
    with pytest.raises(ValueError, match="test split: x must have shape"):
        SequenceData(train, test, 1, 2, 3, "toy")
    with pytest.raises(ValueError, match="test_length"):
        SequenceData(train, test, 1, 2, 3, "toy", test_length=0)


def test_csv_files_skip_a_header_of_column_names(tmp_path):
    """``.csv``: comma-separated, the label first; a first line of column names (``class,t0,...`` or pandas'
    ``label,0,1,...``) is a header and is skipped; numeric first lines and named classes are cases."""
    names = ucr.parse_ucr_table("class,t0,t1,t2\n1,0.5,0.25,?\n2,3,4,5\n", sep=",", header=True)
    assert names.labels == ["1", "2"] and names.lengths.tolist() == [2, 3]
    assert names.header["format"] == "ucr-csv"
    pandas = ucr.parse_ucr_table("label,0,1,2\ncat,0.5,0.25,0.1\ndog,3,4,5\n", sep=",", header=True)
    assert pandas.labels == ["cat", "dog"]
    ones = ucr.parse_ucr_table("y,1,2,3\n1,0.5,0.25,0.1\n2,3,4,5\n", sep=",", header=True)
    assert ones.labels == ["1", "2"]
    # pandas' column numbers over every field, the label's included: pd.DataFrame(np.column_stack([y, X]))
    # .to_csv(path, index=False) writes "0,1,2,3" (read as a case of class "0" until a CLI campaign found it)
    numbered = ucr.parse_ucr_table("0,1,2,3\n1,0.5,0.25,0.1\n2,3,4,5\n", sep=",", header=True)
    assert numbered.labels == ["1", "2"] and numbered.lengths.tolist() == [3, 3]
    for text, labels in (("1,0,1,2\n2,3,4,5\n", ["1", "2"]),          # a numeric label: a case, not a header
                         ("cat,0.5,0.7,0.1\ndog,3,4,5\n", ["cat", "dog"]),
                         ("1,?,2,3\n2,3,4,5\n", ["1", "2"])):       # a missing value is no column name
        assert ucr.parse_ucr_table(text, sep=",", header=True).labels == labels
    with pytest.raises(ValueError, match="line 1: cannot read 't0'"):     # .txt: no header allowed
        ucr.parse_ucr_table("class,t0,t1\n1,2,3\n", sep=None)
    _write_table(tmp_path / "Csv_TRAIN.csv", [0, 1] * 3, np.arange(18.0).reshape(6, 3), ",")
    _write_table(tmp_path / "Csv_TEST.csv", [1, 0], np.ones((2, 3)), ",")
    d = ucr.load_ucr(tmp_path / "Csv_TRAIN.csv", normalize="none")
    assert d.name == "ucr:Csv" and len(d.train) == 6 and d.length == 3
    torch.testing.assert_close(d.train.tensors[0][1, :, 0], torch.tensor([3.0, 4.0, 5.0]))
    assert ucr.looks_like_path("Csv_TRAIN.csv")


@pytest.mark.parametrize("text, line, match", [
    ("1,0.5,0.1\n2,0.1,oops\n", 2, "cannot read 'oops'"),            # only the first line may be a header
    ("a,b,c\nd,e,f\n1,2,3\n", 2, "cannot read 'e'"),                  # and only one
    ("1,,\n2,3,4\n", 1, "the series has no value"),                   # an all-missing first case is no header
    ("1,0.5,abc\n2,3,4\n", 1, "cannot read 'abc'"),                   # numbers and a word: a typo, not a header
    ("cat,0.5,abc\ndog,3,4\n", 1, "cannot read 'abc'"),               # also after a text label
    (",label,0,1\n0,cat,1,2\n", 1, "the first field is empty, as in the header of an index column"),
])
def test_csv_header_rules_never_drop_a_case_silently(text, line, match):
    with pytest.raises(ValueError, match=rf"line {line}: {match}"):
        ucr.parse_ucr_table(text, sep=",", header=True)


def test_csv_first_cases_that_only_resemble_a_header_are_kept():
    """Text labels before numbers that do not count up from 0 or 1 are a case."""
    for text in ("cat,0,2,4\ndog,1,1,1\n", "cat,2,3,4\ndog,1,1,1\n", "cat,1.5,2.5\ndog,1,1\n"):
        assert ucr.parse_ucr_table(text, sep=",", header=True).labels == ["cat", "dog"], text


def test_a_csv_file_is_read_as_csv(tmp_path):
    """read_series_file splits a .csv on commas only and says so in its format."""
    path = tmp_path / "Fmt_TRAIN.csv"
    path.write_text("class,t0,t1\n1,0.5,0.25\n2,3,4\n")
    f = ucr.read_series_file(path)
    assert f.header["format"] == "ucr-csv" and f.labels == ["1", "2"]
    path.write_text("1 0.5 0.25\n")                                   # white space is no CSV separator
    with pytest.raises(ValueError, match="expected a class label followed by the values"):
        ucr.read_series_file(path)


@pytest.mark.parametrize("text, sep, value", [("1\t0.5\tinf\t3\n", "\t", "inf"), ("1,0.5,-Infinity\n", ",", "-Infinity"),
                                              ("2 1e400 3\n", None, "1e400")])
def test_an_infinite_value_is_refused_where_it_is_read(text, sep, value):
    """An infinity in a file was parsed and failed one epoch later as a NaN/inf input of the model, naming no
    file (found by a CLI campaign); it is refused at load time with the file and line."""
    with pytest.raises(ValueError, match=rf"Inf_TRAIN, line 1: value '{value}' is not finite; write a missing value"):
        ucr.parse_ucr_table(text, source="Inf_TRAIN", sep=sep)


def test_an_infinite_value_in_a_ts_file_is_refused():
    ts = "@problemName x\n@univariate true\n@classLabel true a b\n@data\n0.5,-inf,3:a\n"
    with pytest.raises(ValueError, match=r"X.ts, line 5, channel 0: value '-inf' is not finite; write a missing "
                                         r"value as '\?'"):
        ucr.parse_ts(ts, source="X.ts")


def test_series_normalisation_of_series_too_short_to_have_a_spread(tmp_path):
    """normalize='series' maps a one-step series to 0 (a CLI campaign trained the ucr preset on all-zero inputs
    without a word): refused when every training series has one step, a warning when some series have fewer
    than three; global normalisation keeps them."""
    one = _pair(tmp_path / "One", "One", ["1", "2"] * 4, ["1", "2"], length=1)
    with pytest.raises(ValueError, match="every training series has a single step, which normalize='series' maps "
                                         "to 0.*--data.normalize global"):
        ucr.load_ucr(one, normalize="series")
    d = ucr.load_ucr(one, normalize="global")
    assert d.train.tensors[0].abs().max() > 0
    two = _pair(tmp_path / "Two", "Two", ["1", "2"] * 4, ["1", "2"], length=2)
    with pytest.warns(UserWarning, match=r"10 of 10 series have fewer than 3 steps"):
        d = ucr.load_ucr(two, normalize="series")
    assert set(d.train.tensors[0].abs().flatten().tolist()) == {1.0}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ucr.load_ucr(two, normalize="global")
        ucr.load_ucr(_pair(tmp_path / "Three", "Three", ["1", "2"] * 4, ["1", "2"], length=3), normalize="series")


# --- a data-API campaign (2026-12-07): files read wrongly without a word ---------------------------
def _files(tmp_path, name, suffix, train, test):
    (tmp_path / f"{name}_TRAIN{suffix}").write_text(train)
    (tmp_path / f"{name}_TEST{suffix}").write_text(test)
    return tmp_path / f"{name}_TRAIN{suffix}"


def test_csv_fields_may_be_quoted(tmp_path):
    path = _files(tmp_path, "Q", ".csv", '"a",5,7,9\n"b",1,2,3\n"a",4,4,4\n', '"a",5,7,9\n"b",1,2,3\n')
    assert ucr.read_series_file(path).labels == ["a", "b", "a"]
    tsv = _files(tmp_path, "T", ".tsv", '"a"\t5\t7\n"b"\t1\t2\n', '"a"\t5\t7\n"b"\t1\t2\n')
    assert ucr.read_series_file(tsv).labels == ["a", "b"]
    data = ucr.load_ucr(path, normalize="none")
    assert data.train.tensors[0][:, :, 0].tolist() == [[5, 7, 9], [1, 2, 3], [4, 4, 4]]


def test_a_first_csv_line_of_numbers_read_as_names_is_named(tmp_path):
    """'a,1,2,3' is pandas' header or a case: skipped, as before, but no longer silently."""
    path = _files(tmp_path, "P", ".csv", "a,1,2,3\nb,4,5,6\na,7,8,9\n", "a,1,1,1\nb,2,2,2\n")
    with pytest.warns(UserWarning, match=r"line 1: 'a,1,2,3' is read as column names and skipped"):
        assert len(ucr.read_series_file(path).labels) == 2
    plain = _files(tmp_path, "N", ".csv", "class,t0,t1\na,1,2\nb,4,5\n", "a,1,1\nb,2,2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # names that are words: a header beyond doubt
        assert len(ucr.read_series_file(plain).labels) == 2


def test_values_beyond_float32_are_refused_unless_normalised_into_it(tmp_path):
    """1e39 became inf in the float32 tensors; data on that scale that normalises to O(1) still loads."""
    path = _files(tmp_path, "R", ".tsv", "1\t1e39\t2\n2\t3\t4\n", "1\t1\t2\n2\t3\t4\n")
    with pytest.raises(ValueError, match=r"R_TRAIN.tsv: case 0 holds values beyond float32's range"):
        ucr.load_ucr(path, normalize="none")
    big = _files(tmp_path, "B", ".tsv", "1\t1e39\t2e39\t3e39\n2\t3e39\t1e39\t2e39\n",
                 "1\t2e39\t2e39\t1e39\n2\t1e39\t3e39\t1e39\n")
    for mode in ("global", "series"):
        x = ucr.load_ucr(big, normalize=mode).train.tensors[0]
        assert bool(torch.isfinite(x).all()) and float(x.abs().max()) < 2
    # beyond float64's statistics: series z-scores read 0 silently; global's advice named the mode in use
    huge = _files(tmp_path, "H", ".tsv", "1\t1e300\t-1e300\t1e300\n2\t1\t2\t3\n", "1\t1\t2\t3\n2\t1\t2\t3\n")
    with pytest.raises(ValueError, match="too large for its own statistics"):
        ucr.load_ucr(huge, normalize="series")
    with pytest.raises(ValueError, match=r"after normalisation 'global'.*cannot bring it into range") as err:
        ucr.load_ucr(huge, normalize="global")
    assert "normalise it" not in str(err.value)


def test_ts_file_without_cases_says_so(tmp_path):
    text = "@problemName S\n@univariate true\n@equalLength false\n@classLabel true a b\n@data\n"
    path = _files(tmp_path, "S", ".ts", text, text)
    with pytest.raises(ValueError, match=r"S_TRAIN.ts has no cases"):
        ucr.load_ucr(path)


def test_one_training_case_per_class_is_questioned(tmp_path):
    """aeon ships anomaly-detection CSVs (timestamp,value,is_anomaly): every row became its own class."""
    head = "timestamp,value,is_anomaly\n"
    path = _files(tmp_path, "T", ".csv", head + "0,5.1,0\n1,5.3,0\n2,5.0,1\n", head + "0,5.1,0\n1,9.9,1\n")
    with pytest.warns(UserWarning, match="each of its 3 classes has a single training case"):
        ucr.load_ucr(path, normalize="none")
