#!/usr/bin/env python
"""Build the documentation: execute the tutorial, generate its pages and figures, run mkdocs.

    python docs/build.py                 # full tutorial profile, then `mkdocs build --strict`
    python docs/build.py --fast          # fast profile (what tests/test_docs.py runs)
    python docs/build.py --no-site       # only execute the tutorial (pages + figures)
    python docs/build.py --only 01 04    # only some tutorial scripts (by number or name)
    python docs/build.py --serve         # build, then `mkdocs serve` the staged copy

Nothing generated is written into ``docs/``. Everything goes under ``--build-dir``
(default ``build/docs``, git-ignored through the repository's ``/build/`` rule):

    build/docs/src/        staged copy of docs/ plus the generated tutorial pages and figures
    build/docs/mkdocs.yml  mkdocs.yml with docs_dir/site_dir pointing into build/docs
    build/docs/site/       the HTML site

The tutorial sources are ``docs/tutorial/NN_*.py``: plain Python scripts in the percent-cell
("jupytext") format. ``# %% [markdown]`` cells hold prose as ``#`` comments, ``# %%`` cells hold
code. Each script runs in a fresh interpreter; its cells share one namespace; stdout of a cell
is shown under it; every matplotlib figure left open by a cell (and every PNG the cell writes into
``$STATESPACES_DOCS_FIGURES``) is saved next to the page and embedded. A failing cell fails the
build with the script name, cell number and traceback.

Environment for the scripts: ``STATESPACES_DOCS_FAST=1`` (``--fast``) shrinks training and
sweeps; ``STATESPACES_DOCS_FIGURES`` is the figure folder; ``STATESPACES_DOCS_WORKDIR`` a scratch
folder for checkpoints and other outputs.

The API pages ``docs/api/*.md`` use mkdocstrings ``::: module`` blocks. Any module of
``src/statespaces`` that no page mentions is appended to the page of its subpackage in the staged
copy (or to ``api/other.md``), so new modules appear in the reference without editing the docs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIAL = DOCS / "tutorial"
PACKAGE = ROOT / "src" / "statespaces"
MAX_OUTPUT_LINES = 60

# --------------------------------------------------------------------------------------------------
# percent-format scripts
# --------------------------------------------------------------------------------------------------
_CELL = re.compile(r"^# %%(?P<rest>.*)$")


def parse_cells(text: str):
    """Split a percent-format script into ``[(kind, source)]`` with kind ``'markdown'`` or ``'code'``.

    Text before the first ``# %%`` marker (a module docstring, imports) is a code cell.
    """
    cells, kind, buf = [], "code", []

    def flush():
        src = "\n".join(buf).strip("\n")
        if src.strip():
            if kind == "markdown":
                lines = []
                for line in src.splitlines():
                    if line.startswith("# "):
                        lines.append(line[2:])
                    elif line.strip() == "#":
                        lines.append("")
                    else:
                        lines.append(line.lstrip("#"))
                src = "\n".join(lines)
            cells.append((kind, src))

    for line in text.splitlines():
        m = _CELL.match(line)
        if m:
            flush()
            buf = []
            kind = "markdown" if "[markdown]" in m.group("rest") else "code"
        else:
            buf.append(line)
    flush()
    return cells


def tutorial_scripts(only=None):
    scripts = sorted(TUTORIAL.glob("[0-9][0-9]_*.py"))
    if only:
        scripts = [s for s in scripts if any(s.stem.startswith(o) or s.stem == o for o in only)]
    return scripts


def _reset_state() -> None:
    """Between scripts sharing an interpreter: default dtype, seeds, matplotlib state, workdir."""
    import random

    import matplotlib
    import numpy as np
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    matplotlib.rcdefaults()
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    os.environ.pop("STATESPACES_DOCS_WORKDIR", None)


def execute_script(script: Path, out_dir: Path) -> dict:
    """Run one tutorial script cell by cell (in this process) and write ``<stem>.md`` to ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    os.environ["STATESPACES_DOCS_FIGURES"] = str(fig_dir)
    os.environ.setdefault("STATESPACES_DOCS_WORKDIR", str(out_dir / "_work" / script.stem))
    Path(os.environ["STATESPACES_DOCS_WORKDIR"]).mkdir(parents=True, exist_ok=True)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9})

    cells = parse_cells(script.read_text())
    ns = {"__name__": "__main__", "__file__": str(script)}
    if str(script.parent) not in sys.path:
        sys.path.insert(0, str(script.parent))
    md, figures, n_code = [], [], 0
    t_start, cpu_start = time.time(), time.process_time()
    cell_seconds = []
    md.append(f"<!-- generated by docs/build.py from docs/tutorial/{script.name}; do not edit -->\n")
    for kind, src in cells:
        if kind == "markdown":
            md.append(src + "\n")
            continue
        n_code += 1
        before = {p.name: p.stat().st_mtime_ns for p in fig_dir.glob("*.png")}
        buf = io.StringIO()
        t0 = time.time()
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(src, f"{script.name} [cell {n_code}]", "exec"), ns)
        except Exception:
            sys.stderr.write(buf.getvalue())
            sys.stderr.write(f"\nERROR in {script.name}, code cell {n_code}:\n{src}\n\n")
            traceback.print_exc()
            raise SystemExit(1)
        md.append("```python\n" + src + "\n```\n")
        out = buf.getvalue().rstrip()
        if out:
            lines = out.splitlines()
            if len(lines) > MAX_OUTPUT_LINES:
                lines = lines[:MAX_OUTPUT_LINES] + [f"... ({len(lines) - MAX_OUTPUT_LINES} more lines)"]
            md.append("```text\n" + "\n".join(lines) + "\n```\n")
        new = []
        for num in plt.get_fignums():
            fig = plt.figure(num)
            name = f"{script.stem}_{n_code:02d}_{len(new) + 1}.png"
            fig.savefig(fig_dir / name, bbox_inches="tight")
            new.append(name)
        plt.close("all")
        for p in sorted(fig_dir.glob("*.png")):
            if p.name not in new and before.get(p.name) != p.stat().st_mtime_ns:
                new.append(p.name)
        for name in new:
            md.append(f"![{script.stem} figure]({'figures/' + name})\n")
        figures += new
        cell_seconds.append(round(time.time() - t0, 2))
        print(f"  {script.stem} cell {n_code}: {time.time() - t0:.1f}s", file=sys.stderr)
    src_link = f"\n---\n*Source: [`docs/tutorial/{script.name}`]({script.name}) — run it with " \
               f"`python docs/tutorial/{script.name}` or rebuild this page with `python docs/build.py`.*\n"
    md.append(src_link)
    (out_dir / f"{script.stem}.md").write_text("\n".join(md))
    shutil.copy(script, out_dir / script.name)
    info = {"script": script.name, "figures": figures, "code_cells": n_code, "seconds": time.time() - t_start,
            "cpu_seconds": time.process_time() - cpu_start, "cell_seconds": cell_seconds}
    (out_dir / f"{script.stem}.json").write_text(json.dumps(info, indent=1))
    return info


