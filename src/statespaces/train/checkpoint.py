"""Atomic, safe checkpoints: a crash mid-write never leaves a broken file, and loading never runs code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts written with ``torch.save``
to a temporary file in the same folder, flushed, fsync'ed and renamed over the target
(``os.replace`` is atomic on POSIX). It is read back with ``torch.load(weights_only=True)``, which
refuses pickled code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

PathLike = Union[str, os.PathLike]


def save_checkpoint(obj: Dict[str, Any], path: PathLike) -> Path:
    """Write ``obj`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a valid statespaces checkpoint ({type(e).__name__}: {e})") from e
