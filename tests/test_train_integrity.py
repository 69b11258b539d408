"""Training-system integrity (issue #16, items 9-11).

9. pruning only removes valid, older checkpoints of the same run; a new run refuses a folder that
   holds another run; resume picks the newest valid checkpoint of this run.
10. meta.json is covered by the checkpoint's integrity check; a tampered or incomplete checkpoint
    is skipped on resume (fallback to the previous one) and ``evaluate`` names what failed.
11. every config field is checked by type and range (TOML, command line, Python); a user error is
    one line on stderr, exit status 2, no traceback (``--debug`` shows it).
"""
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import fields

import pytest
import torch
from conftest import cli_status, killed_after_saves

from statespaces.cli import main
from statespaces.train import build_config, load_checkpoint, save_checkpoint, train
from statespaces.train.checkpoint import CorruptCheckpointError
from statespaces.train.config import RULES, SECTIONS, ConfigError, TrainConfig
from statespaces.train.evaluation import load_trained
from statespaces.train.loop import RunExistsError, _Checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: 2 threads on a busy 2-core box are far slower


# --- helpers ----------------------------------------------------------------------------------
def _tiny(tmp_path, out="run", *extra):
    return build_config(overrides=[
        ("model.d_model", "8"), ("model.n_layers", "1"), ("model.layer.d_state", "4"), ("model.layer.init", "lin"),
        ("trainer.epochs", "2"), ("trainer.batch_size", "64"), ("trainer.out", str(tmp_path / out)),
        ("trainer.tensorboard", "off"), *extra])


def _steps(ckdir):
    return sorted(int(p.name[5:]) for p in ckdir.iterdir() if p.name.startswith("step-"))


def _weights(path):
    return {k: v for k, v in load_checkpoint(path)[0].items() if k.startswith("model.")}


def _resave(path, **changes):
    """Rewrite a checkpoint with edited metadata and valid checksums (what a writer could produce)."""
    tensors, meta = load_checkpoint(path)
    meta.update(changes)
    for k in [k for k, v in changes.items() if v is _DROP]:
        del meta[k]
    save_checkpoint(path, tensors, meta)


_DROP = object()


def _edit_meta(path, edit):
    """Edit meta.json in place WITHOUT fixing any checksum (a hand edit, or bit rot)."""
    meta = json.loads((path / "meta.json").read_text())
    edit(meta)
    (path / "meta.json").write_text(json.dumps(meta, indent=1))


_cli = cli_status


# --- item 9: pruning, run identity, resume ----------------------------------------------------
def test_pruning_keeps_the_new_checkpoint_and_never_touches_foreign_or_corrupt_ones(tmp_path):
    """The reported loss: with keep_last 1 and higher-numbered step folders (corrupt, or another
    run's), every new checkpoint was deleted right after it was written."""
    other = _Checkpoints(tmp_path, keep_last=5, run_id="other")
    other.save(800, {"w": torch.full((2,), 8.0)}, {"step": 800}, is_best=False)
    other.save(3, {"w": torch.full((2,), 3.0)}, {"step": 3}, is_best=False)     # older, another run
    corrupt = tmp_path / "checkpoints" / "step-000000900"
    corrupt.mkdir()
    (corrupt / "meta.json").write_text("{not json")
    mine = _Checkpoints(tmp_path, keep_last=1, run_id="mine")
    mine.save(10, {"w": torch.ones(2)}, {"step": 10}, is_best=False)
    own_corrupt = mine.save(5, {"w": torch.ones(2)}, {"step": 5}, is_best=False)
    (own_corrupt / "tensors.safetensors").write_bytes(b"rot")           # older, this run, but unverifiable
    mine.save(20, {"w": torch.full((2,), 2.0)}, {"step": 20}, is_best=False)
    assert _steps(tmp_path / "checkpoints") == [3, 5, 20, 800, 900]   # 10 pruned; 20 (just written) kept
    tensors, meta = mine.latest_valid()
    assert meta["step"] == 20 and meta["run_id"] == "mine" and torch.equal(tensors["w"], torch.full((2,), 2.0))
    mine.keep_last = 2
    mine.save(30, {"w": torch.ones(2)}, {"step": 30}, is_best=False)
    mine.save(40, {"w": torch.ones(2)}, {"step": 40}, is_best=False)
    assert _steps(tmp_path / "checkpoints") == [3, 5, 30, 40, 800, 900]


