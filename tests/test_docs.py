"""The documentation builds: every tutorial script runs (fast profile) and draws its figures, and
``mkdocs build --strict`` passes on the result (skipped when mkdocs is not installed).

Uses docs/build.py's functions on a temporary build directory, so nothing is written into docs/.
Fast profile: ``STATESPACES_DOCS_FAST=1`` (tiny training run); the scripts run in two interpreters.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_PY = ROOT / "docs" / "build.py"

pytest.importorskip("matplotlib", reason="the tutorial draws figures with matplotlib (pip install -e '.[docs]')")


def _load_build():
    spec = importlib.util.spec_from_file_location("statespaces_docs_build", BUILD_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _load_build()
SCRIPTS = build.tutorial_scripts()


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """docs/ staged into a temporary folder with the tutorial executed (fast profile)."""
    build_dir = tmp_path_factory.mktemp("docs-build")
    src = build.stage(build_dir)
    infos = build.run_tutorial(src / "tutorial", fast=True, jobs=2)
    return build_dir, src, {i["script"]: i for i in infos}


def test_parse_cells_percent_format():
    text = "import os\n# %% [markdown]\n# # Title\n#\n# text $x$\n# %%\nx = 1\n\n# %%\n"
    cells = build.parse_cells(text)
    assert cells == [("code", "import os"), ("markdown", "# Title\n\ntext $x$"), ("code", "x = 1")]


def test_tutorial_has_all_parts_and_citations():
    assert len(SCRIPTS) >= 8, [s.name for s in SCRIPTS]
    for script in SCRIPTS:
        cells = build.parse_cells(script.read_text())
        assert cells[0][0] == "markdown", f"{script.name} must open with a markdown cell (title + sources)"
        head = cells[0][1]
        assert head.startswith("# "), f"{script.name}: first cell must start with a '# ' title"
        assert "thesis" in head.lower() or "seed" in head.lower(), f"{script.name} cites no thesis section or seed"
        assert any(kind == "code" for kind, _ in cells), f"{script.name} has no code"


@pytest.mark.parametrize("script", [s.name for s in SCRIPTS])
def test_tutorial_script_runs_and_draws(staged, script):
    _, src, infos = staged
    info = infos[script]
    stem = Path(script).stem
    page = src / "tutorial" / f"{stem}.md"
    assert page.is_file(), f"{script} produced no page"
    assert info["figures"], f"{script} produced no figure"
    text = page.read_text()
    for name in info["figures"]:
        png = src / "tutorial" / "figures" / name
        assert png.is_file() and png.stat().st_size > 1000, f"missing or empty figure {png}"
        assert f"figures/{name}" in text, f"{name} is not embedded in {page.name}"
    assert "```python" in text


def test_mkdocs_strict_build(staged):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]'); docs build not checked")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install -e '.[docs]')")
    pytest.importorskip("yaml", reason="PyYAML is not installed")
    build_dir, src, _ = staged
    added = build.complete_api_pages(src / "api")
    cfg = build.write_config(build_dir, src, build_dir / "site", added)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(cfg)],
                          cwd=str(ROOT), capture_output=True, text=True)
    # (no --quiet: it would silence the warnings that --strict turns into errors)
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings[:50]) + proc.stderr[-3000:]
    site = build_dir / "site"
    assert (site / "index.html").is_file()
    for script in SCRIPTS:
        assert (site / "tutorial" / script.stem / "index.html").is_file()
    api = (site / "api" / "layers" / "index.html").read_text()
    assert "statespaces.layers.s4d.S4D" in api and "statespaces.layers.linoss.LinOSS" in api
    (build_dir / "api_added.json").write_text(json.dumps(added))
