"""One typed config per layer (statespaces.layers.config): parse-time failures naming the key for every
layer kind, TOML and command-line forms, round trips through save_pretrained and old checkpoints,
and S4ND streaming (step vs convolution in float64) inside the residual block."""
import inspect
import json
import warnings
from dataclasses import fields

import pytest
import torch

from statespaces.layers import S4ND, DLinOSS, LinOSS, S4NDConfig, layer_config
from statespaces.layers.config import LayerConfig
from statespaces.layers.registry import LAYERS, config_class, layer_class, make_layer
from statespaces.serialization import load_pretrained
from statespaces.train.config import ConfigError, TrainConfig, build_config

KINDS = tuple(LAYERS)
#: one key each kind does not take (and what it is a setting of elsewhere)
FOREIGN = {"s4d": "n_oscillators", "s4": "n_oscillators", "linoss": "init", "dlinoss": "dt_min", "s4nd": "rank", "s5": "init"}


@pytest.mark.parametrize("kind", KINDS)
def test_config_fields_are_the_constructor_arguments_with_its_defaults(kind):
    cls, cfg_cls = layer_class(kind), config_class(kind)
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
              if n not in ("self", "d_model", "d_state") or (n == "d_state" and p.default is not None)}
    assert [f.name for f in fields(cfg_cls)] == list(params)
    default = cfg_cls()
    for name, p in params.items():       # the constructor's default, read through the field's rule
        assert getattr(default, name) == getattr(cfg_cls(**{name: p.default}), name), name


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_and_inapplicable_keys_fail_with_their_name_the_kind_and_the_valid_keys(kind):
    for key in ("d_stat", FOREIGN[kind]):
        with pytest.raises(ConfigError) as e:
            layer_config({"kind": kind, key: 1}, "model.layer")
        msg = str(e.value)
        assert msg.startswith(f"model.layer.{key}: not a setting of layer kind {kind!r}")
        assert all(k in msg for k in config_class(kind).keys())


@pytest.mark.parametrize("kind", KINDS)
def test_bad_values_fail_when_read(kind):
    key = "dims" if kind == "s4nd" else ("n_oscillators" if "linoss" in kind else "d_state")
    for bad in (0, 2.5, "8", True):
        with pytest.raises(ConfigError, match=rf"^model\.layer\.{key}: got "):
            layer_config({"kind": kind, key: bad}, "model.layer")
    with pytest.raises(ConfigError, match=r"model\.layer\.seed: got"):
        layer_config({"kind": kind, "seed": -1}, "model.layer")


def test_oscillator_layers_refuse_d_state_and_say_what_to_use():
    for kind in ("linoss", "dlinoss"):
        with pytest.raises(ConfigError, match=r"model\.layer\.d_state: .*use n_oscillators"):
            build_config(overrides=[("model.layer", kind), ("model.layer.d_state", "32")])
    for key, value in (("init", "legs"), ("real_transform", "exp")):      # init: once silently dropped
        with pytest.raises(ConfigError, match=rf"model\.layer\.{key}: not a setting of layer kind 'linoss'"):
            build_config(overrides=[("model.layer.kind", "linoss"), (f"model.layer.{key}", value)])


def test_switching_kind_over_a_preset_leaves_behind_what_the_new_kind_does_not_take():
    """``--preset uea --model.layer.kind linoss``: the preset's S4D d_state is no LinOSS setting, so it stays
    behind (named in a warning) while the settings both kinds take (bidirectional) carry over."""
    with pytest.warns(UserWarning, match=r"'s4d' -> 'linoss' leaves behind d_state=32"):
        c = build_config("uea", overrides=[("model.layer.kind", "linoss")])
    assert c.model.layer == config_class("linoss")(bidirectional=True)
    with pytest.warns(UserWarning, match="d_state=32"):
        c = build_config("uea", overrides=[("model.layer", '{"kind": "linoss", "n_oscillators": 16}')])
    assert c.model.layer == config_class("linoss")(n_oscillators=16, bidirectional=True)
    c = build_config("uea", overrides=[("model.layer.kind", "s4")])                # S4 takes d_state: kept
    assert c.model.layer == config_class("s4")(d_state=32, bidirectional=True)


