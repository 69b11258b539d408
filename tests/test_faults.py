"""Faults in training: a run killed with SIGKILL at a random point and resumed ends bit-identical
to an uninterrupted run. CI runs FAULT_TRIALS=3 trials; set FAULT_TRIALS=20 for the local profile."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from statespaces.train import load_checkpoint

TRIALS = int(os.environ.get("FAULT_TRIALS", "3"))
LONG = TRIALS >= 20
ARGS = ["--model.d_model", "16", "--model.n_layers", "1", "--model.d_state", "8", "--model.init", "lin",
        "--trainer.epochs", "2", "--trainer.batch_size", "32", "--trainer.checkpoint_every", "5", "--no-progress"]


def _run(out, resume=False, kill_after=None):
    cmd = [sys.executable, "-m", "statespaces", "train", *ARGS, "--trainer.out", str(out)] + (["--resume"] if resume else [])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if kill_after is None:
        subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=300)
        return
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckdir = Path(out) / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait for the first checkpoint, then a bit more
        if ckdir.is_dir() and any(p.name.startswith("step-") for p in ckdir.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(kill_after)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def _final_weights(out):
    last = sorted((Path(out) / "checkpoints").glob("step-*"))[-1]
    tensors, meta = load_checkpoint(last)
    return meta["step"], {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    _run(tmp_path / "ref")
    ref_step, ref = _final_weights(tmp_path / "ref")
    rng = random.Random(0)
    for trial in range(TRIALS):
        out = tmp_path / f"killed{trial}"
        assert _run(out, kill_after=rng.uniform(0.0, 1.0)), "the run finished before it could be killed"
        assert not (out / "summary.json").exists()
        _run(out, resume=True)
        step, got = _final_weights(out)
        assert step == ref_step
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=0, rtol=0)


def _tiny(tmp_path, *extra):
    from statespaces.train import build_config

    base = [("model.d_model", "16"), ("model.n_layers", "2"), ("model.d_state", "8"), ("model.init", "lin"),
            ("trainer.batch_size", "16"), ("trainer.out", str(tmp_path / "run"))]
    return build_config(overrides=base + list(extra))


def test_training_at_ten_times_the_learning_rate_never_goes_nan_silently(tmp_path):
    """10x the default LRs, ~270 steps in CI and ~1,100 in the local profile: either every parameter
    stays finite, or training stops with FloatingPointError naming the parameters."""
    from statespaces.train import load_checkpoint, train

    epochs = 12 if LONG else 3
    cfg = _tiny(tmp_path, ("trainer.lr", "0.1"), ("trainer.ssm_lr", "0.01"), ("trainer.epochs", str(epochs)))
    try:
        train(cfg, progress=False)
    except FloatingPointError as e:
        assert "non-finite parameters" in str(e)
        return
    last = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1]
    for k, v in load_checkpoint(last)[0].items():
        assert torch.isfinite(v).all(), k


def test_nan_parameter_stops_training_with_its_name(tmp_path, monkeypatch):
    import statespaces.train.loop as loop
    from statespaces.train import train

    real_build = loop.build_model

    def poisoned(*a, **k):
        model = real_build(*a, **k)
        with torch.no_grad():
            model.blocks[1].layer.log_dt[0] = float("nan")
        return model

    monkeypatch.setattr(loop, "build_model", poisoned)
    with pytest.raises(FloatingPointError, match=r"blocks\.1\.layer\.log_dt"):
        train(_tiny(tmp_path, ("trainer.epochs", "1")), progress=False)
