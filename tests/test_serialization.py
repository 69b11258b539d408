"""save_pretrained / from_pretrained (issue 20 item 3): bit-exact round trips for every public layer,
block and model, no pickle, clear errors."""
import json

import pytest
import torch

import statespaces
from statespaces import S4, S4D, LinOSS, ResidualBlock
from statespaces.layers.s4nd import S4ND
from statespaces.models.classifier import SequenceClassifier
from statespaces.models.forecast import SSMForecaster
from statespaces.models.image import ImageClassifier
from statespaces.models.lm import SSMLanguageModel, SSMStack
from statespaces.models.sashimi import SaShiMi
from statespaces.serialization import Pretrained, load_pretrained


def _cases():
    return {
        "s4d": (lambda: S4D(4, 8, init="inv", bidirectional=True, seed=0), (2, 10, 4)),
        "s4": (lambda: S4(4, 8, init="legt", l_max=16, seed=0), (2, 10, 4)),
        "linoss": (lambda: LinOSS(4, 6, discretization="IMEX", seed=0), (2, 10, 4)),
        "s4nd": (lambda: S4ND(4, d_state=8, dims=2), (2, 6, 6, 4)),
        "block": (lambda: ResidualBlock(S4D(4, 8, seed=1), norm="batch", dropout=0.1), (2, 10, 4)),
        "classifier": (lambda: SequenceClassifier(3, 5, d_model=8, n_layers=2, layer="s4"), (2, 10, 3)),
        "forecaster": (lambda: SSMForecaster(d_input=3, horizon=4, d_model=8, n_layers=1), (2, 10, 3)),
        "stack": (lambda: SSMStack(8, 2, layer="linoss"), (2, 10, 8)),
        "sashimi": (lambda: SaShiMi(8, 1, pool=(2, 2), layer="s4d"), (2, 8, 8)),
        "lm": (lambda: SSMLanguageModel(7, 8, 2, layer="s4d"), None),
        "image": (lambda: ImageClassifier(1, 3, d_model=8, n_layers=1, layer={"kind": "s4nd", "d_state": 8}), (2, 8, 8, 1)),
    }


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bit_exact(name, dtype, tmp_path):
    build, shape = _cases()[name]
    torch.manual_seed(0)
    model = build().to(dtype).eval()
    with torch.no_grad():                       # make the weights differ from a fresh init
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "m")
    assert sorted(f.name for f in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = type(model).from_pretrained(tmp_path / "m")
    assert type(loaded) is type(model)
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert sd[k].dtype == sd2[k].dtype and torch.equal(sd[k], sd2[k]), k
    x = torch.randint(0, 7, (2, 10)) if shape is None else torch.randn(*shape, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.eval()(x))


def _reload(module, path):
    module.save_pretrained(path)
    return load_pretrained(path).eval()


def test_bandlimit_set_after_construction_survives_a_round_trip(tmp_path):
    """S4ND.bandlimit is settable; the saved config held only the constructor's value, so a layer whose
    bandlimit was set afterwards reloaded without it (outputs off by 0.12). Now the value set last is
    saved: standalone, as a module argument (ResidualBlock) and on a model's own layers."""
    torch.manual_seed(0)
    layer = S4ND(4, dims=2, d_state=16, seed=0).eval()
    layer.bandlimit = 0.1
    block = ResidualBlock(S4ND(4, dims=2, d_state=16, bandlimit=0.3, seed=1)).eval()
    block.layer.bandlimit = None
    image = ImageClassifier(1, 3, d_model=8, n_layers=2, layer={"kind": "s4nd", "d_state": 8, "seed": 0}).eval()
    image.set_bandlimit(0.1)
    image.blocks[1].layer.bandlimit = 0.5
    cases = [(layer, (2, 8, 8, 4), ["bandlimit"]), (block, (2, 8, 8, 4), ["layer.bandlimit"]),
             (image, (2, 8, 8, 1), ["blocks.0.layer.bandlimit", "blocks.1.layer.bandlimit"])]
    for i, (module, shape, names) in enumerate(cases):
        again = _reload(module, tmp_path / str(i))
        for name in names:
            assert _attr(again, name) == _attr(module, name), (type(module).__name__, name)
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.equal(module(x), again(x)), type(module).__name__


def _attr(module, dotted):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def test_config_settings_are_checked_on_load(tmp_path):
    """The "settings" of a config set only declared settable arguments of existing submodules."""
    image = ImageClassifier(1, 3, d_model=8, n_layers=1, layer={"kind": "s4nd", "d_state": 8})
    image.set_bandlimit(0.2)
    image.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["settings"] == {"blocks.0.layer": {"bandlimit": 0.2}}
    for bad, match in [({"blocks.7.layer": {"bandlimit": 0.2}}, "does not have"),
                       ({"blocks.0.layer": {"d_state": 4}}, "may set only"),
                       ({"blocks.0.layer": {"bandlimit": -1.0}}, "bandlimit")]:
        (tmp_path / "config.json").write_text(json.dumps(dict(cfg, settings=bad)))
        with pytest.raises(ValueError, match=match):
            load_pretrained(tmp_path)
    untouched = ImageClassifier(1, 3, d_model=8, n_layers=1, layer={"kind": "s4nd", "d_state": 8})
    assert "settings" not in untouched.config_dict()        # unchanged configs stay as they were


def test_config_is_plain_json_with_nested_modules(tmp_path):
    block = ResidualBlock(S4(4, 8, init="fout"), dropout=0.2)
    block.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["class"] == "ResidualBlock" and cfg["config"]["dropout"] == 0.2
    assert cfg["config"]["layer"]["__module__"]["class"] == "S4"
    assert cfg["config"]["layer"]["__module__"]["config"]["init"] == "fout"
    assert cfg["statespaces"] == statespaces.__version__ and cfg["dtype"] == "float32"


def test_loading_checks_class_files_and_unknown_names(tmp_path):
    S4D(2, 4).save_pretrained(tmp_path / "a")
    with pytest.raises(TypeError, match="holds a S4D, not a S4"):
        S4.from_pretrained(tmp_path / "a")
    assert isinstance(Pretrained.from_pretrained(tmp_path / "a"), S4D)
    assert isinstance(load_pretrained(tmp_path / "a"), S4D)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    cfg["class"] = "os.system"
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown model class 'os.system'"):
        load_pretrained(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "config.json").write_text("{}")
        load_pretrained(tmp_path / "b")
    with pytest.raises((FileNotFoundError, ImportError)):
        load_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("edit, match", [
    (lambda c: [c], r"config.json must hold a JSON object .*got list"),
    (lambda c: None, r"config.json must hold a JSON object .*got NoneType"),
    (lambda c: dict(c, format="1"), r"config.json: 'format' must be an integer, got '1'"),
    (lambda c: dict(c, format=None), r"config.json: 'format' must be an integer, got None"),
    (lambda c: dict(c, **{"class": ["SSMStack"]}), r"config.json: unknown model class \['SSMStack'\]"),
    (lambda c: dict(c, config=dict(c["config"], dropout="NaN")), r"config.json: config of SSMStack does not match "
                                                                   r"its arguments: dropout probability must be a number"),
    (lambda c: dict(c, config=dict(c["config"], d_model=8)), r"the weights in model.safetensors do not fit the model "
                                                              r"that config.json describes .*size mismatch"),
])
def test_a_tampered_config_is_named_in_the_error(edit, match, tmp_path):
    """Raw AttributeError / TypeError / load_state_dict errors from an edited config.json (found by an export and
    serialization campaign) are ValueErrors naming the file and what is wrong."""
    SSMStack(d_model=4, n_layers=1).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(edit(cfg)))
    with pytest.raises(ValueError, match=match):
        load_pretrained(tmp_path)