def run_tutorial(out_dir: Path, fast: bool, only=None, jobs: int = 1, isolate: bool = False) -> list:
    """Execute the tutorial scripts in fresh interpreters; returns the per-script info dicts.

    By default the scripts run one after another in one interpreter (each in its own namespace,
    with the torch default dtype, seeds and matplotlib state reset in between), which saves the
    import time of torch per script; ``isolate=True`` uses one interpreter per script, ``jobs > 1``
    spreads the scripts over that many interpreters.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["STATESPACES_DOCS_FAST"] = "1" if fast else "0"
    env.setdefault("MPLBACKEND", "Agg")
    env.pop("STATESPACES_DOCS_WORKDIR", None)

    scripts = tutorial_scripts(only)
    if not scripts:
        raise SystemExit(f"no tutorial scripts matched {only!r} in {TUTORIAL}")
    n_groups = len(scripts) if isolate else max(1, min(jobs, len(scripts)))
    groups = [scripts[i::n_groups] for i in range(n_groups)]

    def one(group) -> list:
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--out", str(out_dir), "--execute", *map(str, group)],
            env=env, cwd=str(ROOT), capture_output=True, text=True,
        )
        if proc.returncode != 0:
            names = ", ".join(s.name for s in group)
            raise RuntimeError(f"tutorial ({names}) failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-20000:]}")
        infos = [json.loads((out_dir / f"{s.stem}.json").read_text()) for s in group]
        for info in infos:
            print(f"tutorial {info['script']}: {len(info['figures'])} figures, {info['seconds']:.1f}s "
                  f"(CPU {info['cpu_seconds']:.1f}s)", flush=True)
        print(f"  (interpreter wall time incl. imports: {time.time() - t0:.1f}s)", flush=True)
        return infos

    with ThreadPoolExecutor(max_workers=n_groups) as pool:
        results = list(pool.map(one, groups))
    infos = {i["script"]: i for group in results for i in group}
    return [infos[s.name] for s in scripts]


# --------------------------------------------------------------------------------------------------
# API coverage: every public module of src/statespaces appears on some api/*.md page
# --------------------------------------------------------------------------------------------------
def public_modules() -> list:
    """Dotted names of the package's modules, skipping private ones (``_x``) and ``__main__``."""
    mods = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        mods.append(".".join(parts))
    return mods


