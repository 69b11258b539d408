"""The benchmark scripts as a user runs them (found by a campaign, 2026-12-07): a bad argument is one line on
stderr with exit status 2, not a traceback; ``--repeat 0`` is refused; the JSON rows of bench_kernels name the
shape each row ran at; the timing helper refuses an empty median."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(*args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    env.pop("STATESPACES_DEBUG", None)
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("script, args, match", [
    ("bench_s4d.py", ["--batch", "-1"], "argument --batch: -1: allowed: an integer >= 1"),
    ("bench_s4d.py", ["--lengths", "64", "--repeat", "0"], "--repeat: 0: allowed: an integer >= 1"),
    ("bench_s4.py", ["--shapes", "1,8,8"], "expected 4 integers >= 1 as B,H,N,L"),
    ("bench_precision.py", ["--parts", "foo"], "unknown part"),
    ("bench_layer.py", ["s4d"], "JSONDecodeError"),
    ("bench_linoss.py", ["--shapes", "2"], "expected 2 integers >= 1 as B,L"),
])
def test_a_bad_argument_is_one_line_and_exit_2(script, args, match):
    res = _run(BENCH / script, *args)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    if not lines[0].startswith("usage:"):          # argparse's own errors come after its usage lines
        assert len(lines) == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and match in lines[-1] and ": error: " in lines[-1], res.stderr[-2000:]


def test_timeit_refuses_no_repeat():
    sys.path.insert(0, str(BENCH))
    try:
        from common import timeit
    finally:
        sys.path.remove(str(BENCH))
    with pytest.raises(ValueError, match="repeat=0"):
        timeit(lambda: None, repeat=0)


@pytest.mark.slow
def test_bench_kernels_json_rows_carry_their_own_shape(tmp_path):
    out = tmp_path / "rows.jsonl"
    res = _run(BENCH / "bench_kernels.py", "--batch", "4", "--d-model", "16", "--modes", "8", "--lengths", "64",
               "--repeat", "1", "--rounds", "1", "--json", out)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["op"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (rows["scan (B=2,H=8)"]["B"], rows["scan (B=2,H=8)"]["H"]) == (2, 8)
    assert (rows["fftconv"]["B"], rows["fftconv"]["H"]) == (4, 16)
    assert all("cores" in r["machine"] for r in rows.values())