def test_config_rejects_unsaveable_arguments(tmp_path):
    class Custom(torch.nn.Module):
        pass

    lm = SSMLanguageModel(5, 8, 1, backbone=SSMStack(8, 1))
    lm.save_pretrained(tmp_path / "ok")          # a statespaces backbone module nests fine
    assert isinstance(load_pretrained(tmp_path / "ok").backbone, SSMStack)
    with pytest.raises(ValueError, match="d_model"):
        SSMLanguageModel(5, 8, 1, backbone=Custom())


def test_trainer_checkpoints_load_through_the_same_path(tmp_path):
    from statespaces.train import train
    from statespaces.train.config import build_config

    cfg = build_config(overrides=[("model.d_model", "8"), ("model.n_layers", "1"), ("model.layer.d_state", "4"),
                                  ("trainer.epochs", "1"), ("trainer.out", str(tmp_path / "run"))])
    train(cfg, progress=False)
    model = load_pretrained(tmp_path / "run" / "best")
    assert isinstance(model, SequenceClassifier)
    assert isinstance(SequenceClassifier.from_pretrained(tmp_path / "run"), SequenceClassifier)
    model.save_pretrained(tmp_path / "shared")                 # and re-shared in the hub layout
    again = load_pretrained(tmp_path / "shared")
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


@pytest.mark.parametrize("kind", ["s4", "s4d", "linoss"])
def test_torch_save_of_a_whole_layer_after_stepping(kind, tmp_path):
    """torch.save(module) after a no_grad step: S4's cached step system holds C viewed as complex beside the real
    parameter, and torch.save refused ("Cannot save multiple tensors ... as different types"). The cache is
    pickled empty; the loaded layer steps as the original."""
    import copy

    layer = {"s4": lambda: S4(3, 4, seed=0), "s4d": lambda: S4D(3, 4, seed=0),
             "linoss": lambda: LinOSS(3, 4, seed=0)}[kind]().eval()
    x = torch.randn(2, 3)
    with torch.no_grad():
        y, _ = layer.step(x, layer.initial_state(2))
    torch.save(layer, tmp_path / "layer.pt")
    loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
    for other in (loaded, copy.deepcopy(layer)):
        with torch.no_grad():
            y2, _ = other.step(x, other.initial_state(2))
        assert torch.equal(y, y2)


def test_saved_weights_take_the_umask_mode_not_owner_only(tmp_path):
    """safetensors writes its file 0600; the weights are meant to be shared like the config beside them."""
    import os
    import stat

    from statespaces.train.checkpoint import META, TENSORS, save_checkpoint

    old = os.umask(0o022)
    try:
        out = SequenceClassifier(2, 3, d_model=4, n_layers=1).save_pretrained(tmp_path / "m")
        ckpt = save_checkpoint(tmp_path / "ck", {"w": torch.ones(2)}, {"step": 1})
    finally:
        os.umask(old)
    mode = stat.S_IMODE
    assert mode((out / "model.safetensors").stat().st_mode) == mode((out / "config.json").stat().st_mode) == 0o644
    assert mode((ckpt / TENSORS).stat().st_mode) == mode((ckpt / META).stat().st_mode) == 0o644
