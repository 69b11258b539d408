"""Run a trained classifier in step (recurrent) mode and check it against the convolution mode.

The model was trained with FFT convolutions; at inference each residual block can consume one time
step with ``block.step(x_t, state)`` (an O(H N) state per layer, thesis §2.3.2). This prints the
running prediction for a few test digits and the agreement between the two modes, and times both.

    python examples/streaming_inference.py runs/examples/digits/s4d/best
"""
from __future__ import annotations

import argparse
import time

import torch

from statespaces.train import load_trained
from statespaces.train.loop import load_data


@torch.no_grad()
def step_logits(model, x):
    """Logits after every step, (B, L, n_classes), computed recurrently."""
    states = [blk.layer.initial_state(x.shape[0]) for blk in model.blocks]
    pooled = torch.zeros(x.shape[0], model.decoder.in_features, dtype=x.dtype)
    out = []
    for t in range(x.shape[1]):
        h = model.encoder(x[:, t])
        for i, blk in enumerate(model.blocks):
            h, states[i] = blk.step(h, states[i])
        pooled += model.final_norm(h)
        out.append(model.decoder(pooled / (t + 1)) if model.pool == "mean" else model.decoder(model.final_norm(h)))
    return torch.stack(out, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--n", type=int, default=256, help="test sequences to compare")
    args = ap.parse_args()

    model, cfg = load_trained(args.checkpoint)
    model.eval()
    data = load_data(cfg)
    x, y = data.test.tensors[0][: args.n], data.test.tensors[1][: args.n]
    t0 = time.time()
    with torch.no_grad():
        conv = model(x)
    t_conv = time.time() - t0
    t0 = time.time()
    steps = step_logits(model, x)
    t_step = time.time() - t0
    agree = (steps[:, -1].argmax(-1) == conv.argmax(-1)).float().mean().item()
    print(f"{len(x)} sequences of length {x.shape[1]}: convolution mode {t_conv * 1e3:.0f} ms, "
          f"step mode {t_step * 1e3:.0f} ms")
    print(f"max |logits step - logits conv| = {(steps[:, -1] - conv).abs().max():.2e}; "
          f"same prediction for {100 * agree:.1f}%; accuracy {100 * (conv.argmax(-1) == y).float().mean():.1f}%")
    for i in range(3):
        marks = [int(steps[i, t].argmax()) for t in range(7, x.shape[1], 8)]
        print(f"digit {int(y[i])}: prediction after each row of 8 pixels: {marks}")


if __name__ == "__main__":
    main()