def test_a_checkpoint_in_a_folder_of_another_step_is_not_resumed(tmp_path, capsys):
    """A step folder whose metadata names another step (renamed, or copied over) is skipped: resume takes the
    newest checkpoint whose folder and metadata agree (before, the mislabelled older one would be taken)."""
    ck = _Checkpoints(tmp_path, keep_last=5, run_id="r")
    ck.save(3, {"w": torch.ones(1)}, {"step": 3}, is_best=False)
    ck.save(4, {"w": torch.zeros(1)}, {"step": 4}, is_best=False)
    (tmp_path / "checkpoints" / "step-000000003").rename(tmp_path / "checkpoints" / "step-000000009")
    found = ck.latest_valid()
    assert found is not None and found[1]["step"] == 4
    assert "meta.json says step 3, the folder name 9" in capsys.readouterr().err


def test_a_failed_final_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """save_checkpoint over an existing checkpoint moves the old one aside, renames the new one in, and restores
    the old one when that rename fails (a kill or a full disk at the last moment): it still loads."""
    import os

    import statespaces.train.checkpoint as ckmod

    path = tmp_path / "best"
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 1})
    real = os.replace

    def failing(src, dst):
        if ".tmp" in str(src) and str(dst) == str(path):
            raise OSError("simulated failure of the final rename")
        return real(src, dst)

    monkeypatch.setattr(ckmod.os, "replace", failing)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, {"w": torch.zeros(2)}, {"step": 2})
    monkeypatch.setattr(ckmod.os, "replace", real)
    tensors, meta = load_checkpoint(path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]          # no temporary left behind


def test_a_flipped_bit_in_the_tensor_data_is_refused(tmp_path):
    """The tensor file's checksum covers its data, not only its header (which safetensors parses itself): one
    flipped bit in a weight is refused, never loaded as a different model."""
    from statespaces.train.checkpoint import TENSORS

    path = save_checkpoint(tmp_path / "c", {"w": torch.ones(4)}, {"step": 1})
    data = bytearray((path / TENSORS).read_bytes())
    data[-1] ^= 0x40
    (path / TENSORS).write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        load_checkpoint(path)


def test_new_run_into_a_folder_holding_a_run_refuses(tmp_path, capsys):
    ck = _Checkpoints(tmp_path / "run", keep_last=2, run_id="earlier")
    ck.save(45, {"w": torch.ones(2)}, {"step": 45}, is_best=False)
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    with pytest.raises(RunExistsError, match=r"--resume.*--trainer\.out"):
        train(_tiny(tmp_path), progress=False)
    rc, err = _cli(capsys, "train", "--trainer.out", str(tmp_path / "run"), "--no-progress")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "already holds a run" in err and "--resume" in err
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before      # nothing written or deleted
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    (tmp_path / "run" / "best").mkdir()
    with pytest.raises(RunExistsError, match="best"):
        train(_tiny(tmp_path), progress=False)
    ck.save(45, {"w": torch.ones(2)}, {"step": 45}, is_best=False)
    summary = train(_tiny(tmp_path, "run", ("trainer.epochs", "1"), ("trainer.batch_size", "256")), progress=False,
                    replace=True)                                # explicit opt-in: the old run's outputs go
    assert summary["test_acc"] is not None and 45 not in _steps(tmp_path / "run" / "checkpoints")


