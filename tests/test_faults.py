"""Faults in training: a run killed with SIGKILL at a random point and resumed ends bit-identical
to an uninterrupted run. CI runs FAULT_TRIALS=3 trials; set FAULT_TRIALS=20 for the local profile."""
import json
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
ARGS = ["--model.d_model", "16", "--model.n_layers", "1", "--model.layer.d_state", "8", "--model.layer.init", "lin",
        "--trainer.epochs", "2", "--trainer.batch_size", "32", "--trainer.checkpoint_every", "5", "--no-progress"]


# 2 epochs x 41 steps of 32 digits (1293 after the validation split); a checkpoint every 5 steps and at each epoch end
STEPS = 82
KILL_STEPS = [0] + list(range(5, 80, 5))   # 0: before the first checkpoint (during start-up)


def _cmd(out, resume=False):
    return [sys.executable, "-m", "statespaces", "train", *ARGS, "--trainer.out", str(out)] + (["--resume"] if resume else [])


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _run(out, resume=False):
    subprocess.run(_cmd(out, resume), check=True, capture_output=True, env=_env(), timeout=300)


def _newest_step(ckdir):
    try:
        steps = [int(p.name[5:]) for p in ckdir.iterdir() if p.name.startswith("step-")]
    except (FileNotFoundError, ValueError):
        return -1
    return max(steps, default=-1)


def _run_killed(out, kill_step, delay):
    """Start a run, SIGKILL it ``delay`` seconds after the checkpoint of step >= ``kill_step``
    appears (``kill_step=0``: ``delay`` seconds after start, before any checkpoint: ``delay`` is then
    scaled up to cover start-up). Returns whether the process was still running when killed."""
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    ckdir = Path(out) / "checkpoints"
    deadline = time.time() + 120
    if kill_step == 0:
        time.sleep(delay * 40)
    else:
        while time.time() < deadline and proc.poll() is None and _newest_step(ckdir) < kill_step:
            time.sleep(0.002)
        time.sleep(delay)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def _final(out):
    """Final step, weights, and history (per-epoch metrics without wall times) of a finished run."""
    last = sorted((Path(out) / "checkpoints").glob("step-*"))[-1]
    tensors, meta = load_checkpoint(last)
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in meta["history"]]
    weights = {k: v for k, v in tensors.items() if k.startswith("model.")}
    summary = json.loads((Path(out) / "summary.json").read_text())
    return meta["step"], weights, history, (summary["test_acc"], summary["selected_epoch"], summary["selected_val_acc"])


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """FAULT_TRIALS runs are SIGKILLed at random points (start-up, between steps, inside a checkpoint
    write) and resumed with --resume: each ends with the uninterrupted run's weights, bit for bit,
    and the same per-epoch metrics. A run that finished before the kill landed is retried with
    another kill point (the count of trials is of runs really killed)."""
    _run(tmp_path / "ref")
    ref_step, ref, ref_hist, ref_summary = _final(tmp_path / "ref")
    assert ref_step == STEPS
    rng = random.Random(int(os.environ.get("FAULT_SEED", "0")))
    survived = attempts = 0
    while survived < TRIALS:
        attempts += 1
        assert attempts <= 3 * TRIALS + 3, f"only {survived} of {attempts - 1} runs could be killed before finishing"
        out = tmp_path / f"killed{attempts}"
        if not _run_killed(out, rng.choice(KILL_STEPS), rng.uniform(0.0, 0.05)):
            continue
        assert not (out / "summary.json").exists()
        _run(out, resume=True)
        step, got, hist, summary = _final(out)
        assert step == ref_step
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=0, rtol=0)
        assert hist == ref_hist and summary == ref_summary
        survived += 1
    print(f"SIGKILL trials survived: {survived} (attempts {attempts})")


def _tiny(tmp_path, *extra):
    from statespaces.train import build_config

    base = [("model.d_model", "16"), ("model.n_layers", "2"), ("model.layer.d_state", "8"), ("model.layer.init", "lin"),
            ("trainer.batch_size", "16"), ("trainer.out", str(tmp_path / "run"))]
    return build_config(overrides=base + list(extra))


@pytest.mark.slow   # fast tier: a training run / build / reproduction
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
