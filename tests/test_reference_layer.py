"""``experiments/reference_layer.py``: a preset trained with an external (official) layer in place of ours.

The official state-spaces/s4 code is never part of this repository, so these tests give the script a
stand-in ``s4.py`` with the same ``FFTConv`` signature: a learnable causal kernel tagged with the
official ``_optim`` attribute, and a skip D. What is checked is the script's plumbing, which patches
trainer internals: every block's layer is replaced, the tagged parameters train in the SSM group
(``ssm_lr``, no weight decay), D in the no-decay group, and train / evaluate run through the CLI.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import statespaces.train.loop as loop
from statespaces.blocks import ResidualBlock
from statespaces.train.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "reference_layer.py"

FAKE_S4 = '''
import torch
from torch import nn
import pytorch_lightning.utilities   # the official file imports it; the script supplies a stand-in

class FFTConv(nn.Module):
    def __init__(self, d_model, d_state=64, bidirectional=False, activation="gelu", transposed=True,
                 dropout=0.0, mode="dplr", init="legs", dt_min=1e-3, dt_max=1e-1, lr=None):
        super().__init__()
        assert activation is None and not transposed and dropout == 0.0
        self.settings = dict(d_state=d_state, bidirectional=bidirectional, mode=mode, init=init,
                             dt_min=dt_min, dt_max=dt_max, lr=lr)
        self.k = nn.Parameter(0.1 * torch.randn(d_model, 8))
        self.k._optim = {"lr": lr, "weight_decay": 0.0}
        self.D = nn.Parameter(torch.randn(1, d_model))

    def forward(self, x, state=None, rate=1.0):
        B, L, H = x.shape
        u = torch.nn.functional.pad(x.transpose(1, 2), (self.k.shape[1] - 1, 0))
        y = torch.nn.functional.conv1d(u, self.k.flip(-1).unsqueeze(1), groups=H)
        return y.transpose(1, 2) + x * self.D, None
'''


@pytest.fixture
def script(tmp_path, monkeypatch):
    """The script's module, with the trainer functions it patches restored after the test."""
    monkeypatch.setattr(loop, "build_model", loop.build_model)
    monkeypatch.setattr(loop, "param_groups", loop.param_groups)
    spec = importlib.util.spec_from_file_location("reference_layer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fake = tmp_path / "s4.py"
    fake.write_text(FAKE_S4)
    return module, str(fake)


def _config(**layer):
    return TrainConfig.from_dict({"model": {"d_model": 8, "n_layers": 2,
                                            "layer": {"kind": "s4d", "d_state": 4, **layer}},
                                  "trainer": {"lr": 1e-2, "ssm_lr": 2e-3, "weight_decay": 0.05}})


def test_every_block_gets_the_official_layer_with_the_presets_settings(script):
    module, fake = script
    module.install({"official": fake, "mode": "diag", "init": "legs"})
    model = loop.build_model(_config(bidirectional=True, dt_min=0.01, dt_max=0.5), d_input=3, n_classes=2)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2
    for block in blocks:
        assert isinstance(block.layer, module.OfficialLayer)
        assert block.layer.conv.settings == dict(d_state=4, bidirectional=True, mode="diag", init="legs",
                                                 dt_min=0.01, dt_max=0.5, lr=2e-3)
    x = torch.randn(2, 5, 3)
    assert model(x).shape == (2, 2)
    with pytest.raises(ValueError, match="convolution mode only"):
        blocks[0].layer(torch.randn(2, 5, 8), return_state=True)


def test_tagged_parameters_train_in_the_ssm_group_and_D_without_decay(script):
    module, fake = script
    module.install({"official": fake, "mode": "diag", "init": "legs"})
    model = loop.build_model(_config(), d_input=3, n_classes=2)
    groups = loop.param_groups(model, lr=1e-2, weight_decay=0.05, ssm_lr=2e-3)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert len(by_id) == sum(len(g["params"]) for g in groups)                 # each parameter once
    assert set(by_id) == {id(p) for p in model.parameters()}                   # and every one
    for block in (m for m in model.modules() if isinstance(m, ResidualBlock)):
        k = by_id[id(block.layer.conv.k)]
        assert (k["lr"], k["weight_decay"]) == (2e-3, 0.0)
        d = by_id[id(block.layer.conv.D)]
        assert (d["lr"], d["weight_decay"]) == (1e-2, 0.0)
        w = by_id[id(block.output.weight)]
        assert (w["lr"], w["weight_decay"]) == (1e-2, 0.05)


def test_train_and_evaluate_through_the_cli(script, tmp_path, monkeypatch, capsys):
    module, fake = script
    from test_ensemble import _write_waves

    data = _write_waves(tmp_path / "Waves")
    out = tmp_path / "run"
    monkeypatch.setattr("sys.argv", ["reference_layer.py", "--official", fake, "--", "train", "--data.name",
                                     str(data), "--model.d_model", "8", "--model.n_layers", "1",
                                     "--model.layer.d_state", "4", "--trainer.epochs", "2", "--trainer.batch_size",
                                     "8", "--trainer.out", str(out), "--trainer.tensorboard", "off", "--no-progress"])
    assert module.main() == 0
    assert json.loads((out / "reference.json").read_text()) == {"official": fake, "mode": "diag", "init": "legs"}
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["test_acc"] <= 1.0
    from safetensors.torch import load_file

    assert any(k.endswith("layer.conv.k") for k in load_file(str(out / "best" / "tensors.safetensors")))
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["reference_layer.py", "--official", fake, "--", "evaluate", str(out)])
    assert module.main() == 0
    assert f"{100 * summary['test_acc']:.2f}" in capsys.readouterr().out


def test_missing_official_file_and_missing_separator_are_named(script, monkeypatch):
    module, _ = script
    with pytest.raises(SystemExit, match="no such file"):
        module.load_official("/nonexistent/s4.py")
    monkeypatch.setattr("sys.argv", ["reference_layer.py", "--official", "x"])
    with pytest.raises(SystemExit, match="usage"):
        module.main()