def test_resume_after_a_kill_uses_the_newest_valid_checkpoint_of_this_run(tmp_path, monkeypatch):
    """Killed after 2 checkpoints with keep_last 1; the folder also holds a higher-numbered
    checkpoint of another run (same config) and a corrupt one: the resume continues this run and
    ends with the uninterrupted run's weights, bit for bit."""
    extra = [("trainer.keep_last", "1"), ("trainer.checkpoint_every", "4"), ("trainer.epochs", "1"),
             ("trainer.batch_size", "128")]
    train(_tiny(tmp_path, "ref", *extra), progress=False)
    ref = _weights(sorted((tmp_path / "ref" / "checkpoints").iterdir())[-1])

    cfg = _tiny(tmp_path, "run", *extra)
    with killed_after_saves(monkeypatch, 2):
        train(cfg, progress=False)
    ckdir = tmp_path / "run" / "checkpoints"
    assert _steps(ckdir) == [8]
    foreign = _Checkpoints(tmp_path / "run", keep_last=9, run_id="another-run")
    tensors, meta = load_checkpoint(ckdir / "step-000000008")
    foreign.save(700, {k: torch.zeros_like(v) if k.startswith("model.") else v for k, v in tensors.items()},
                 dict(meta, step=700), is_best=False)
    (ckdir / "step-000000900").mkdir()
    (ckdir / "step-000000900" / "meta.json").write_text("garbage")
    summary = train(cfg, resume=True, progress=False)
    assert summary["test_acc"] is not None
    steps = _steps(ckdir)
    assert 700 in steps and 900 in steps                                  # other run's and corrupt: untouched
    own = [s for s in steps if s not in (700, 900)]
    assert len(own) == 1                                                   # keep_last 1 of this run
    got = _weights(ckdir / f"step-{own[0]:09d}")
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=0, rtol=0)


# --- item 10: metadata integrity ----------------------------------------------------------------
@pytest.mark.parametrize("edit", [
    lambda m: m["config"]["model"]["layer"].update(bidirectional=True),
    lambda m: m.update(step=m["step"] + 1),
    lambda m: m.pop("d_input"),
    lambda m: m.update(extra="added"),
    lambda m: m.pop("meta_sha256"),
    lambda m: m.update(meta_sha256="0" * 64),
], ids=["layer-setting", "step", "missing-key", "added-key", "no-digest", "wrong-digest"])
def test_any_metadata_edit_makes_the_checkpoint_invalid(tmp_path, edit):
    cfg = build_config(overrides=[("model.d_model", "4"), ("model.n_layers", "1"), ("model.layer.d_state", "4")])
    meta = {"config": cfg.to_dict(), "step": 3, "d_input": 1, "n_classes": 10}
    path = save_checkpoint(tmp_path / "ck", {"model.x": torch.ones(2)}, meta)
    assert load_checkpoint(path)[1]["step"] == 3
    _edit_meta(path, edit)
    with pytest.raises(CorruptCheckpointError, match="meta_sha256"):
        load_checkpoint(path)


def test_whitespace_and_key_order_of_meta_json_do_not_matter(tmp_path):
    path = save_checkpoint(tmp_path / "ck", {"a": torch.ones(2)}, {"n": 1, "b": [1.5, None, "x"], "nan": math.nan})
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps(dict(reversed(list(meta.items())))))
    assert load_checkpoint(path)[1]["b"] == [1.5, None, "x"]


def test_resume_falls_back_past_tampered_and_incomplete_checkpoints(tmp_path, capsys):
    cfg = _tiny(tmp_path, "run", ("trainer.keep_last", "3"), ("trainer.epochs", "3"), ("trainer.batch_size", "128"))
    train(cfg, progress=False)
    ckdir = tmp_path / "run" / "checkpoints"
    paths = sorted(ckdir.iterdir())
    assert len(paths) == 3
    final = _weights(paths[-1])
    _edit_meta(paths[-1], lambda m: m.update(step=1))                   # hand edit: checksum mismatch
    _resave(paths[-2], running=_DROP)                                    # valid checksums, but incomplete
    capsys.readouterr()
    train(cfg, resume=True, progress=False)                              # from epoch 1, redoes 2 and 3
    err = capsys.readouterr().err
    assert "meta_sha256" in err and "'running'" in err and f"resumed at step {_steps(ckdir)[0]}" in err
    assert [load_checkpoint(p)[1]["epoch"] for p in sorted(ckdir.iterdir())] == [1, 2, 3]
    got = _weights(sorted(ckdir.iterdir())[-1])
    for k in final:
        torch.testing.assert_close(got[k], final[k], atol=0, rtol=0)