def test_python_alias_d_state_warns_and_means_oscillators():
    with pytest.warns(DeprecationWarning, match="n_oscillators"):
        layer = LinOSS(3, d_state=5, seed=0)
    assert layer.n_oscillators == 5 and layer.initial_state(2).shape == (2, 2, 5)
    assert "d_state" not in layer.config_dict()["config"]
    with pytest.raises(ValueError, match="give n_oscillators only"):
        DLinOSS(3, n_oscillators=4, d_state=5)


def test_model_level_duplicates_are_gone():
    for key in ("d_state", "init", "dt_min", "dt_max", "layer_kwargs"):
        with pytest.raises(ConfigError, match=rf"model\.layer\.{key}"):
            build_config(overrides=[(f"model.{key}", "1")])
        with pytest.raises(ConfigError, match=r"live in \[model\.layer\]"):
            TrainConfig.from_dict({"model": {key: 1}})


def test_cli_forms():
    c = build_config(overrides=[("model.layer.kind", "linoss"), ("model.layer.n_oscillators", "32"),
                                ("model.layer.bidirectional", "concat"), ("model.layer.dt_min", "0.1"),
                                ("model.layer.dt_max", "0.5"), ("model.layer.seed", "none")])
    assert c.model.layer == config_class("linoss")(n_oscillators=32, bidirectional="concat", dt_min=0.1, dt_max=0.5)
    c = build_config(overrides=[("model.layer.d_state", "32"), ("model.layer", "s4")])   # shorthand keeps d_state
    assert c.model.layer == config_class("s4")(d_state=32)
    c = build_config(overrides=[("model.layer", '{"kind": "s4nd", "dims": 1, "bidirectional": [false]}')])
    assert c.model.layer.bidirectional == (False,)
    c = build_config(overrides=[("model.layer", "s4nd"), ("model.layer.dt_min", "[0.001, 0.01]")])
    assert c.model.layer.dt_min == (0.001, 0.01)
    with pytest.raises(ConfigError, match=r"model\.layer \(kind 's4'\): d_state=7 is odd"):
        build_config(overrides=[("model.layer", "s4"), ("model.layer.d_state", "7")]).validated()


def test_toml_form(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nd_model = 8\n[model.layer]\nkind = "dlinoss"\nn_oscillators = 6\ninit = "uniform"\n')
    c = build_config("digits-s4", config_file=str(toml))       # a file's table over a preset of another kind
    assert c.model.layer == config_class("dlinoss")(n_oscillators=6, init="uniform")
    toml.write_text('[model.layer]\nkind = "linoss"\ninit = "legs"\n')
    with pytest.raises(ConfigError, match=rf"^{toml}: model\.layer\.init: not a setting of layer kind 'linoss'"):
        build_config(config_file=str(toml))
    toml.write_text('[model]\nlayer = "s4"\n')
    assert build_config(config_file=str(toml)).model.layer == config_class("s4")()


def test_config_round_trips_through_dicts_and_stored_runs():
    c = build_config("listops-short-s4d", overrides=[("model.layer.d_state", "16")])
    d = json.loads(json.dumps(c.to_dict()))
    assert d["model"]["layer"]["kind"] == "s4d" and TrainConfig.from_dict(d).to_dict() == c.to_dict()
    old = {"model": {"layer": "linoss", "d_state": 16, "init": "legs", "dt_min": 1e-3, "dt_max": 0.1,
                     "layer_kwargs": {"discretization": "IMEX"}}}
    got = TrainConfig.from_dict(old, legacy=True).model.layer     # what the old trainer built: init/dt dropped
    assert got == config_class("linoss")(n_oscillators=16, discretization="imex")
    old = {"model": {"layer": "s4", "d_state": 8, "init": "legt", "dt_min": 0.01}}
    assert TrainConfig.from_dict(old, legacy=True).model.layer == config_class("s4")(d_state=8, init="legt", dt_min=0.01)


def test_printed_layer_is_the_constructor_call():
    from statespaces.cli import layer_call

    spec = config_class("linoss")(n_oscillators=4, discretization="IMEX")
    call = layer_call(spec, 3)
    layer = eval(call, {"LinOSS": LinOSS})             # the text builds the same layer
    assert call.startswith("LinOSS(d_model=3, n_oscillators=4, discretization='imex'")
    assert layer.config_dict() == make_layer(spec, 3).config_dict()


def _small(kind):
    return {"s4d": {"d_state": 4}, "s4": {"d_state": 4}, "linoss": {"n_oscillators": 3},
            "dlinoss": {"n_oscillators": 3}, "s4nd": {"dims": 1, "d_state": 4, "bidirectional": False},
            "s5": {"d_state": 4}}[kind]


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "s4" else k for k in KINDS])
def test_models_built_from_configs_round_trip(tmp_path, kind):
    """(S4 is slow only by the first DPLR forward of a process: ~7 s of one-time set-up.)"""
    from statespaces.models import SequenceClassifier

    spec = layer_config({"kind": kind, **_small(kind), "seed": 1})
    m = SequenceClassifier(2, 3, d_model=4, n_layers=1, layer=spec).eval()
    m.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["layer"]["kind"] == kind
    m2 = load_pretrained(tmp_path).eval()
    x = torch.randn(2, 6, 2)
    assert m2.layer_config == spec and torch.equal(m(x), m2(x))


