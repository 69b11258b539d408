"""A practitioner's own time-series files (campaign of 2026-12-07): the corners that gave wrong inputs silently or
unclear messages, each checked against a value worked out by hand."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_ux import SMALL, _cli, _write_ucr

from statespaces.data import SequenceData, canonical_name, get_dataset, ucr
from statespaces.data.base import normalize_series


def _tsv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join([str(lab)] + [str(v) for v in x]) + "\n" for lab, x in rows))
    return path


def _pair(folder: Path, train_rows, test_rows, name="P") -> Path:
    _tsv(folder / f"{name}_TEST.tsv", test_rows)
    return _tsv(folder / f"{name}_TRAIN.tsv", train_rows)


def _values(data: SequenceData, split: str = "train") -> np.ndarray:
    return getattr(data, split).tensors[0][..., 0].numpy().astype(np.float64)


# --- normalisation: a constant channel whose value is not exact in binary ------------------------------------------
def test_a_constant_series_of_point_one_becomes_zero_under_series_normalisation(tmp_path):
    """``np.std([0.1] * 6)`` is about 1e-17, not 0: the series was divided by it and read as all 1.0."""
    f = _pair(tmp_path, [(1, [0.1] * 6), (2, [1, 2, 3, 4, 5, 6])], [(1, [0.3] * 6), (2, [6, 5, 4, 3, 2, 1])])
    data = ucr.load_ucr(f, normalize="series")
    assert np.array_equal(_values(data)[0], np.zeros(6)) and np.array_equal(_values(data, "test")[0], np.zeros(6))
    z = (np.arange(1, 7) - 3.5) / np.arange(1, 7).std()
    assert np.allclose(_values(data)[1], z, atol=1e-6)


def test_a_constant_training_channel_is_only_shifted_under_global_normalisation(tmp_path):
    """A dead sensor (0.1 in every training case): its std was 2.8e-17, so a test value of 0.2 read as 3.6e15."""
    f = _pair(tmp_path, [(1, [0.1] * 25), (2, [0.1] * 25)], [(1, [0.2] * 25), (2, [0.1] * 25)])   # 50: std 2.8e-17
    data = ucr.load_ucr(f, normalize="global")
    assert np.abs(_values(data)).max() < 1e-12
    assert np.allclose(_values(data, "test")[0], 0.1, atol=1e-7)       # 0.2 - 0.1, not scaled
    assert data.info["std"][0] == 1.0


def test_normalize_series_treats_a_float32_constant_as_constant():
    x = torch.full((2, 7, 1), 0.1)
    x[1, :, 0] = torch.arange(7.0)
    data = SequenceData(train=torch.utils.data.TensorDataset(x, torch.tensor([0, 1])),
                        test=torch.utils.data.TensorDataset(x.clone(), torch.tensor([0, 1])), d_input=1,
                        n_classes=2, length=7, name="t")
    out = normalize_series(data).train.tensors[0]
    assert torch.equal(out[0], torch.zeros(7, 1))
    assert torch.allclose(out[1, :, 0], (torch.arange(7.0) - 3) / torch.arange(7.0).std(unbiased=False))


def test_constant_rows_allows_float64_rounding_only():
    rows = np.array([[0.1] * 4, [1.0, 1.0 + 2 ** -52, 1.0, 1.0], [1.0, 1.0 + 1e-9, 1.0, 1.0], [np.nan] * 4])
    assert ucr.constant_rows(rows).tolist() == [True, True, False, False]


def test_missing_mean_under_series_normalisation_fills_with_the_case_s_own_mean(tmp_path):
    """Filled with the training split's mean (0.33 here) and then z-scored on its own, the gap was the series'
    largest value by far; with its own mean it is 0 after normalisation, as the docs say."""
    f = _pair(tmp_path, [(1, [0, 1, 0, 1]), (2, [1, 0, 1, 0])], [(1, [100, "?", 102, 101]), (2, [1, 2, 3, 4])])
    data = ucr.load_ucr(f, normalize="series", missing="mean")
    want = np.array([100, 101, 102, 101], float)
    assert np.allclose(_values(data, "test")[0], (want - want.mean()) / want.std(), atol=1e-6)
    assert _values(data, "test")[0][1] == pytest.approx(0.0, abs=1e-7)


# --- .ts labels and headers ----------------------------------------------------------------------------------------
TS_HEAD = "@problemName P\n@univariate true\n@equalLength true\n@seriesLength 3\n"


def test_ts_refuses_one_number_written_as_two_labels():
    text = TS_HEAD + "@classLabel true\n@data\n1,2,3:1\n2,3,4:1.0\n3,4,5:2\n"
    with pytest.raises(ValueError, match=r"'1' and '1.0' are the same number written two ways"):
        ucr.parse_ts(text)


def test_ts_takes_declared_classes_as_declared():
    """Two classes declared as '01' and '1' are two classes (the spelling check is for undeclared labels only)."""
    parsed = ucr.parse_ts(TS_HEAD + "@classLabel true 01 1\n@data\n1,2,3:01\n2,3,4:1\n")
    assert parsed.labels == ["01", "1"]


@pytest.mark.parametrize("label", ["?", ""])
def test_ts_refuses_a_missing_class_label(label):
    text = TS_HEAD + f"@classLabel true\n@data\n1,2,3:a\n2,3,4:{label}\n"
    with pytest.raises(ValueError, match=r"line 8: the class label \(after the last ':'\) is missing"):
        ucr.parse_ts(text)


def test_ts_header_key_followed_by_a_tab():
    parsed = ucr.parse_ts(TS_HEAD + "@classLabel\ttrue a b\n@data\n1,2,3:a\n2,3,4:b\n")
    assert parsed.labels == ["a", "b"] and parsed.class_labels == ["a", "b"]


def test_a_ts_file_without_a_classlabel_line_says_so(tmp_path):
    for split in ("TRAIN", "TEST"):
        (tmp_path / f"Q_{split}.ts").write_text(TS_HEAD + "@data\n1,2,3\n2,3,4\n")
    with pytest.raises(ValueError, match=r"no @classLabel line before @data.*@classLabel true <label>"):
        ucr.load_ucr(tmp_path / "Q_TRAIN.ts")


# --- file names, encodings, separators -----------------------------------------------------------------------------
def test_an_old_ucr_file_with_a_dot_in_its_name(tmp_path):
    for split in ("TRAIN", "TEST"):
        (tmp_path / f"Wine.v2_{split}").write_text("1  0.5  0.25\n2  0.1  0.2\n")
    data = ucr.load_ucr(tmp_path / "Wine.v2_TRAIN", normalize="none")
    assert data.classes == ["1", "2"] and np.allclose(_values(data)[0], [0.5, 0.25])


def test_a_utf16_file_is_named_as_such(tmp_path):
    for split in ("TRAIN", "TEST"):
        (tmp_path / f"U_{split}.tsv").write_text("1\t0.5\t0.25\n2\t0.1\t0.2\n", encoding="utf-16")
    with pytest.raises(ValueError, match=r"not UTF-8 text .*UTF-16"):
        ucr.load_ucr(tmp_path / "U_TRAIN.tsv")


@pytest.mark.parametrize("suffix, line, hint", [
    (".tsv", "1 0.5 0.25", r"separated by tabs \(\.tsv\); this line seems separated by spaces"),
    (".csv", "1;0.5;0.25", r"separated by commas \(\.csv\); this line seems separated by semicolons"),
])
def test_a_wrong_separator_is_named(tmp_path, suffix, line, hint):
    path = tmp_path / f"S_TRAIN{suffix}"
    path.write_text("a,b,c\n" + line + "\n" if suffix == ".csv" else line + "\n")
    with pytest.raises(ValueError, match=hint):
        ucr.read_series_file(path)


def test_a_file_whose_first_column_counts_its_lines_is_refused(tmp_path):
    """aeon's anomaly-detection pair (timestamp,value,is_anomaly) loaded as 1,200 classes of one case each."""
    path = tmp_path / "A_TRAIN.csv"
    path.write_text("timestamp,value,is_anomaly\n" + "".join(f"{t},{np.sin(t):.4f},0\n" for t in range(150)))
    with pytest.raises(ValueError, match=r"the first column counts the lines \(0, 1, 2, \.\.\.\)"):
        ucr.read_series_file(path)
    ok = tmp_path / "F_TRAIN.tsv"                    # one case per class in order (UCR's Fungi): still read
    _tsv(ok, [(k, [k, k + 1.0]) for k in range(1, 19)])
    assert len(ucr.read_series_file(ok).labels) == 18


