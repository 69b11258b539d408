import contextlib
import os

import numpy as np
import pytest
import torch

# Keep CI deterministic and within 2 cores: one thread per pytest-xdist worker (``pytest -n 2``, the README's
# command: the tests' tensors are small, so two processes of one thread beat one of two), else up to two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

try:
    from hypothesis import settings

    settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True)
    settings.register_profile("long", max_examples=300, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover
    pass


def patch_triton_interpreter() -> None:
    """NumPy >= 2.4 vs the Triton 3.6 interpreter (:func:`statespaces.ops.triton._launch.patch_interpreter`);
    call after ``TRITON_INTERPRET=1`` and ``import triton``."""
    from statespaces.ops.triton._launch import patch_interpreter

    patch_interpreter()


def row_fold_scan(self, input):
    """``ScanOps.generic_scan`` of the Triton interpreter by rows: acc_i = combine(acc_{i-1}, x_i) along the axis,
    vectorized over the other axes (the combine functions are elementwise). The interpreter calls the combine
    function once per element; this gives identical results with ~BLOCK times fewer Python calls. Patch it in
    with ``monkeypatch.setattr(triton.runtime.interpreter.ScanOps, "generic_scan", row_fold_scan)``."""
    datas = [a.handle.data for a in input]
    ax = self.axis
    outs = [np.empty_like(d) for d in datas]
    acc = [np.take(d, 0, axis=ax) for d in datas]
    for o, a in zip(outs, acc):
        np.moveaxis(o, ax, 0)[0] = a
    for i in range(1, datas[0].shape[ax]):
        prev = [self.to_tensor(a, t.dtype) for a, t in zip(acc, input)]
        cur = [self.to_tensor(np.take(d, i, axis=ax), t.dtype) for d, t in zip(datas, input)]
        ret = self.combine_fn.fn(*prev, *cur)
        ret = ret if isinstance(ret, tuple) else (ret,)
        acc = [r.handle.data if hasattr(r, "handle") else np.asarray(r) for r in ret]
        for o, a in zip(outs, acc):
            np.moveaxis(o, ax, 0)[i] = a
    return [self.to_tensor(o, t.dtype) for o, t in zip(outs, input)]


def close_scaled(x, ref, tol) -> None:
    """``max |x - ref| <= tol * max(1, max |ref|)`` (x cast to ref's dtype), with the error in the message."""
    scale = ref.abs().max().clamp_min(1.0)
    err = (x.to(ref.dtype) - ref).abs().max()
    assert err <= tol * scale, f"max error {float(err):.3g} > {tol} x {float(scale):.3g}"


def spy_calls(monkeypatch, module, name: str, arg: int) -> list:
    """Replace ``module.name`` by a wrapper that records ``args[arg].shape`` of each call; returns the list."""
    calls = []
    orig = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args[arg].shape)
        return orig(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


class StepModule(torch.nn.Module):
    """``layer.step`` as a module's forward, so that ``torch.compile`` / ``torch.export`` can trace one
    recurrent step: forward(x (B, H), state) -> (y (B, H), new state)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, state):
        return self.layer.step(x, state)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: 2 OpenMP threads on a busy 2-core machine are ~100x slower than one.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: Small causal layers every model-level test runs over: (registry name, layer kwargs).
SMALL_LAYERS = [("s4d", dict(d_state=8)), ("linoss", dict(n_oscillators=8)), ("s4", dict(d_state=8))]


# torch.compile of LinOSS training runs (trainer.compile = "auto") costs seconds of compilation per
# shape; the suite checks the numerics eagerly and compiles only where a test asks for it.
os.environ.setdefault("STATESPACES_COMPILE", "off")


@contextlib.contextmanager
def killed_after_saves(monkeypatch, n: int):
    """Run the body as a training run killed right after its ``n``-th checkpoint save (a simulated kill:
    KeyboardInterrupt, expected); checkpoint saving is restored on exit."""
    import statespaces.train.loop as loop

    real, calls = loop._Checkpoints.save, {"n": 0}

    def save(self, *a, **k):
        real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(loop._Checkpoints, "save", save)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(loop._Checkpoints, "save", real)


def cli_run(capsys, *argv):
    """Run the ``statespaces`` CLI in-process; return (exit status, stdout, stderr)."""
    from statespaces.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def cli_status(capsys, *argv):
    """Run the ``statespaces`` CLI in-process; return (exit status, stderr)."""
    rc, _, err = cli_run(capsys, *argv)
    return rc, err


@contextlib.contextmanager
def run_folder_held(out):
    """Another process holds the run folder ``out``'s lock (statespaces.train.run.lock_run_folder) while the block
    runs; yields that process (its ``pid`` is what a refusal names)."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from statespaces.train.run import lock_run_folder; "
        f"f = lock_run_folder(Path({str(out)!r})); print('locked', flush=True); time.sleep(300)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def trained_token_lm(folder, n: int = 64, n_test: int = 8):
    """A tiny language model trained one epoch on a token file of ``n`` arithmetic sequences (mod 12, 24 steps) in
    ``folder``, whose first ``n_test`` are also the test split: ``(run folder, token file, tokens (n, 24))``."""
    from statespaces.train import build_config, train

    rng = np.random.default_rng(0)
    start, step = rng.integers(0, 12, n), rng.integers(1, 3, n)
    tokens = (start[:, None] + step[:, None] * np.arange(24)[None]) % 12
    path = folder / "t.npz"
    np.savez(path, train=tokens, test=tokens[:n_test])
    train(build_config(overrides=[("data.name", f"tokens:{path}"), ("model.d_model", "8"), ("model.n_layers", "1"),
                                  ("model.layer.d_state", "4"), ("trainer.epochs", "1"), ("trainer.batch_size", "16"),
                                  ("trainer.out", str(folder / "lm")), ("trainer.tensorboard", "off")]), progress=False)
    return folder / "lm", path, tokens
