"""Export a model's streaming step (torch.export + ONNX), run it in onnxruntime, check it, time it.

A language model over sklearn's 8x8 digits read pixel by pixel (intensity 0..16 = 17 tokens, a
real sequence of 64 steps) is exported as one step ``(token, *state) -> (logits, *state')`` for
each backbone: S4D, S4, LinOSS (flat stacks) and SaShiMi (frame = its pooling product). The
exported file runs in onnxruntime on the CPU over whole digit sequences and its logits are
compared with the model's own convolution view; the per-step latency at batch 1 (CPU time, one
thread) is printed for onnxruntime, the ``torch.export`` program and the eager ``step``.

    python examples/export_streaming.py                  # random init: the check is the same
    python examples/export_streaming.py --model DIR      # a model saved with save_pretrained

Needs ``pip install onnx onnxscript onnxruntime``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from statespaces.export import export_onnx, export_step, streaming_model
from statespaces.models.lm import SSMLanguageModel
from statespaces.serialization import load_pretrained

BACKBONES = {
    "s4d": dict(layer="s4d"),
    "s4": dict(layer="s4"),
    "linoss": dict(layer="linoss"),
    "sashimi-s4d": dict(layer="s4d", backbone="sashimi", backbone_kwargs={"pool": 4, "n_pools": 2}),
}


def digit_tokens(n: int) -> torch.Tensor:
    """(n, 64) int64 pixel intensities of the first n digits, row by row."""
    return torch.from_numpy(load_digits().images[:n].reshape(n, 64).astype(np.int64))


def per_step_ms(fn, args, frame: int, repeat: int = 200) -> float:
    """CPU time per sample (one thread everywhere, so it does not depend on other load)."""
    out = fn(*args)
    t0 = time.process_time()
    for _ in range(repeat):
        out = fn(args[0], *out[1:])
    return (time.process_time() - t0) / (repeat * frame) * 1e3


def check(name: str, model: SSMLanguageModel, tokens: torch.Tensor, out_dir: Path) -> None:
    import onnxruntime as ort

    model.eval()
    sm = streaming_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(model, out_dir / f"{name}.onnx")
        program = export_step(model).module()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run_ort(x, *state):
        outs = sess.run(None, dict(zip(names, [np.asarray(x), *(np.asarray(s) for s in state)])))
        return tuple(outs)

    worst = 0.0
    with torch.no_grad():
        for seq in tokens:                                   # batch 1, as when streaming
            ref = model(seq[None]).numpy()
            state = tuple(s.numpy() for s in sm.initial_state(1))
            ys = []
            for t in range(0, seq.shape[0], sm.frame):
                out = run_ort(seq[None, t:t + sm.frame].numpy(), *state)
                ys.append(out[0])
                state = out[1:]
            worst = max(worst, float(np.abs(np.concatenate(ys, 1) - ref).max()))
        x0 = tokens[:1, :sm.frame]
        ort_ms = per_step_ms(run_ort, (x0.numpy(), *(s.numpy() for s in sm.initial_state(1))), sm.frame)
        exp_ms = per_step_ms(program, (x0, *sm.initial_state(1)), sm.frame)
        eager_ms = per_step_ms(sm, (x0, *sm.initial_state(1)), sm.frame)
    n_state = sum(s.numel() for s in sm.initial_state(1))
    print(f"{name:12s} frame {sm.frame:2d}  state {n_state:6d} floats  max |logit diff| {worst:.1e}  "
          f"per step: onnxruntime {ort_ms:.3f} ms, torch.export {exp_ms:.3f} ms, eager {eager_ms:.3f} ms")
    if not worst <= 1e-5:
        raise SystemExit(f"{name}: exported step disagrees with the convolution view ({worst:.1e} > 1e-5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="directory written by save_pretrained (an SSMLanguageModel over 17 tokens)")
    ap.add_argument("--n", type=int, default=8, help="digit sequences to compare")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (latency is measured at batch 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tokens = digit_tokens(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            check(Path(args.model).name, load_pretrained(args.model), tokens, Path(tmp))
            return
        for name, kw in BACKBONES.items():
            torch.manual_seed(0)
            check(name, SSMLanguageModel(17, d_model=64, n_layers=4 if "sashimi" not in name else 1, **kw),
                  tokens, Path(tmp))


if __name__ == "__main__":
    main()