def test_sequence_models_take_a_1d_s4nd_with_padding_and_refuse_more_axes():
    from statespaces.models import SequenceClassifier

    m = SequenceClassifier(2, 3, d_model=4, n_layers=1, layer={"kind": "s4nd", "dims": 1, "d_state": 4, "seed": 0})
    m = m.double().eval()
    x = torch.randn(2, 9, 2, dtype=torch.float64)
    lengths = torch.tensor([9, 5])
    torch.testing.assert_close(m(x, lengths=lengths)[1], m(x[1:, :5])[0])     # padding never leaks
    with pytest.raises(ValueError, match=r"got dims=2: set dims=1 \(statespaces train: --model.layer.dims 1\)"):
        SequenceClassifier(2, 3, layer={"kind": "s4nd", "dims": 2})
    # named without dims, in a sequence model an N-D layer is its 1-D form (dims=2, S4ND's default, never ran here)
    assert SequenceClassifier(2, 3, d_model=4, n_layers=1, layer="s4nd").layer_config.dims == 1
    from statespaces.train import build_config

    assert build_config(overrides=[("model.layer", "s4nd")]).model.layer.dims == 1
    assert build_config(overrides=[("model.layer", '{"kind": "s4nd", "d_state": 8}')]).model.layer.dims == 1


def _rewrite(folder, edit_config, rename=None):
    from safetensors.torch import load_file, save_file

    cfg = json.loads((folder / "config.json").read_text())
    edit_config(cfg["config"])
    (folder / "config.json").write_text(json.dumps(cfg))
    if rename is not None:
        path = str(folder / "model.safetensors")
        save_file({rename(k): v for k, v in load_file(path).items()}, path, metadata={"format": "pt"})


def test_checkpoints_written_before_the_configs_still_load(tmp_path):
    from statespaces.models import SequenceClassifier

    m = SequenceClassifier(2, 3, d_model=4, n_layers=1, layer={"kind": "linoss", "n_oscillators": 3}).eval()
    m.save_pretrained(tmp_path / "seq")

    def old_form(c):                                       # layer="linoss", layer_kwargs={"d_state": 3, ...}
        layer = c.pop("layer")
        kind = layer.pop("kind")
        layer["d_state"] = layer.pop("n_oscillators")
        c.update(layer=kind, layer_kwargs=layer)

    _rewrite(tmp_path / "seq", old_form)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # read as n_oscillators, no deprecation noise
        m2 = load_pretrained(tmp_path / "seq").eval()
    x = torch.randn(2, 5, 2)
    assert torch.equal(m(x), m2(x))


def test_old_image_classifier_checkpoints_load(tmp_path):
    import re

    from statespaces.models.image import ImageClassifier

    m = ImageClassifier(1, 3, d_model=4, n_layers=2, layer={"kind": "s4nd", "d_state": 4, "bandlimit": 0.5,
                                                            "seed": 3}).eval()
    m.save_pretrained(tmp_path)

    def old_form(c):       # ImageClassifier(layer="s4nd", d_state=4, bandlimit=0.5, layer_kwargs={"seed": 3})
        layer = c.pop("layer")
        c.update(layer="s4nd", d_state=layer["d_state"], bandlimit=layer["bandlimit"],
                 layer_kwargs={"seed": layer["seed"]})

    def old_key(k):        # ImageBlock: blocks.i.mixer.*, blocks.i.norm.weight
        return re.sub(r"^(blocks\.\d+\.)norm\.norm\.", r"\1norm.", re.sub(r"^(blocks\.\d+\.)layer\.", r"\1mixer.", k))

    _rewrite(tmp_path, old_form, old_key)
    from safetensors.torch import load_file

    assert "blocks.0.mixer.D" in load_file(str(tmp_path / "model.safetensors"))
    m2 = load_pretrained(tmp_path).eval()
    x = torch.randn(2, 6, 5, 1)
    assert torch.equal(m(x), m2(x))


