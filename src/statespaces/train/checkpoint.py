"""Checkpoints that never lose work and never execute code on load.

A checkpoint is a directory holding ``tensors.safetensors`` (every tensor: weights, optimizer
moments, RNG state) and ``meta.json`` (configuration, counters, history, optimizer
hyper-parameters, and two SHA-256 digests: ``sha256`` of the tensor file and ``meta_sha256`` of
every other metadata entry, in canonical JSON). It is written to a temporary directory,
fsync'ed, then renamed into place, so a crash or a full disk mid-write leaves the previous
checkpoint untouched. Loading verifies both digests (a truncated or corrupted tensor file, and an
edited, added or removed metadata entry, are detected) and reads tensors with safetensors and
metadata with ``json``: no pickle anywhere. A ``meta.json`` without ``meta_sha256`` (written
before metadata was checksummed) is refused as unverifiable.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch
from safetensors.torch import load_file, save_file

PathLike = Union[str, os.PathLike]
TENSORS, META = "tensors.safetensors", "meta.json"
#: The two digest entries of ``meta.json``; every other entry is covered by ``meta_sha256``.
DIGESTS = ("sha256", "meta_sha256")


class CorruptCheckpointError(ValueError):
    """A checkpoint directory is incomplete, or its tensor file or metadata do not match their checksums."""


def meta_digest(meta: Dict[str, Any]) -> str:
    """SHA-256 of the metadata entries other than the digests, as canonical JSON (sorted keys)."""
    body = {k: v for k, v in meta.items() if k not in DIGESTS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file's content (hex), read in 1 MiB blocks: the checksum of a checkpoint's tensors, and of the data
    files a run, an evaluation or an ensemble compares by content."""
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


def remove_stale_temporaries(folder: PathLike) -> List[Path]:
    """Delete what a killed :func:`save_checkpoint` (or a killed prune) left in ``folder``: the hidden
    ``.NAME.tmp<pid>``, ``.NAME.old<pid>`` and ``.NAME.del<pid>`` entries (each a partial or superseded copy;
    the checkpoints they belonged to are whole or were never written). Call it only in a folder this process
    owns (the run's rank 0, before it writes). Returns what was removed."""
    removed: List[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and re.search(r"\.(tmp|old|del)\d+$", p.name):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def save_checkpoint(path: PathLike, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    """Atomically write a checkpoint directory at ``path`` (replacing an older one of that name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    old = path.parent / f".{path.name}.old{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / TENSORS))
        except Exception as e:       # safetensors' own error (a full disk: os error 28) is no OSError
            if isinstance(e, OSError) or type(e).__name__ != "SafetensorError":
                raise
            raise OSError(f"could not write the checkpoint {path} ({e}); free space or choose another "
                          "--trainer.out, then --resume (the earlier checkpoints are intact)") from None
        # normalized through JSON first (tuples -> lists, keys -> strings), so the digest is
        # computed over exactly what a reader parses back
        body = {k: v for k, v in json.loads(json.dumps(meta)).items() if k not in DIGESTS}
        record = dict(body, sha256=file_sha256(tmp / TENSORS), meta_sha256=meta_digest(body))
        (tmp / META).write_text(json.dumps(record, indent=1))
        os.chmod(tmp / TENSORS, (tmp / META).stat().st_mode & 0o777)    # safetensors writes 0600; the umask's mode
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
    """Read ``(tensors, meta)`` from a checkpoint directory, verifying the checksums of both."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    if not (path / META).is_file():
        raise CorruptCheckpointError(f"{path} holds no {META}: not a checkpoint directory (a run's best/ or "
                                     "checkpoints/step-*), or one whose writing was cut short")
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as e:
        raise CorruptCheckpointError(f"{path}: unreadable {META} ({e})") from e
    if not isinstance(meta, dict):
        raise CorruptCheckpointError(f"{path}: {META} does not hold a JSON object")
    if "meta_sha256" not in meta:
        raise CorruptCheckpointError(f"{path}: {META} has no meta_sha256 entry, so its metadata cannot be verified "
                                     "(edited, or written by a version before metadata checksums)")
    if meta_digest(meta) != meta["meta_sha256"]:
        raise CorruptCheckpointError(f"{path}: {META} does not match its checksum (meta_sha256): an entry was "
                                     "edited, added or removed")
    tfile = path / TENSORS
    if not tfile.is_file() or file_sha256(tfile) != meta.get("sha256"):
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


def with_prefix(tensors: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix`` (e.g. ``"model."``), keyed without it: a state dict."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def unpack_state(packed: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack_state`."""
    if isinstance(packed, dict) and "__tensor__" in packed:
        return tensors[packed["__tensor__"]]
    if isinstance(packed, dict) and "__dict__" in packed:
        return {k: unpack_state(v, tensors) for k, v in packed["__dict__"]}
    if isinstance(packed, list):
        return [unpack_state(v, tensors) for v in packed]
    return packed
