"""Packaging facts a user relies on: the license file matches the declared license, the package is marked
typed (PEP 561), and every declared dependency is actually used."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_file_matches_declared_license():
    # PEP 639: an SPDX expression and the file it names. The older table form ({text = ...}) and the
    # "License ::" classifier are deprecated by setuptools, which stops building them after 2027-02-18.
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in PYPROJECT["project"]["classifiers"])
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0" in text


def test_package_is_marked_typed_and_ships_the_marker():
    assert (ROOT / "src" / "statespaces" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["statespaces"]


def test_every_runtime_dependency_is_imported_somewhere():
    sources = "\n".join(p.read_text() for p in (ROOT / "src" / "statespaces").rglob("*.py"))
    import_name = {"scikit-learn": "sklearn"}
    for requirement in PYPROJECT["project"]["dependencies"]:
        dist = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
        module = import_name.get(dist, dist.replace("-", "_"))
        assert re.search(rf"^\s*(import|from)\s+{module}\b", sources, re.M), f"{dist} is declared but never imported"
