"""benchmarks/bench_layer.py (the A/B timing tool) runs and reports, stateless and stateful, on a tiny shape."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("spec,extra", [('{"kind": "s4", "bidirectional": true}', []),
                                        ('{"kind": "s4d"}', ["--state"]),
                                        ('{"kind": "dlinoss"}', ["--d-state", "0", "--state"])])
def test_bench_layer_runs(spec, extra):
    out = subprocess.run([sys.executable, "bench_layer.py", spec, "--batch", "1", "--length", "16", "--d-model", "4",
                          "--d-state", "4", "--repeat", "1", *extra], cwd=ROOT / "benchmarks", capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": ""},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "fwd+bwd median" in out.stdout and ("stateful" in out.stdout) == ("--state" in extra)