def test_a_checkpoint_that_fails_half_way_through_its_restore_leaves_no_trace(tmp_path, capsys):
    """Complete and checksummed, but its optimizer state does not load (after the weights did): with
    no older checkpoint the run starts over from the fresh state, exactly like a new run."""
    extra = [("trainer.epochs", "1"), ("trainer.batch_size", "256"), ("trainer.keep_last", "1")]
    train(_tiny(tmp_path, "ref", *extra), progress=False)
    cfg = _tiny(tmp_path, "run", *extra)
    train(cfg, progress=False)
    (path,) = (tmp_path / "run" / "checkpoints").iterdir()
    _resave(path, optimizer={"__dict__": []})
    capsys.readouterr()
    train(cfg, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "does not restore" in err and "starting from step 0" in err
    (ref,) = (tmp_path / "ref" / "checkpoints").iterdir()
    (got,) = (tmp_path / "run" / "checkpoints").iterdir()
    a, b = _weights(ref), _weights(got)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=0, rtol=0)


def test_evaluate_names_what_failed(tmp_path, capsys):
    cfg = _tiny(tmp_path, "run", ("trainer.epochs", "1"))
    train(cfg, progress=False)
    best = tmp_path / "run" / "best"
    shutil.copytree(best, tmp_path / "tampered")
    _edit_meta(tmp_path / "tampered", lambda m: m["config"]["model"]["layer"].update(bidirectional=True))
    rc, err = _cli(capsys, "evaluate", str(tmp_path / "tampered"))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "meta.json does not match its checksum" in err and "Traceback" not in err
    for key in ("d_input", "config"):
        shutil.copytree(best, tmp_path / key)
        _resave(tmp_path / key, **{key: _DROP})
        with pytest.raises(CorruptCheckpointError, match=f"no '{key}' entry"):
            load_trained(str(tmp_path / key))
        rc, err = _cli(capsys, "evaluate", str(tmp_path / key))
        assert rc == 2 and f"no '{key}' entry" in err
    shutil.copytree(best, tmp_path / "badcfg")
    _resave(tmp_path / "badcfg", config=dict(cfg.to_dict(), trainer=dict(cfg.to_dict()["trainer"], epochs=1.5)))
    with pytest.raises(CorruptCheckpointError, match=r"invalid config \(trainer\.epochs: got 1\.5"):
        load_trained(str(tmp_path / "badcfg"))
    rc, _ = _cli(capsys, "evaluate", str(best))
    assert rc == 0


# --- item 11: config values ---------------------------------------------------------------------
#: For every key: values of the wrong type (as TOML/Python values), and out-of-range values (None:
#: the type admits no out-of-range value). Strings here are never accepted for non-string fields.
WRONG_TYPE = {"int": ["5", 1.5, True, None], "float": ["0.1", True, [1.0]], "bool": ["false", "no", 1, 0],
              "str": [5, True, ["s4d"]], "dict": [[1], "{}", 3], "layer": [5, True, ["s4d"], None]}