_DIRECTIVE = re.compile(r"^:::\s*([\w.]+)", re.M)


def complete_api_pages(api_dir: Path) -> dict:
    """Append a ``::: module`` block for every public module no page mentions; returns {page: [modules]}."""
    api_dir.mkdir(parents=True, exist_ok=True)
    pages = {p: p.read_text() for p in sorted(api_dir.glob("*.md"))}
    documented = {m for text in pages.values() for m in _DIRECTIVE.findall(text)}
    added: dict = {}
    for mod in public_modules():
        if mod in documented:
            continue
        parts = mod.split(".")
        target = api_dir / f"{parts[1]}.md" if len(parts) > 1 else api_dir / "index.md"
        if target not in pages:
            target = api_dir / "other.md"
            pages.setdefault(target, "# Other modules\n\nModules without a hand-written page yet "
                                     "(added automatically by `docs/build.py`).\n")
        pages[target] += f"\n\n## `{mod}`\n\n::: {mod}\n"
        added.setdefault(target.name, []).append(mod)
    for p, text in pages.items():
        p.write_text(text)
    return added


# --------------------------------------------------------------------------------------------------
# mkdocs
# --------------------------------------------------------------------------------------------------
def stage(build_dir: Path) -> Path:
    src = build_dir / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("__pycache__", "build.py", ".gitignore"))
    return src


def write_config(build_dir: Path, docs_dir: Path, site_dir: Path, added: dict) -> Path:
    import yaml

    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    cfg["docs_dir"] = str(docs_dir)
    cfg["site_dir"] = str(site_dir)
    for plugin in cfg.get("plugins", []):
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            py = plugin["mkdocstrings"].setdefault("handlers", {}).setdefault("python", {})
            py["paths"] = [str(ROOT / p) for p in py.get("paths", ["src"])]
    # optional pieces: without mkdocs-material use the built-in theme; without pymdown-extensions
    # drop its markdown extensions (formulas then show as TeX source)
    import importlib.util

    if cfg.get("theme", {}).get("name") == "material" and importlib.util.find_spec("material") is None:
        print("mkdocs-material is not installed: using the built-in 'mkdocs' theme", flush=True)
        cfg["theme"] = {"name": "mkdocs"}
    if importlib.util.find_spec("pymdownx") is None:
        print("pymdown-extensions is not installed: formulas are not rendered", flush=True)
        cfg["markdown_extensions"] = [e for e in cfg.get("markdown_extensions", [])
                                      if not str(next(iter(e)) if isinstance(e, dict) else e).startswith("pymdownx")]
    nav = cfg.get("nav", [])
    if "other.md" in added:
        for entry in nav:
            if isinstance(entry, dict) and "API reference" in entry:
                entry["API reference"].append({"Other modules": "api/other.md"})
    # notes pages added to docs/ by later work appear under "Notes" without editing mkdocs.yml
    listed = set(re.findall(r"[\w./-]+\.md", json.dumps(nav)))
    extra = [p.name for p in sorted(docs_dir.glob("*.md")) if p.name not in listed]
    for entry in nav:
        if isinstance(entry, dict) and "Notes" in entry:
            for name in extra:
                title = (docs_dir / name).read_text().lstrip().splitlines()[0].lstrip("# ").strip() or name
                entry["Notes"].append({title: name})
    path = build_dir / "mkdocs.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def lint_docstrings() -> list:
    """Parse every docstring of the package as the API pages do (Google style) with griffe's
    warnings on; returns the warning messages (the site build itself does not fail on these)."""
    import logging

    import griffe

    messages = []

    class _Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = _Collect(level=logging.WARNING)
    logger = logging.getLogger("griffe")
    logger.addHandler(handler)
    try:
        pkg = griffe.load("statespaces", search_paths=[str(PACKAGE.parent)], docstring_parser="google",
                          resolve_aliases=False)

        def walk(obj):
            for member in list(obj.members.values()):
                if member.is_alias:
                    continue
                if member.docstring is not None:
                    _ = member.docstring.parsed
                if member.is_module or member.is_class:
                    walk(member)

        if pkg.docstring is not None:
            _ = pkg.docstring.parsed
        walk(pkg)
    finally:
        logger.removeHandler(handler)
    return sorted(set(messages))