# --- names and paths -----------------------------------------------------------------------------------------------
def test_a_bare_problem_name_suggests_the_ucr_prefix(tmp_path, monkeypatch):
    _write_ucr(tmp_path / "uc" / "Waves", ".tsv")
    monkeypatch.setenv("STATESPACES_UCR", str(tmp_path / "uc"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"unknown dataset 'waves'; did you mean ucr:Waves \(the UCR/UEA problem\)"):
        canonical_name("waves")
    with pytest.raises(ValueError, match=r"did you mean ucr:Waves"):
        get_dataset("Waves")


def test_a_missing_relative_path_names_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"relative to the working folder {tmp_path}"):
        canonical_name("data/X_TRAIN.tsv")
    with pytest.raises(FileNotFoundError, match=rf"relative to the working folder {tmp_path}"):
        ucr.resolve("data/X_TRAIN.tsv")


def test_a_symbolic_link_is_stored_as_the_link(tmp_path):
    real = _write_ucr(tmp_path / "v1", ".tsv")
    os.symlink(tmp_path / "v1", tmp_path / "current")
    link = tmp_path / "current" / real.name
    assert canonical_name(str(link)) == f"ucr:{link}"
    assert canonical_name(f"ucr:{tmp_path}/v1/../current/{real.name}") == f"ucr:{link}"


# --- evaluate on data whose content changed since training ---------------------------------------------------------
def test_evaluate_warns_when_the_training_file_changed(tmp_path, capsys):
    """The statistics are re-derived from the files as they are: a training file edited in place moved the score
    silently (52.00% -> 50.67% in the campaign). Each file is judged against the digest of its own role."""
    train = _write_ucr(tmp_path / "d", ".tsv")
    rc, _, err = _cli(capsys, "train", "--data.name", str(train), *SMALL, "--trainer.out", str(tmp_path / "run"))
    assert rc == 0, err

    def evaluate_warnings():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rc, _, err = _cli(capsys, "evaluate", str(tmp_path / "run"))
        assert rc == 0, err
        return [str(w.message) for w in caught if "from the content it was trained on" in str(w.message)]

    assert evaluate_warnings() == []
    text, test = train.read_text(), train.with_name(train.name.replace("TRAIN", "TEST"))
    train.write_text("\n".join(text.splitlines()[:-1]) + "\n")         # one training case fewer
    said = evaluate_warnings()
    assert len(said) == 1 and f": {train} differs from the content it was trained on" in said[0]
    train.write_text(text)
    test.write_text(text)                    # the test file replaced by the training data: each file is judged by role
    said = evaluate_warnings()
    assert len(said) == 1 and f": {test} differs from the content it was trained on" in said[0]
