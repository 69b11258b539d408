"""statespaces.data.DATASETS: every registered name loads (small sizes) and feeds the classifier."""
import importlib.util

import pytest
import torch
from torch.utils.data import DataLoader

from statespaces.data import DATASETS, SequenceData, get_dataset
from statespaces.data.base import TokenDataset
from statespaces.data.fashion_mnist import find_root
from statespaces.data.ucr import available_problems

SMALL = {
    "fashion_mnist": dict(n_train=40, n_test=20), "pfashion_mnist": dict(n_train=40, n_test=20),
    "fashion_mnist14": dict(n_train=40, n_test=20), "pfashion_mnist14": dict(n_train=40, n_test=20),
    "mnist1d": dict(num_samples=200),
    "listops": dict(n_train=8, n_test=4, min_length=20, max_length=60),
    "pathfinder": dict(n_train=8, n_test=4),
    "copying": dict(n_train=8, n_test=4, delay=20),
    "adding": dict(n_train=8, n_test=4, length=30),
    "selective_copying": dict(n_train=8, n_test=4, length=30),
    "associative_recall": dict(n_train=8, n_test=4),
}


def _available(name):
    if "fashion" in name:
        try:
            find_root()
        except FileNotFoundError as e:
            return str(e)
    if name.startswith("ucr:") and name[4:] not in available_problems():
        return f"{name[4:]} not installed: pip install --no-deps aeon"
    if name == "mnist1d":
        if importlib.util.find_spec("mnist1d") is None:
            return "mnist1d not installed: pip install mnist1d"
    return None


def test_expected_names_registered():
    for name in ("digits", "pdigits", "fashion_mnist", "pfashion_mnist", "fashion_mnist14", "mnist1d", "listops",
                 "pathfinder", "copying", "adding", "selective_copying", "associative_recall", "ucr:JapaneseVowels",
                 "ucr:BasicMotions", "ucr:GunPoint", "ucr:ArrowHead", "ucr:ItalyPowerDemand", "ucr:ACSF1"):
        assert name in DATASETS


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_name_loads_and_batches(name):
    reason = _available(name)
    if reason:
        pytest.skip(reason)
    data = DATASETS[name](seed=0, **SMALL.get(name, {}))
    # chorales: a language model's tokens, (n, L, 4) int64 inputs that are their own targets
    assert isinstance(data, SequenceData) and data.task == ("lm" if name == "chorales" else "classification")
    for split in (data.train, data.test):   # what statespaces.train.loop checks
        y = split.tensors[1]
        assert len(split) > 0 and y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < data.n_classes
    batch = next(iter(DataLoader(data.train, batch_size=4)))
    x = batch[0]
    assert x.dtype == (torch.int64 if name == "chorales" else torch.float32)
    assert x.shape[1:] == (data.length, data.d_input)
    assert isinstance(data.train, TokenDataset) == (name in ("listops", "copying", "selective_copying",
                                                              "associative_recall"))


def test_dynamic_ucr_names_and_unknown_names():
    assert "ucr:AnyProblem" in DATASETS and "ucr:" not in DATASETS and "nope" not in DATASETS
    if "UnitTest" in available_problems():
        assert get_dataset("ucr:UnitTest").name == "ucr:UnitTest"  # not in the listed keys
    with pytest.raises(ValueError, match="unknown UCR/UEA problem"):
        DATASETS["ucr:NoSuchProblem"](seed=0)
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; valid datasets: .*digits.*listops"):
        get_dataset("nope")
    with pytest.raises(KeyError, match="valid datasets"):
        DATASETS["nope"]


def test_dataset_validation_errors():
    from torch.utils.data import TensorDataset

    ok = TensorDataset(torch.zeros(3, 5, 1), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), found \[2, 2\]"):
        SequenceData(ok, TensorDataset(torch.zeros(1, 5, 1), torch.tensor([2])), 1, 2, 5, "bad")
    with pytest.raises(ValueError, match="test split is empty"):
        SequenceData(ok, TensorDataset(torch.zeros(0, 5, 1), torch.zeros(0, dtype=torch.long)), 1, 2, 5, "bad")
    with pytest.raises(ValueError, match="int64"):
        SequenceData(ok, TensorDataset(torch.zeros(1, 5, 1), torch.tensor([0.0])), 1, 2, 5, "bad")
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\]"):
        SequenceData(ok, TensorDataset(torch.zeros(1, 5, 1), torch.tensor([0]), torch.tensor([6])), 1, 2, 5, "bad")
    with pytest.raises(ValueError, match="shape"):
        SequenceData(ok, TensorDataset(torch.zeros(1, 4, 1), torch.tensor([0])), 1, 2, 5, "bad")


def test_a_setting_the_dataset_does_not_take_is_named_with_the_dataset():
    """get_dataset('digits', n_train=...) raised torch-style "load_digits_sequences() got an unexpected keyword
    argument", naming an inner function and not the dataset."""
    with pytest.raises(TypeError, match=r"dataset 'digits' takes no setting 'n_train'"):
        get_dataset("digits", n_train=5)


def test_the_unknown_problem_message_sets_regression_problems_apart(tmp_path, monkeypatch):
    """The list of "available" problems named regression problems, which load_ucr then refuses."""
    for name, header in (("Cls", "@classLabel true a b"), ("Reg", "@targetLabel true")):
        d = tmp_path / name
        d.mkdir()
        for split in ("TRAIN", "TEST"):
            (d / f"{name}_{split}.ts").write_text(f"@problemName {name}\n@univariate true\n{header}\n@data\n"
                                                  + ("1,2,3:a\n4,5,6:b\n" if name == "Cls" else "1,2,3:0.5\n"))
    monkeypatch.setenv("STATESPACES_UCR", str(tmp_path))
    from statespaces.data import ucr

    with pytest.raises(ValueError) as e:
        ucr.resolve("Nope")
    msg = str(e.value)
    available, regression = msg.split("(regression problems, which load_ucr refuses: ")
    regression = regression.split(")")[0].split(", ")
    assert "Reg" in regression and "Cls" not in regression
    assert "Cls" in available.split(", ") or "Cls," in available
    assert "Reg" not in available.replace("(searched", "").split("available: ")[1].split(", ")


def test_the_digits_datasets_are_named_as_the_user_names_them():
    """The run summary said "psdigits", a name found nowhere in the docs, presets or DATASETS."""
    assert DATASETS["digits"]().name == "digits" and DATASETS["pdigits"]().name == "pdigits"