OUT_OF_RANGE = {
    "model.layer": ["s7", "S4 D"], "model.d_model": [0, -3], "model.n_layers": [0],
    "model.dropout": [1.0, -0.1, math.nan], "model.norm": ["group"], "model.prenorm": None,
    "model.mixing": ["gated"], "model.pool": ["min", "none"], "model.stem": [-1], "model.stem_dilations": [0, [1, 0]],
    "model.backbone": ["unet", ""], "model.backbone_kwargs": [{2: "x"}], "model.intervals": None,
    "data.name": ["", "   "], "data.kwargs": [{2: "x"}], "data.augment": [{2: "x"}, {"crop": 0}, {"warp": 0.1}, {"jitter": -1}, {"window": 1},
                                                           {"window": 8, "roll": 1.0}], "data.normalize": ["zscore", "", "per-series"],
    "data.time_channel": None,
    "trainer.epochs": [0, -5], "trainer.batch_size": [0], "trainer.lr": [0, -1e-3, math.inf, math.nan],
    "trainer.ssm_lr": [0.0, -1], "trainer.weight_decay": [-0.1, math.inf], "trainer.warmup_steps": [-1],
    "trainer.schedule": ["linear", ""],
    "trainer.test_eval": ["never", "", "final"],
    "trainer.grad_clip": [-1.0, math.nan], "trainer.label_smoothing": [1.0, -0.1, math.nan],
    "trainer.mixup": [-0.2, math.inf, math.nan], "trainer.ema": [1.0, -0.1, math.nan], "trainer.val_fraction": [1.0, 1.5, -0.1], "trainer.min_steps": [-1],
    "trainer.val_split": ["per-class", "", "round"],
    "trainer.bucket": None, "trainer.seed": [-1, 2**32],
    "trainer.out": [""], "trainer.keep_last": [0, -2], "trainer.checkpoint_every": [-1], "trainer.amp": None,
    "trainer.device": ["gpu", "cuda:x"], "trainer.tensorboard": ["maybe", ""],
    "trainer.compile": ["yes", ""],
}
ALL_KEYS = [f"{s}.{f.name}" for s, klass in SECTIONS.items() for f in fields(klass)]


def test_every_config_key_has_a_rule_and_fuzz_cases():
    assert sorted(ALL_KEYS) == sorted(f"{s}.{k}" for s in RULES for k in RULES[s]) == sorted(OUT_OF_RANGE)


def _bad_cases():
    for key in ALL_KEYS:
        section, name = key.split(".")
        for v in WRONG_TYPE[RULES[section][name].kind]:
            yield key, v, "type"
        for v in OUT_OF_RANGE[key] or ():
            yield key, v, "range"


@pytest.mark.parametrize("key,value,why", list(_bad_cases()), ids=lambda x: repr(x)[:20])
def test_every_config_key_rejects_wrong_types_and_out_of_range_values(key, value, why):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({section: {name: value}})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{key}: got {value!r}") and ("allowed: " in msg or "valid: " in msg)
    if not isinstance(value, str):   # (override parses strings like the command line: see the CLI tests)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):       # the Python override path
            TrainConfig().override(key, value)


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{k}" = {_toml(x)}' for k, x in v.items()) + "}"
    return json.dumps(v)


@pytest.mark.parametrize("key,value,why", [c for c in _bad_cases() if c[1] is not None
                                            and not (isinstance(c[1], dict) and c[1])])
def test_toml_values_are_checked_and_name_the_file(tmp_path, key, value, why):
    section, name = key.split(".")
    toml = tmp_path / "run.toml"
    toml.write_text(f"[{section}]\n{name} = {_toml(value)}\n")
    with pytest.raises(ConfigError, match=rf"^{toml}: {key}: got "):
        build_config(config_file=str(toml))