# ---- S4ND streaming, inside the residual block ---------------------------------------------------
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_s4nd_block_streams_frames_like_the_convolution(dims):
    """A video (B, T, *frame, H) frame by frame through a ResidualBlock(S4ND) with a causal first axis
    equals the whole-video forward; so does a chunked forward with the state (float64)."""
    from statespaces.blocks import ResidualBlock

    gen = torch.Generator().manual_seed(dims)
    bidir = (False,) + (True,) * (dims - 1)
    layer = S4NDConfig(dims=dims, d_state=6, bidirectional=bidir, dt_min=0.05, dt_max=0.5, bandlimit=0.6,
                       seed=dims).build(3)
    block = ResidualBlock(layer, norm="layer", mixing="glu").double().eval()
    frame = (5, 4)[:dims - 1]
    x = torch.randn(2, 7, *frame, 3, generator=gen, dtype=torch.float64)
    rate = [1.5] + [0.75] * (dims - 1)
    y = block(x, rate=rate)
    state = block.initial_state(2, frame)
    steps = []
    for t in range(7):
        y_t, state = block.step(x[:, t], state, rate=rate)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, atol=1e-12, rtol=1e-12)
    y1, s1 = block(x[:, :3], return_state=True, rate=rate)
    y2, s2 = block(x[:, 3:], state=s1, return_state=True, rate=rate)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(s2, state, atol=1e-12, rtol=1e-12)


def test_s4nd_streaming_needs_a_causal_first_axis():
    layer = S4ND(3, dims=2, d_state=4)                  # two-sided on every axis (images)
    with pytest.raises(ValueError, match=r"bidirectional=\(False, \.\.\.\)"):
        layer.initial_state(1, (4,))
    causal = S4ND(3, dims=2, d_state=4, bidirectional=(False, True))
    with pytest.raises(ValueError, match="spatial_shape"):
        causal.initial_state(1, (4, 4))
    with pytest.raises(ValueError, match="shape"):
        causal.step(torch.randn(1, 4, 3), causal.initial_state(1, (5,)))


def test_layer_config_is_frozen_and_typed():
    spec = layer_config("s4d")
    assert isinstance(spec, LayerConfig)
    with pytest.raises(Exception):
        spec.d_state = 8                                    # frozen
    assert spec.replace(d_state=8).d_state == 8 and spec.d_state == 64


def test_trainer_checkpoints_written_before_the_configs_load(tmp_path):
    """A `statespaces train` checkpoint whose stored [model] has the old keys (LinOSS with d_state,
    init and dt_min that the old trainer dropped) rebuilds the same model."""
    from statespaces.train.checkpoint import save_checkpoint
    from statespaces.train.evaluation import load_trained
    from statespaces.train.loop import build_model

    cfg = TrainConfig.from_dict({"model": {"layer": {"kind": "linoss", "n_oscillators": 3, "discretization": "IMEX"},
                                           "d_model": 4, "n_layers": 1}})
    model = build_model(cfg, 2, 3).eval()
    old = cfg.to_dict()
    old["model"].pop("layer")
    old["model"].update(layer="linoss", d_state=3, init="legs", dt_min=1e-3, dt_max=0.1,
                        layer_kwargs={"discretization": "IMEX"})
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "ck", tensors, {"config": old, "d_input": 2, "n_classes": 3})
    loaded, got = load_trained(str(tmp_path / "ck"))
    assert got.model.layer == cfg.model.layer
    x = torch.randn(2, 5, 2)
    assert torch.equal(loaded.eval()(x), model(x))


def test_state_key_names_each_kinds_state_size_setting():
    from statespaces.layers.config import config_class, state_key
    from statespaces.layers.registry import available_layers

    keys = {kind: state_key(kind) for kind in available_layers()}
    assert keys["s4d"] == keys["s4"] == keys["s5"] == keys["s4nd"] == "d_state"
    assert keys["linoss"] == keys["dlinoss"] == "n_oscillators"
    for kind, key in keys.items():                      # the key is a setting of that kind
        assert key in {f.name for f in __import__("dataclasses").fields(config_class(kind))}