def mkdocs_available() -> bool:
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        return False
    return True


def build(build_dir: Path, fast: bool, only=None, site: bool = True, jobs: int = 1, site_dir=None,
          serve: bool = False, isolate: bool = False) -> dict:
    t0 = time.time()
    build_dir = build_dir.resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    src = stage(build_dir)
    infos = run_tutorial(src / "tutorial", fast, only, jobs, isolate)
    t_tut = time.time() - t0
    report = {"tutorial_seconds": t_tut, "tutorial": infos, "docs_dir": str(src)}
    added = complete_api_pages(src / "api")
    if added:
        print("API modules without a hand-written block, appended automatically:", json.dumps(added), flush=True)
    report["api_added"] = added
    if site or serve:
        if not mkdocs_available():
            raise SystemExit("mkdocs / mkdocstrings are not installed: pip install -e '.[docs]'")
        site_dir = Path(site_dir).resolve() if site_dir else build_dir / "site"
        cfg = write_config(build_dir, src, site_dir, added)
        t1 = time.time()
        cmd = [sys.executable, "-m", "mkdocs", "serve" if serve else "build", "-f", str(cfg)]
        if not serve:
            cmd += ["--strict"]       # never with --quiet: it hides warnings from the strict check
        proc = subprocess.run(cmd, cwd=str(ROOT))
        if proc.returncode != 0:
            raise SystemExit(f"mkdocs {'serve' if serve else 'build --strict'} failed (exit {proc.returncode})")
        report["mkdocs_seconds"] = time.time() - t1
        report["site_dir"] = str(site_dir)
        print(f"site written to {site_dir} (mkdocs {report['mkdocs_seconds']:.1f}s)", flush=True)
    report["total_seconds"] = time.time() - t0
    (build_dir / "report.json").write_text(json.dumps(report, indent=1))
    print(f"done in {report['total_seconds']:.1f}s (tutorial {t_tut:.1f}s)", flush=True)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="fast tutorial profile (STATESPACES_DOCS_FAST=1)")
    ap.add_argument("--only", nargs="+", help="tutorial scripts to run (number prefixes or stems)")
    ap.add_argument("--no-site", action="store_true", help="skip mkdocs; only execute the tutorial")
    ap.add_argument("--serve", action="store_true", help="run `mkdocs serve` on the staged copy afterwards")
    ap.add_argument("--build-dir", default=str(ROOT / "build" / "docs"))
    ap.add_argument("--site-dir", default=None, help="HTML output (default <build-dir>/site)")
    ap.add_argument("--jobs", type=int, default=1, help="tutorial scripts run in parallel")
    ap.add_argument("--isolate", action="store_true", help="one interpreter per tutorial script")
    ap.add_argument("--lint", action="store_true", help="only list docstring-format warnings (griffe, Google style)")
    ap.add_argument("--execute", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.lint:
        found = lint_docstrings()
        print("\n".join(found) or "no docstring warnings")
        print(f"{len(found)} docstring warnings")
        return 0
    if args.execute:
        for script in args.execute:
            _reset_state()
            execute_script(Path(script), Path(args.out))
        return 0
    build(Path(args.build_dir), args.fast, args.only, site=not args.no_site, jobs=args.jobs,
          site_dir=args.site_dir, serve=args.serve, isolate=args.isolate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