def test_reported_toml_cases(tmp_path):
    toml = tmp_path / "run.toml"
    for text, match in [('[trainer]\namp = "false"', "trainer.amp: got 'false' (str); allowed: true or false"),
                        ('[model]\nprenorm = "no"', "model.prenorm: got 'no'"),
                        ("[trainer]\nepochs = 1.5", "trainer.epochs: got 1.5 (float); allowed: an integer >= 1"),
                        ('[trainer]\nepochs = "abc"', "trainer.epochs: got 'abc' (str)"),
                        ("[trainer]\nepochs = 2.0", "trainer.epochs: got 2.0"),
                        ("model = 3", "[model]: got 3"),
                        ("[trainer]\nlr = 1\namp = true\nval_fraction = 0", None)]:
        toml.write_text(text + "\n")
        if match is None:
            cfg = build_config(config_file=str(toml))
            assert (cfg.trainer.lr, cfg.trainer.amp, cfg.trainer.val_fraction) == (1.0, True, 0.0)
            assert type(cfg.trainer.lr) is float and type(cfg.trainer.val_fraction) is float
        else:
            with pytest.raises(ConfigError, match=re.escape(f"{toml}: {match}")):
                build_config(config_file=str(toml))


@pytest.mark.parametrize("word,expected", [("false", False), ("FALSE", False), ("no", False), ("0", False),
                                           ("off", False), ("true", True), ("Yes", True), ("1", True), ("on", True)])
def test_cli_bools_are_parsed(word, expected):
    cfg = build_config(overrides=[("trainer.amp", word), ("model.prenorm", word)])
    assert cfg.trainer.amp is expected and cfg.model.prenorm is expected


CLI_BAD = [("trainer.epochs", "1.5"), ("trainer.epochs", "abc"), ("trainer.epochs", "0"), ("trainer.epochs", "-5"),
           ("trainer.val_fraction", "1.5"), ("trainer.seed", "-1"), ("model.d_model", "-3"), ("trainer.amp", "maybe"),
           ("trainer.lr", "nan"), ("trainer.lr", "inf"), ("data.kwargs", "{bad json"),
           ("trainer.tensorboard", "maybe"), ("model.layer.init", "nope"), ("model.layer.dt_min", "-0.5"),
           ("model.layer", "s7"), ("model.layer.d_state", "0")]


@pytest.mark.parametrize("key,value", CLI_BAD)
def test_cli_user_errors_are_one_line_with_status_2(tmp_path, capsys, key, value):
    out = tmp_path / "never"
    rc, err = _cli(capsys, "train", f"--{key}", value, "--trainer.out", str(out), "--no-progress")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("statespaces train: error: ") and key in lines[0] and value.strip("{") in lines[0]
    assert "allowed: " in lines[0] or "valid: " in lines[0]
    assert not out.exists()


