"""Claims of the thesis that ``statespaces reproduce`` re-runs, and the REPRODUCTION.md writer.

A claim is a function ``fn(quick: bool, out: Path) -> Result``. It measures our number with the
library, compares it with the pass threshold of ``notes/thesis-experiments.md`` §11, and may write
a PNG into ``out``. Nothing in the generated table is typed by hand.
"""
from __future__ import annotations

import os
import platform
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch


@dataclass
class Result:
    thesis: str
    ours: str
    passed: bool
    criterion: str
    details: Dict[str, object] = field(default_factory=dict)
    figure: Optional[str] = None


@dataclass
class Claim:
    id: str
    title: str
    fn: Callable[[bool, Path], Result]
    tier: str  # "A" exact/theory (quick profile), "B"/"C" training (full profile)
    timed: bool = False  # the verdict rests on wall-clock timings (reported, never asserted in tests)


CLAIMS: Dict[str, Claim] = {}


def claim(id: str, title: str, tier: str, timed: bool = False) -> Callable[[Callable], Callable]:
    def wrap(fn):
        CLAIMS[id] = Claim(id, title, fn, tier, timed)
        return fn
    return wrap


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or None when matplotlib is not installed (no plot then)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: Path) -> str:
    """Write ``fig`` to ``path`` as a PNG, close it, and return the path for :attr:`Result.figure`."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return str(path)


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU x{torch.get_num_threads()}, torch {torch.__version__}"


def _publish(figure: Optional[str], figures: Optional[Path], table: Path) -> Optional[str]:
    """Copy a claim's PNG into ``figures`` and return its path relative to the table (for the link)."""
    if not figure or figures is None or not Path(figure).is_file():
        return figure
    figures.mkdir(parents=True, exist_ok=True)
    dest = figures / Path(figure).name
    shutil.copyfile(figure, dest)
    return os.path.relpath(dest, table.parent if str(table.parent) else ".")


def _check_destinations(out: Path, table: Path, figures: Optional[Path]) -> None:
    """Raise ``ValueError`` naming the option when an output path cannot be written: ``--out`` or ``--figures`` an
    existing file, ``--table`` a folder, in a folder that does not exist, or not writable, ``--figures`` a folder
    that cannot be created or written."""
    for option, folder in (("--out", out), ("--figures", figures)):
        if folder is not None and folder.exists() and not folder.is_dir():
            raise ValueError(f"{option} {folder}: a file, not a folder; give a folder (created if missing)")
    if table.is_dir():
        raise ValueError(f"--table {table}: a folder; give the markdown file to write, e.g. "
                         f"{table / 'REPRODUCTION.md'}")
    parent = table.parent if str(table.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--table {table}: its folder {parent} does not exist; create it or give another path")
    # written only after the claims ran: tried now (appending nothing; a new file is removed again)
    existed = table.exists()
    try:
        with open(table, "a"):
            pass
    except OSError as e:
        raise ValueError(f"--table {table}: cannot be written ({e.strerror or e}); give another path") from None
    if not existed:
        table.unlink(missing_ok=True)
    if figures is not None:
        try:
            figures.mkdir(parents=True, exist_ok=True)
            probe = figures / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"--figures {figures}: cannot be created or written ({e.strerror or e}); give another "
                             "folder") from None


def run_claims(ids: List[str], quick: bool, out: Path, table: Path, figures: Optional[Path] = None) -> List[dict]:
    """Run claims, print each result, and (re)write ``table`` with every row measured so far.

    Run outputs (checkpoints, logs, PNGs) go to ``out``; with ``figures``, each claim's PNG is also
    copied there and linked from the table (so a committed table can link committed plots).
    """
    unknown = [i for i in ids if i not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claim ids {unknown}; valid ids: {', '.join(sorted(CLAIMS))}")
    _check_destinations(out, table, figures)      # before any claim runs: a bad path must not cost a long run
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cid in ids:
        c = CLAIMS[cid]
        t0 = time.time()
        try:
            r = c.fn(quick, out)
        except Exception as e:  # a crash is a visible failure, never a hidden row
            trace = traceback.format_exc()
            log = out / f"{cid}_error.txt"           # the whole traceback, where the failing row points
            log.write_text(trace)
            r = Result(thesis="-", ours=f"error: {type(e).__name__}: {e} (traceback: {log})", passed=False,
                       criterion="runs", details={"traceback": trace[-2000:]})
        row = dict(id=cid, title=c.title, thesis=r.thesis, ours=r.ours, passed=r.passed, criterion=r.criterion,
                   seconds=time.time() - t0, figure=_publish(r.figure, figures, table),
                   command=f"statespaces reproduce {cid}" + (" --quick" if quick else ""))
        rows.append(row)
        print(f"{'PASS' if r.passed else 'FAIL'} {cid} {c.title}: ours {r.ours} (thesis {r.thesis}; "
              f"criterion: {r.criterion}) [{row['seconds']:.1f}s]", flush=True)
        _write_table(rows, table, quick)   # after every claim: a long run killed midway keeps its rows
    return rows


def _write_table(rows: List[dict], table: Path, quick: bool) -> None:
    body = _existing_rows(table)     # rows of claims not re-run this time are kept
    kept = sorted(set(body) - {r["id"] for r in rows}, key=_claim_order)
    run = f"`statespaces reproduce {'--quick ' if quick else ''}...` on {hardware()}"
    origin = (f"Generated by {run}." if not kept else
              f"Rows {', '.join(r['id'] for r in rows)} generated by {run}; rows {', '.join(kept)} kept from earlier "
              "runs (each row's command names its profile, `--quick` or full; their machine is not recorded here).")
    lines = [
        "# Reproduction of the thesis' claims",
        "",
        f"{origin} Thesis numbers come from the thesis; pass criteria from `notes/thesis-experiments.md` §11 "
        "(proposed there, not thesis results). Failures stay in the table with the measured number.",
        "",
        "| claim | thesis | ours | pass | criterion | command | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fig = f" ([plot]({r['figure']}))" if r["figure"] else ""
        body[r["id"]] = (
            f"| {r['id']}: {r['title']}{fig} | {r['thesis']} | {r['ours']} | {'yes' if r['passed'] else '**no**'} | "
            f"{r['criterion']} | `{r['command']}` | {r['seconds']:.0f} s |"
        )
    lines += [body[k] for k in sorted(body, key=_claim_order)]
    table.write_text("\n".join(lines) + "\n")


def _claim_order(cid: str):
    return (cid[:1], int(cid[1:]) if cid[1:].isdigit() else 0, cid)


def _existing_rows(table: Path) -> Dict[str, str]:
    """Rows of an existing table, by claim id (``| A1: title ... |``); claims no longer registered are dropped."""
    if not table.is_file():
        return {}
    rows = {}
    for line in table.read_text().splitlines():
        if line.startswith("| ") and ": " in line.split(" | ")[0]:
            cid = line[2:].split(":", 1)[0]
            if cid in CLAIMS:
                rows[cid] = line
    return rows
