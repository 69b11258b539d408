"""The scripts in examples/ import (their names resolve against the package) and define main()
(examples/hippo_figures.py imported a module that no longer existed); the slow tier runs the session of
examples/README.md at small sizes."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_imports(path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)                 # the __main__ guard keeps main() from running
    assert callable(getattr(module, "main", None)), f"{path.name} defines no main()"


def _run(script: str, *args: str, cwd: Path) -> str:
    import os
    import subprocess
    import sys

    path = Path(__file__).resolve().parents[1] / "examples" / script
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, str(path), *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"{script} {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_the_examples_typical_session_runs(tmp_path):
    """examples/README.md's session at small sizes: train a checkpoint, analyze it, stream it, export a saved
    language model's step; each script's own checks (step vs convolution, exported vs convolution) must hold."""
    import re

    import torch

    from statespaces.models.lm import SSMLanguageModel

    # s4d and linoss: each kind takes its own state-size key (LinOSS: n_oscillators; d_state was refused)
    out = _run("train_digits.py", "--layer", "s4d,linoss", "--epochs", "1", "--d-model", "8", "--d-state", "8",
               "--n-layers", "1", "--out", "runs/ex", cwd=tmp_path)
    assert "runs/ex/s4d/best" in out and "runs/ex/linoss/best" in out
    best = tmp_path / "runs" / "ex" / "s4d" / "best"
    _run("analyze_checkpoint.py", str(best), "--out", str(tmp_path / "analysis"), cwd=tmp_path)
    assert list((tmp_path / "analysis").glob("*oscillators.csv"))
    for ckpt in (best, tmp_path / "runs" / "ex" / "linoss" / "best"):
        out = _run("streaming_inference.py", str(ckpt), "--n", "8", cwd=tmp_path)
        diff = float(re.search(r"max \|logits step - logits conv\| = ([0-9.e+-]+)", out).group(1))
        assert diff < 1e-4
    torch.manual_seed(0)
    SSMLanguageModel(17, d_model=8, n_layers=1).save_pretrained(tmp_path / "lm")
    out = _run("export_streaming.py", "--model", str(tmp_path / "lm"), "--n", "2", cwd=tmp_path)
    assert "max |logit diff|" in out
