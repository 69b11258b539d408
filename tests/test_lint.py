"""The source is clean under ruff (lint + import order) and mypy, with the settings of pyproject.toml
(issue 19): ``ruff check src`` and ``mypy`` (its ``files`` setting is ``src/statespaces``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_is_clean_on_src():
    res = _run("ruff", "check", "src")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_mypy_is_clean_on_src():
    res = _run("mypy")
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
