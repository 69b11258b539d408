"""Checkpoints that never lose work and never execute code on load.

A checkpoint is a directory holding ``tensors.safetensors`` (every tensor: weights, optimizer
moments, RNG state) and ``meta.json`` (configuration, counters, history, optimizer
hyper-parameters, and the SHA-256 of the tensor file). It is written to a temporary directory,
fsync'ed, then renamed into place, so a crash or a full disk mid-write leaves the previous
checkpoint untouched. Loading verifies the checksum (a truncated or corrupted file is detected)
and reads tensors with safetensors and metadata with ``json``: no pickle anywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch
from safetensors.torch import load_file, save_file

PathLike = Union[str, os.PathLike]
TENSORS, META = "tensors.safetensors", "meta.json"


class CorruptCheckpointError(ValueError):
    """A checkpoint directory is incomplete, or its tensor file does not match its recorded checksum."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: PathLike, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    """Atomically write a checkpoint directory at ``path`` (replacing an older one of that name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    old = path.parent / f".{path.name}.old{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / TENSORS))
        record = dict(meta, sha256=_sha256(tmp / TENSORS))
        (tmp / META).write_text(json.dumps(record, indent=1))
        for f in (tmp / TENSORS, tmp / META, tmp):
            _fsync(f)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read ``(tensors, meta)`` from a checkpoint directory, verifying its checksum."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as e:
        raise CorruptCheckpointError(f"{path}: unreadable {META} ({e})") from e
    if not isinstance(meta, dict):
        raise CorruptCheckpointError(f"{path}: {META} does not hold a JSON object")
    tfile = path / TENSORS
    if not tfile.is_file() or _sha256(tfile) != meta.get("sha256"):
        raise CorruptCheckpointError(f"{path}: {TENSORS} is missing or does not match its checksum")
    try:  # safetensors parses a header and raw buffers only; anything else (e.g. a pickle) is refused
        return load_file(str(tfile)), meta
    except Exception as e:
        raise CorruptCheckpointError(f"{path}: {TENSORS} is not a valid safetensors file ({e})") from e


# --- flattening of training state into (tensors, json) ---------------------------------------
def pack_state(prefix: str, state: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested dict/list into ``tensors`` under dotted keys; return the JSON rest."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {"__dict__": [[k, pack_state(f"{prefix}.{k}", v, tensors)] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return [pack_state(f"{prefix}.{i}", v, tensors) for i, v in enumerate(state)]
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"cannot store {type(state).__name__} at {prefix} in a checkpoint")


def unpack_state(packed: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack_state`."""
    if isinstance(packed, dict) and "__tensor__" in packed:
        return tensors[packed["__tensor__"]]
    if isinstance(packed, dict) and "__dict__" in packed:
        return {k: unpack_state(v, tensors) for k, v in packed["__dict__"]}
    if isinstance(packed, list):
        return [unpack_state(v, tensors) for v in packed]
    return packed
