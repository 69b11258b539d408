"""Security (issue #8, item 5): checkpoints are safetensors + JSON and loading never unpickles;
config files are parsed as data (TOML / JSON), never executed; dataset names never leave the data
search folders (a path outside them is used only when given explicitly as a path).

The basic planted-pickle and truncated-file cases are in tests/test_training.py; here the attacker
also fixes the checksum, so the safetensors parser itself must refuse the file.
"""
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch

import statespaces
from statespaces.train import build_config, load_checkpoint
from statespaces.train.checkpoint import CorruptCheckpointError, save_checkpoint

SRC = Path(statespaces.__file__).parent


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path, payload: bytes):
    """Replace the tensor file and make meta.json's checksum match it (a deliberate attacker)."""
    (path / "tensors.safetensors").write_bytes(payload)
    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256(payload).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("kind", ["torch.save", "raw-pickle"])
def test_planted_pickle_with_matching_checksum_is_refused_not_executed(tmp_path, kind):
    import pickle

    path = tmp_path / "ck"
    save_checkpoint(path, {"a": torch.ones(2)}, {"n": 1})
    marker = tmp_path / "pwned"
    buf = tmp_path / "payload"
    if kind == "torch.save":
        torch.save({"x": _Evil(marker)}, buf)
    else:
        buf.write_bytes(pickle.dumps(_Evil(marker)))
    _plant(path, buf.read_bytes())
    with pytest.raises(CorruptCheckpointError, match="not a valid safetensors"):
        load_checkpoint(path)
    assert not marker.exists()


def test_resume_skips_a_planted_pickle_and_uses_the_previous_checkpoint(tmp_path):
    from statespaces.train.loop import _Checkpoints

    ck = _Checkpoints(tmp_path, keep_last=3)
    ck.save(5, {"w": torch.ones(2)}, {"step": 5}, is_best=False)
    newest = ck.save(10, {"w": torch.zeros(2)}, {"step": 10}, is_best=False)
    marker = tmp_path / "pwned"
    buf = tmp_path / "payload"
    torch.save({"x": _Evil(marker)}, buf)
    _plant(newest, buf.read_bytes())
    tensors, meta = ck.latest_valid()
    assert meta["step"] == 5 and torch.equal(tensors["w"], torch.ones(2))
    assert not marker.exists()


def test_meta_json_that_is_not_an_object_is_corrupt(tmp_path):
    path = tmp_path / "ck"
    save_checkpoint(path, {"a": torch.ones(2)}, {"n": 1})
    (path / "meta.json").write_text("[1, 2, 3]")
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(path)


def test_no_unpickling_code_in_the_package():
    """No torch.load / pickle / eval / exec / yaml.load anywhere in the library source."""
    pattern = re.compile(r"\btorch\.load\(|\bpickle\.loads?\(|(?<![\w.])eval\(|(?<![\w.])exec\(|yaml\.load\(|"
                         r"\bnp\.load\([^)]*allow_pickle\s*=\s*True")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line.split("#")[0])]
    assert hits == []


def test_config_files_and_overrides_are_data_not_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    toml = tmp_path / "run.toml"
    toml.write_text(f'[data]\nname = "{code}"\n[trainer]\nout = "{code}"\n')
    cfg = build_config(config_file=str(toml))
    assert cfg.data.name == code                                  # kept verbatim, as strings
    toml.write_text(f'[model.layer]\ninit = "{code}"\n')        # a string where a name is expected: refused as data
    with pytest.raises(ValueError, match="model.layer.init: got"):
        build_config(config_file=str(toml))
    cfg = build_config(overrides=[("data.kwargs", json.dumps({"n_train": code})), ("trainer.epochs", "2")])
    assert cfg.data.kwargs == {"n_train": code}
    with pytest.raises(ValueError):                               # a Python expression is not a number
        build_config(overrides=[("trainer.epochs", "__import__('os').getpid()")])
    with pytest.raises(ValueError):                               # TOML has no code: syntax error, not eval
        (tmp_path / "bad.toml").write_text(f"[model]\nd_model = {code}\n")
        build_config(config_file=str(tmp_path / "bad.toml"))
    assert not marker.exists()


def _ts(path: Path, name: str):
    path.mkdir(parents=True, exist_ok=True)
    body = "@problemName {n}\n@timeStamps false\n@missing false\n@univariate true\n@equalLength true\n" \
           "@seriesLength 3\n@classLabel true a b\n@data\n1,2,3:a\n3,2,1:b\n"
    for split in ("TRAIN", "TEST"):
        (path / f"{name}_{split}.ts").write_text(body.format(n=name))


def test_dataset_names_stay_inside_the_data_folders(tmp_path, monkeypatch):
    from statespaces.data import get_dataset
    from statespaces.data.ucr import load_ucr

    data, outside = tmp_path / "data", tmp_path / "outside"
    _ts(data / "Inside", "Inside")
    _ts(outside / "Secret", "Secret")
    monkeypatch.setenv("STATESPACES_UCR", str(data))
    monkeypatch.chdir(data)
    assert "inside" in load_ucr("Inside").name.lower()
    # a bare name is looked up only in the search folders, never resolved against the file system
    with pytest.raises((ValueError, FileNotFoundError)):
        load_ucr("Secret")
    with pytest.raises((ValueError, FileNotFoundError)):
        get_dataset("ucr:Secret")
    # a file outside them is read only when its path is given explicitly
    explicit = get_dataset(f"ucr:{outside / 'Secret' / 'Secret_TRAIN.ts'}")
    assert "secret" in explicit.name.lower()


def test_configs_cannot_name_arbitrary_files_as_datasets(tmp_path):
    from statespaces.train.loop import load_data

    for name in ("../../etc/passwd", "/etc/passwd", "digits; rm -rf /", "__import__('os')"):
        cfg = build_config(overrides=[("data.name", name)])
        with pytest.raises((ValueError, FileNotFoundError)):
            load_data(cfg)
