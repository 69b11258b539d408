"""The command line and the config system driven as a researcher does (campaign of 2026-12-07): valid settings that
were refused, settings silently ignored, runs written into another run, and the messages of common slips."""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest
from conftest import cli_run

from statespaces.layers.config import merge_layer
from statespaces.train import loop
from statespaces.train.config import ConfigError, TrainConfig, build_config, load_config_file, resume_config
from statespaces.train.loop import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ("--model.d_model", "4", "--model.n_layers", "1", "--model.layer.d_state", "4", "--model.layer.init", "lin",
         "--trainer.epochs", "1", "--trainer.tensorboard", "off", "--no-progress")


@pytest.mark.parametrize("kind", ["s4d", "s4"])
def test_n_ssm_is_checked_against_the_model_width(kind):
    """The layer was test-built with one channel, so every n_ssm > 1 was refused ("does not divide d_model=1")."""
    cfg = TrainConfig().override("model.layer.kind", kind).override("model.d_model", "4")
    assert cfg.override("model.layer.n_ssm", "2").validated().model.layer.n_ssm == 2
    with pytest.raises(ConfigError, match=r"n_ssm=3 does not divide d_model=4"):
        cfg.override("model.layer.n_ssm", "3").validated()


def test_override_after_the_layer_was_set_as_a_kind_string():
    cfg = TrainConfig()
    cfg.model.layer = "s5"                                  # as validated() accepts
    assert cfg.override("model.layer.d_state", "8").model.layer.to_dict()["d_state"] == 8


def test_stem_dilations_without_a_stem_are_refused():
    with pytest.raises(ConfigError, match=r"model.stem_dilations: got \(1, 2\).*with model.stem 0.*--model.stem K"):
        TrainConfig().override("model.stem_dilations", "[1, 2]")
    assert TrainConfig().override("model.stem", "3").override("model.stem_dilations", "[1, 2]").model.stem == 3


@pytest.mark.parametrize("inside", ["best", "checkpoints", "best/deeper"])
def test_a_run_inside_another_run_s_checkpoint_folder_is_refused(tmp_path, capsys, inside):
    rc, _, err = cli_run(capsys, "train", *SMALL, "--trainer.out", str(tmp_path / "base"))
    assert rc == 0, err
    rc, _, err = cli_run(capsys, "train", *SMALL, "--trainer.out", str(tmp_path / "base" / inside))
    assert rc == 2 and f"the {inside.split('/')[0]}/ of the run in" in err, err
    assert not (tmp_path / "base" / inside / "run.json").exists()


def test_sashimi_pools_past_the_sequence_length_are_refused():
    cfg = build_config(overrides=[("model.backbone", "sashimi"), ("model.d_model", "4"), ("model.n_layers", "1"),
                                  ("model.backbone_kwargs", '{"n_pools": 4}')])
    model = build_model(cfg, 1, 5, "lm")
    with pytest.raises(ConfigError, match=r"the pools \[4, 4, 4, 4\] multiply to 256, past the sequence length 128"):
        loop._check_pooling(cfg, model, SimpleNamespace(length=128))
    loop._check_pooling(cfg, model, SimpleNamespace(length=256))


def test_a_backbone_kwargs_entry_merges_into_the_preset_s_table():
    cfg = build_config("chorales-sashimi", overrides=[("model.backbone_kwargs.n_pools", "1")])
    preset = build_config("chorales-sashimi").model.backbone_kwargs
    assert cfg.model.backbone_kwargs == {**preset, "n_pools": 1} and len(preset) > 1


@pytest.mark.parametrize("dropout, warns", [("0.1", True), ("0.0", False)])
def test_resuming_with_another_compile_setting_says_it_is_not_bit_identical(dropout, warns):
    stored = build_config(overrides=[("model.dropout", dropout), ("trainer.compile", "off")]).to_dict()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = resume_config(stored, "runs/x", overrides=[("trainer.compile", "on")])
    assert cfg.trainer.compile == "on"
    assert any("no longer bit-identical" in str(w.message) for w in caught) == warns


def test_a_run_json_is_a_config_file(tmp_path, capsys):
    rc, _, err = cli_run(capsys, "train", *SMALL, "--trainer.out", str(tmp_path / "a"))
    assert rc == 0, err
    stored = json.loads((tmp_path / "a" / "run.json").read_text())["config"]
    assert load_config_file(str(tmp_path / "a" / "run.json")) == stored
    again = build_config(config_file=str(tmp_path / "a" / "run.json"), overrides=[("trainer.out", str(tmp_path / "b"))])
    assert {**again.to_dict(), "trainer": {**again.to_dict()["trainer"], "out": stored["trainer"]["out"]}} == stored
    with pytest.raises(FileNotFoundError, match=r"is a run folder; its config is .*run.json"):
        load_config_file(str(tmp_path / "a"))                 # the run folder, not its run.json
    with pytest.raises(FileNotFoundError, match="is a folder, not a file"):
        load_config_file(str(tmp_path / "a" / "best"))