def test_debug_flag_shows_the_exception(tmp_path, capsys):
    for argv in (["--debug", "train"], ["train", "--debug"]):
        with pytest.raises(ConfigError, match="trainer.epochs: got 0"):
            main(argv + ["--trainer.epochs", "0", "--trainer.out", str(tmp_path / "x")])
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_cli_error_has_no_traceback_unless_debug(tmp_path):
    """The console entry point itself (two interpreter start-ups with torch: slow on a busy machine)."""
    cmd = [sys.executable, "-m", "statespaces", "train", "--trainer.epochs", "0", "--trainer.out", str(tmp_path / "x")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == (
        "statespaces train: error: trainer.epochs: got 0 (int); allowed: an integer >= 1")
    p = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" in p.stderr and "ConfigError" in p.stderr


def test_cli_warnings_are_one_line_without_the_source(tmp_path, monkeypatch, capsys):
    """A library warning on the command line printed Python's ``path/file.py:39: UserWarning: ...`` and the source
    line that raised it (found by a CLI campaign); it is one line naming the command, and the previous format is
    back after the call (and under --debug)."""
    import warnings

    folder = tmp_path / "Short"
    folder.mkdir()
    for split, n in (("TRAIN", 8), ("TEST", 4)):                        # two-step series: a 'series' warning
        (folder / f"Short_{split}.tsv").write_text("".join(f"{1 + i % 2}\t{i}\t{2 * i + 1}\n" for i in range(n)))
    monkeypatch.setattr(warnings, "showwarning", lambda message, category, filename, lineno, file=None, line=None:
                        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line)))
    before = warnings.formatwarning
    args = ["train", "--data.name", str(folder / "Short_TRAIN.tsv"), "--data.normalize", "series",
            "--model.d_model", "4", "--model.n_layers", "1", "--trainer.epochs", "1", "--trainer.val_fraction", "0",
            "--trainer.tensorboard", "off", "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(args + ["--trainer.out", str(tmp_path / "a")]) == 0
        err = capsys.readouterr().err
        assert "statespaces train: warning: Short: 12 of 12 series have fewer than 3 steps" in err
        assert "UserWarning" not in err and ".py:" not in err
        assert warnings.formatwarning is before
        assert main(args + ["--trainer.out", str(tmp_path / "b"), "--debug"]) == 0
        assert "UserWarning: Short: 12 of 12 series" in capsys.readouterr().err


def test_train_validates_a_config_changed_after_construction(tmp_path):
    cfg = _tiny(tmp_path)
    cfg.trainer.epochs = 0
    with pytest.raises(ConfigError, match="trainer.epochs: got 0"):
        train(cfg, progress=False)
    cfg = _tiny(tmp_path)
    cfg.model.layer = {"kind": "s4d", "d_state": 5}   # odd: refused by S4D's constructor, when the run starts
    with pytest.raises(ConfigError, match=r"model.layer \(kind 's4d'\): d_state=5 is odd"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_out_folder_that_is_a_file_and_unavailable_device(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="trainer.out.*a file"):
        train(_tiny(tmp_path, "file"), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer.device: got 'cuda'.*not available"):
            train(_tiny(tmp_path, "gpu", ("trainer.device", "cuda")), progress=False)


def test_every_preset_is_valid():
    from statespaces.train.config import PRESETS

    for name in PRESETS:
        build_config(name).validated()


def test_a_damaged_best_is_rewritten_from_its_kept_step_checkpoint_on_resume(tmp_path, capsys):
    """best/ truncated or deleted after the run: the resume did not check it, the done line still named it, and
    `statespaces evaluate` then failed on it. Its step checkpoint is kept here: best/ is rewritten from it."""
    cfg = _tiny(tmp_path, "run", ("trainer.keep_last", "2"))
    summary = train(cfg, progress=False)
    best = tmp_path / "run" / "best"
    shutil.rmtree(best)
    capsys.readouterr()
    again = train(cfg, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "rewritten from" in err
    assert again["best"] == str(best) and again["selected_epoch"] == summary["selected_epoch"]
    step = load_checkpoint(best)[1]["step"]
    kept = _weights(tmp_path / "run" / "checkpoints" / f"step-{step:09d}")
    assert all(torch.equal(v, kept[k]) for k, v in _weights(best).items())


def test_a_best_of_an_earlier_kept_epoch_is_rewritten_from_its_step(tmp_path, monkeypatch, capsys):
    """The selected epoch is not the one the resume restores (the repair above only covered that one)."""
    import statespaces.train.loop as loop

    monkeypatch.setattr(loop, "select_epoch", lambda history, selection: history[0] if history else {})
    cfg = _tiny(tmp_path, "run", ("trainer.keep_last", "2"))
    train(cfg, progress=False)
    best = tmp_path / "run" / "best"
    shutil.rmtree(best)
    capsys.readouterr()
    again = train(cfg, resume=True, progress=False)
    assert re.search(r"did not hold the selected step \d+ \(epoch 1\)", capsys.readouterr().err)
    assert again["best"] == str(best) and load_checkpoint(best)[1]["step"] == again["steps"] // 2


def test_a_best_that_cannot_be_rebuilt_is_reported_not_claimed(tmp_path, monkeypatch, capsys):
    """best/ damaged after its epoch's step checkpoint was pruned: no copy of the selected weights is left. The
    resume warns, and the end of the run says so (summary.json: best None) instead of 'done ... for best/'."""
    import statespaces.train.loop as loop

    monkeypatch.setattr(loop, "select_epoch", lambda history, selection: history[0] if history else {})
    cfg = _tiny(tmp_path, "run", ("trainer.keep_last", "1"))
    train(cfg, progress=False)                          # epoch 1 selected, its step checkpoint pruned
    best = tmp_path / "run" / "best" / "tensors.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    capsys.readouterr()
    with pytest.raises(CorruptCheckpointError, match="training finished, but .*best does not hold the selected "
                                                     "epoch 1 .*it is damaged.* no checkpoint of that step is kept"):
        train(cfg, resume=True, progress=False)
    assert "warning:" in capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best"] is None and "does not hold the selected epoch 1" in summary["best_problem"]
    code, err = cli_status(capsys, "train", "--trainer.out", str(tmp_path / "run"), "--resume", "--no-progress")
    assert code == 2 and "training finished, but" in err


def test_ensure_best_keeps_a_good_best_and_names_what_is_wrong(tmp_path):
    ck = _Checkpoints(tmp_path, keep_last=2, run_id="r")
    t = {"w": torch.ones(2)}
    save_checkpoint(ck.dir / "step-000000004", t, {"step": 4, "run_id": "r"})
    save_checkpoint(ck.best, t, {"step": 4, "run_id": "r"})
    assert ck.ensure_best(4, 2) is None and ck.ensure_best(None) is None
    save_checkpoint(ck.best, t, {"step": 4, "run_id": "other"})       # another run's best/
    assert ck.ensure_best(4, 2) is None and load_checkpoint(ck.best)[1]["run_id"] == "r"
    assert "holds step 4" in ck.ensure_best(2, 1)


def test_sigterm_ends_a_command_with_a_message_and_exit_143(monkeypatch, capsys):
    """SIGTERM (docker stop, a scheduler's limit) ended a run silently (exit 143, the last line an epoch line);
    Ctrl-C said 'interrupted (continue with the same command and --resume)'."""
    import os
    import signal
    import time

    import statespaces.cli as cli

    def killed(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    monkeypatch.setattr(cli, "_main", killed)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        cli.main(["train"])
    assert e.value.code == 143
    assert "statespaces train: terminated (SIGTERM) (continue with the same command and --resume)" in \
        capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before          # restored


def test_a_corrupt_checkpoint_is_reported_once_per_resume(tmp_path, capsys):
    cfg = _tiny(tmp_path, "run", ("trainer.keep_last", "2"))
    train(cfg, progress=False)
    newest = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1] / "tensors.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    capsys.readouterr()
    code, err = cli_status(capsys, "train", "--trainer.out", str(tmp_path / "run"), "--resume", "--no-progress")
    assert code == 0 and err.count("skipping corrupt checkpoint") == 1, err


def test_an_output_folder_under_a_file_is_named(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for resume in ((), ("--resume",)):
        code, err = cli_status(capsys, "train", "--trainer.out", str(tmp_path / "afile" / "sub"), *resume,
                               "--model.d_model", "8")
        assert code == 2 and "which is a file; allowed: a folder whose parents are folders" in err, err
        assert "holds no run yet" not in err


def test_under_torchrun_only_rank_0_prints_a_user_error(monkeypatch, capsys):
    """Every rank printed the same error, two copies sometimes run together on one line."""
    import statespaces.cli as cli

    for rank, shown in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(SystemExit) as e:
            cli.main(["train", "--model.foo", "1"])
        assert e.value.code == 2
        assert ("statespaces train: error:" in capsys.readouterr().err) == shown


def test_a_resume_with_another_number_of_processes_says_it_is_not_exact(tmp_path, capsys):
    """2 processes -> 1 resumed without a word, and not as the uninterrupted run."""
    from statespaces.train.run import Run

    run = Run(tmp_path / "out", 1)
    state = torch.get_rng_state()
    assert torch.equal(run._rank_rng({"rng.torch": state, "rng.torch.rank1": state}), state)
    assert "written by 2 process(es), this run has 1" in capsys.readouterr().err
    run._rank_rng({"rng.torch": state})
    assert "process(es)" not in capsys.readouterr().err
