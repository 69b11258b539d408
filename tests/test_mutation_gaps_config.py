"""Checks for the survivors of a mutation audit of the layer configs, input checks, initializations, tasks and the
dataset containers and UCR loading (74 mutants, 14 survived, each a behaviour no test named: the legacy argument
upgrade, ``describe``, S4D-Rand's order, the tasks' label and subset handling, UCR class order and split grids)."""
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from statespaces.data.base import SequenceData
from statespaces.data.ucr import _class_order, lengths_wanted, load_ucr, split_grids
from statespaces.layers import S4DConfig
from statespaces.layers.config import describe, upgrade_layer_arguments
from statespaces.layers.init import s4d_init
from statespaces.train.tasks import TASKS, Classification, target_variance


# ---- saved arguments from before the layer configs --------------------------------------------------------------
def test_legacy_layer_arguments_are_upgraded():
    assert upgrade_layer_arguments({"layer_kwargs": {"d_state": 8}})["layer"] == {"kind": "s4d", "d_state": 8}
    assert upgrade_layer_arguments({"layer": "linoss", "layer_kwargs": {}})["layer"]["kind"] == "linoss"
    with pytest.raises(ValueError, match="both a layer table"):
        upgrade_layer_arguments({"layer": {"kind": "s4"}, "layer_kwargs": {"d_state": 8}})
    new = {"layer": {"kind": "s4"}}
    assert upgrade_layer_arguments(new) is new


def test_describe_lists_every_setting_with_its_default():
    lines = describe(S4DConfig).splitlines()
    assert len(lines) == len(S4DConfig.keys())
    assert any(line.startswith("init = 'legs': ") for line in lines)


# ---- S4D-Rand ---------------------------------------------------------------------------------------------------
def test_s4d_rand_frequencies_are_sorted_and_in_range():
    N, H = 16, 5
    A, B, conj = s4d_init("rand", N, H, generator=torch.Generator().manual_seed(0))
    assert conj and A.shape == (H, N // 2)
    assert (A.imag.diff(dim=-1) >= 0).all()
    assert (A.imag >= 0).all() and (A.imag <= torch.pi * N / 2).all()
    assert (A.real == -0.5).all() and (B == 1).all()


# ---- tasks --------------------------------------------------------------------------------------------------------
def test_classification_refuses_a_label_equal_to_n_classes():
    Classification().check_targets(torch.tensor([0, 1, 2]), 3, "train targets")
    with pytest.raises(ValueError):
        Classification().check_targets(torch.tensor([0, 1, 3]), 3, "train targets")


def test_target_variance_of_a_subset_uses_its_own_targets():
    ds = TensorDataset(torch.zeros(4, 2, 1), torch.tensor([0.0, 0.0, 10.0, 10.0]))
    assert target_variance(Subset(ds, [0, 1])) == 0.0
    assert target_variance(Subset(ds, [1, 2])) == 25.0
    assert target_variance(ds) == 25.0


def test_each_task_selects_by_its_own_validation_metric():
    assert TASKS["classification"].selection == "validation accuracy"
    assert TASKS["lm"].selection == "validation NLL"


# ---- dataset container -------------------------------------------------------------------------------------------
def _data(**kw):
    x, y = torch.zeros(2, 4, 1), torch.tensor([0, 1])
    train = kw.pop("train", TensorDataset(x, y))
    return SequenceData(train, TensorDataset(x, y), 1, 2, 4, "toy", **kw)


def test_sequence_data_refuses_bad_lengths_and_class_names():
    _data(train=TensorDataset(torch.zeros(2, 4, 1), torch.tensor([0, 1]), torch.tensor([1, 4])))
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        _data(train=TensorDataset(torch.zeros(2, 4, 1), torch.tensor([0, 1]), torch.tensor([0, 4])))
    with pytest.raises(ValueError, match="3 class names for n_classes=2"):
        _data(classes=["a", "b", "c"])


# ---- UCR: class order, lengths and grids --------------------------------------------------------------------------
def test_ucr_class_order():
    assert _class_order(None, ["10", "2", "1", "2"]) == ["1", "2", "10"]       # numeric labels by value
    assert _class_order(None, ["dog", "cat", "dog"]) == ["cat", "dog"]         # others sorted, not first-seen
    assert _class_order(["b", "a"], ["a"]) == ["b", "a"]                        # declared (a header): as declared


def test_ucr_lengths_and_grids_rules():
    assert lengths_wanted(None, True, False) == (True, True)
    assert lengths_wanted(None, False, True) == (False, True)
    assert lengths_wanted(False, True, True) == (False, False)
    assert split_grids(np.array([6, 4]), np.array([2, 3])) == (6, 6)
    assert split_grids(np.array([6, 4]), np.array([2, 9])) == (6, 9)


def test_ucr_variable_length_toy_pair(tmp_path):
    (tmp_path / "Toy_TRAIN.txt").write_text("1 1 2 3 4 5 6\n2 6 5 4 3 2 1\n1 1 2 3 4\n2 4 3 2 1 0 1\n")
    (tmp_path / "Toy_TEST.txt").write_text("1 1 2\n2 3 2 1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                            # (notes on the variable lengths)
        d = load_ucr(tmp_path / "Toy_TRAIN.txt", normalize="none")
    assert d.info["min_length"] == 2                               # the shortest series of either split
    assert tuple(d.test.tensors[0].shape) == (2, 6, 1) and d.test_length is None
    assert d.test.tensors[2].tolist() == [2, 3] and d.train.tensors[2].tolist() == [6, 6, 4, 6]
    torch.testing.assert_close(d.test.tensors[0][1, :3, 0], torch.tensor([3.0, 2.0, 1.0]))