def test_switching_kind_drops_a_carried_value_the_new_kind_refuses():
    """--preset digits-linoss --model.layer s4d carried discretization='imex' and then failed on it."""
    with pytest.warns(UserWarning, match=r"discretization='imex' \(not values 's4d' takes: its default is used\)"):
        merged = merge_layer({"kind": "linoss", "discretization": "imex", "n_oscillators": 8}, "s4d")
    assert "discretization" not in merged
    assert build_config("digits-linoss", overrides=[("model.layer", "s4d")]).model.layer.to_dict()["discretization"] \
        == "zoh"


def test_switching_kind_leaves_both_ends_of_a_range_behind():
    """ucr-local's S4D dt range [0.1, 1.0]: dt_max = 1 is no LinOSS value, and dt_min alone was carried, which LinOSS
    refuses (both ends or neither)."""
    with pytest.warns(UserWarning, match=r"dt_max=1.0, dt_min=0.1 \(not values 'linoss' takes"):
        cfg = build_config("ucr-local", overrides=[("model.layer.kind", "linoss")])
    layer = cfg.validated().model.layer.to_dict()
    assert layer["dt_min"] is None and layer["dt_max"] is None


def test_the_pool_check_reads_the_training_window():
    cfg = build_config(overrides=[("model.backbone", "sashimi"), ("model.d_model", "4"), ("model.n_layers", "1"),
                                  ("model.backbone_kwargs", '{"n_pools": 4}'), ("data.augment", '{"window": 128}')])
    with pytest.raises(ConfigError, match=r"past the sequence length 128"):
        loop._check_pooling(cfg, build_model(cfg, 1, 5, "lm"), SimpleNamespace(length=772))


@pytest.mark.parametrize("argv, says", [
    (["--presett", "x"], "unexpected argument '--presett'; did you mean --preset?"),
    (["--trainer.epoch", "3"], "unknown key 'epoch' in [trainer]; did you mean trainer.epochs?"),
    (["--trainr.epochs", "3"], "(did you mean trainer.epochs?)"),
    (["--trainer.epochs", "--model.d_model", "8"],
     "--trainer.epochs needs a value (the next argument, --model.d_model, is a flag)"),
    (["--model.layer.d_stat", "8"], "did you mean model.layer.d_state?"),
    (["--model.layer", "s4dd"], "got 's4dd' (str); did you mean s4d? valid:"),
    (["--model.layer.discretization", "zho"], "did you mean zoh? valid:"),
    (["--preset", "digits-s4dd"], "unknown preset 'digits-s4dd'; did you mean digits-s4d?"),
    (["--preset", "Digits-S4D"], "did you mean digits-s4d? valid presets"),
    # a key or setting that belongs elsewhere is pointed there, not to a close spelling (second verification round)
    (["--trainer.dropout", "0.1"], "dropout is a key of [model] (--model.dropout); valid keys"),
    (["--model.layer.kind", "dlinoss", "--model.layer.dt_min", "0.1"],
     "not a setting of layer kind 'dlinoss' (a setting of s4d, s4, linoss, s4nd, s5); dlinoss takes"),
    (["--data.augment.roll", "x"], "roll='x'; allowed: a probability in [0, 1]"),
])
def test_slips_on_the_command_line_get_a_suggestion(capsys, argv, says):
    rc, _, err = cli_run(capsys, "train", *argv)
    assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("text, says", [
    ("[modle]\nd_model = 8\n", "unknown config sections ['modle']; did you mean model?"),
    ("[model]\nd_modle = 8\n", "did you mean model.d_model?"),
])
def test_slips_in_a_config_file_get_a_suggestion(tmp_path, capsys, text, says):
    (tmp_path / "c.toml").write_text(text)
    rc, _, err = cli_run(capsys, "train", "--config", str(tmp_path / "c.toml"))
    assert rc == 2 and says in err, err


@pytest.mark.parametrize("text, want", [("1e3", 1000), ("2.0", 2), ("1_000", 1000), ("2.5", None), ("1e30", None),
                                        ("nan", None)])
def test_an_integer_written_as_a_float_is_taken_when_exact(text, want):
    if want is None:
        with pytest.raises(ConfigError, match="expects an integer"):
            build_config(overrides=[("trainer.epochs", text)])
    else:
        assert build_config(overrides=[("trainer.epochs", text)]).trainer.epochs == want


def test_version(capsys):
    rc, out, _ = cli_run(capsys, "--version")
    assert rc == 0 and out.startswith("statespaces 0.") and "(torch 2." in out


def test_a_language_model_names_the_backbone_settings_and_the_bidirectional_form():
    cfg = build_config(overrides=[("model.backbone", "sashimi"), ("model.d_model", "4"), ("model.n_layers", "1"),
                                  ("model.backbone_kwargs.pool", "0")])
    with pytest.raises(ConfigError, match=r"^model \(backbone 'sashimi', backbone_kwargs \{'pool': 0\}\): pool must"):
        build_model(cfg, 1, 5, "lm")
    cfg = build_config(overrides=[("model.layer", '{"kind": "linoss", "bidirectional": "concat"}'),
                                  ("model.d_model", "4"), ("model.n_layers", "1")])
    with pytest.raises(ConfigError, match=r"bidirectional='concat', so its output at step t sees later steps"):
        build_model(cfg, 1, 5, "lm")
