"""The benchmark scripts run at tiny shapes and print their ratios (against the naive reference where they have
one, and against the memory floor); benchmarks/bench_layer.py (the A/B timing tool) stateless and stateful; and
``gpu_check.py --device cpu``, the CPU rehearsal of the GPU command, writes every section without an error."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": ""}


def run_script(*args: str, path: str = "") -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT / "benchmarks", capture_output=True, text=True,
                         env={**ENV, "PATH": path}, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("spec,extra", [('{"kind": "s4", "bidirectional": true}', []),
                                        ('{"kind": "s4d"}', ["--state"]),
                                        ('{"kind": "dlinoss"}', ["--d-state", "0", "--state"]),
                                        # --d-state (default 64) is ignored by kinds without d_state (it was refused)
                                        ('{"kind": "linoss", "n_oscillators": 2}', [])])
def test_bench_layer_runs(spec, extra):
    out = run_script("bench_layer.py", spec, "--batch", "1", "--length", "16", "--d-model", "4", "--d-state", "4",
                     "--repeat", "1", *extra)
    assert "fwd+bwd median" in out and ("stateful" in out) == ("--state" in extra)
    assert "floor" in out and "median/floor" in out


TINY = {
    "bench_chunked.py": (["--batch", "1", "--d-model", "4", "--d-state", "4", "--lengths", "64", "--chunks", "16",
                          "--repeat", "1"], ["best ratio", "scan/chunk", "best/floor"]),
    "bench_n_ssm.py": (["--batch", "1", "--d-model", "8", "--d-state", "4", "--length", "32", "--repeat", "1",
                        "--rounds", "1"], ["t/t(n_ssm=H)", "ours/floor"]),
    "bench_s5.py": (["--quick", "--shapes", "2,16", "--d-model", "4"], ["time / S4D's", "ours/floor"]),
    "bench_generation.py": (["--lengths", "8", "--batches", "1", "--d-model", "8", "--n-layers", "1", "--d-state", "4",
                             "--samples", "2", "--steps", "3", "--layers", "s4d", "linoss"],
                            ["speed-up", "stepper step/s", "floor step/s", "ours/floor"]),
    "bench_s4.py": (["--shapes", "1,4,4,32"], ["naive/chunked", "power/floor"]),
}


@pytest.mark.parametrize("script", sorted(TINY))
def test_bench_script_prints_reference_and_floor_ratios(script):
    """Each script says what its floor counts and prints a floor and a ratio to it on every row."""
    args, columns = TINY[script]
    out = run_script(script, *args)
    assert "floor:" in out, out
    for col in columns:
        assert col in out, (col, out)
    assert re.search(r"[\s|]\d+(\.\d+)?x[\s|]", out), out           # a data row with a ratio


#: (script, arguments with one bad size, the flag the error must name): refused by argparse before any header.
BAD_SIZES = [
    ("bench_s4d.py", ["--batch", "-2"], "--batch"),
    ("bench_s5.py", ["--shapes", "2,-256"], "--shapes"),
    ("bench_layer.py", ['{"kind": "s4d"}', "--length", "-256"], "--length"),
    ("bench_generation.py", ["--batches", "-1"], "--batches"),
    ("bench_peers.py", ["--s4", "x.py", "--shapes", "2,-256"], "--shapes"),
    ("bench_s4.py", ["--shapes", "1,4,4"], "--shapes"),
    ("bench_kernels.py", ["--lengths", "0"], "--lengths"),
    ("bench_chunked.py", ["--chunks", "-16"], "--chunks"),
]


def run_failing(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT / "benchmarks", capture_output=True, text=True,
                          env=ENV, timeout=120)


@pytest.mark.parametrize("script,args,flag", BAD_SIZES, ids=[f"{s}{a[-2]}" for s, a, _ in BAD_SIZES])
def test_bad_size_is_one_line_error_naming_the_flag(script, args, flag):
    out = run_failing(script, *args)
    assert out.returncode == 2, (out.returncode, out.stderr)
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"argument {flag}:" in errors[0], out.stderr
    assert "Traceback" not in out.stderr and "negative dimension" not in out.stderr and out.stdout == "", out


@pytest.mark.parametrize("args,flag,says", [
    (["bench_kernels.py", "--peer-s4", "/nonexist.py"], "--peer-s4 /nonexist.py", "no such file"),
    (["bench_peers.py", "--s4", "/nonexist.py"], "--s4 /nonexist.py", "no such file"),
    (["bench_peers.py", "--linoss", "/nonexist/l.py", "--jax-python", sys.executable], "--linoss", "no such file"),
    (["bench_peers.py", "--s4", "bench_s4d.py"], "--s4 bench_s4d.py", "does not look like state-spaces/s4"),
    (["bench_peers.py", "--linoss", "bench_s4d.py", "--jax-python", sys.executable], "--linoss",
     "does not look like tk-rusch/linoss"),
])
def test_peer_files_refused_up_front(args, flag, says):
    """A missing or wrong peer file is refused before anything is timed, naming the flag that was given."""
    out = run_failing(*args)
    assert out.returncode == 2 and out.stdout == "", out
    assert flag in out.stderr and says in out.stderr, out.stderr


def test_bench_s5_and_s4_tables_in_one_unit():
    """Every time column of a table is in ms, the unit in the header (bench_s5 printed s beside a ms floor)."""
    s5 = run_script("bench_s5.py", "--quick", "--shapes", "2,16", "--d-model", "4")
    head = next(line for line in s5.splitlines() if line.startswith("| shape"))
    assert "| ms / fwd+bwd |" in head and "floor ms" in head and " s " not in head, head
    s4 = run_script("bench_s4.py", "--shapes", "1,4,4,32")
    head = next(line for line in s4.splitlines() if line.lstrip().startswith("B "))
    assert all(f"{route} ms" in head for route in ("power", "chunked", "naive", "floor")), head
    assert not re.search(r"\b(power|chunked|naive) s\b", head), head
    for out in (s5, s4):
        assert "timing: wall clock" in out, out


@pytest.mark.slow
def test_bench_compile_layers_option():
    """--layers times only the named layers (torch.compile is slow on a CPU: about 20 s for one tiny layer)."""
    if shutil.which("g++") is None:
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    out = run_script("bench_compile.py", "--B", "1", "--H", "4", "--N", "4", "--L", "16", "--repeat", "1",
                     "--layers", "s4d", path=os.environ.get("PATH", ""))
    rows = [line for line in out.splitlines() if line.startswith("| S")]
    assert [r.split("|")[1].strip() for r in rows] == ["S4D"] and "best/floor" in out, out
    assert "compile s (1st call" in out and "timing: process CPU time" in out, out


def test_gpu_check_cpu_dry_run_writes_every_section(tmp_path, capsys):
    """``--device cpu`` runs every section (kernels and layers against float64 for real); what needs CUDA is
    recorded as skipped; no section errs; the JSON is marked as a dry run on the CPU."""
    spec = importlib.util.spec_from_file_location("gpu_check_dry", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    path = tmp_path / "dry.json"
    assert gpu_check.main(["--device", "cpu", "--out", str(path)]) == 0
    res = json.loads(path.read_text())
    assert res["device"] == "cpu" and res["dry_run"] is True
    assert set(gpu_check.SECTIONS) <= set(res)
    for name in gpu_check.SECTIONS:
        recs = res[name] if isinstance(res[name], list) else [res[name]]
        assert recs and not any("error" in r for r in recs), (name, res[name])
    for name in ("timing", "syncs", "resources"):
        assert res[name]["skipped"].startswith("needs CUDA"), res[name]
    ops = {r["op"] for r in res["kernels"] if "skipped" not in r}
    assert {"vandermonde", "cauchy", "chunked_conv", "chunked_conv_dense", "dplr_step"} <= ops
    assert max(r["fwd"] for r in res["layers"]) < 1e-4
    assert all(r["aten_ops"] > 0 for r in res["ops"])
