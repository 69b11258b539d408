"""Autoregressive generation speed: recurrent steps vs re-running convolution mode (thesis §7.4.2).

For each layer type (S4D, LinOSS, S4 when it imports) a flat causal LM (H=64, 4 blocks, N=64, 256-token
vocabulary), and a SaShiMi LM with S4D (its top tier H=32, ``n_layers=1`` per tier: the pooled tiers widen it),
generates L tokens after a one-token prompt (each ``generate`` column timed once, after a short warm-up):

* **recurrent**: :meth:`SSMLanguageModel.generate` (prompt in convolution mode, then one O(1)
  recurrent step per token);
* **conv re-run**: the naive way, re-running the full convolution on the growing prefix for every
  new token (O(t log t) per token). By default its total time is estimated from ``--samples``
  evenly spaced prefix lengths (midpoint sums over t = 1..L); ``--exact`` runs the whole loop.

Prints tokens/s (batch x tokens / seconds) for both and their ratio, one table per run:

    .venv/bin/python benchmarks/bench_generation.py                    # L in (256, 1024), B in (1, 64)
    .venv/bin/python benchmarks/bench_generation.py --lengths 128 --batches 1 --exact

A second table (issue 17 item 3) times one recurrent step of backbone + head, steps/s: the eager
``backbone.step(x, state)`` + ``decode`` (validation, cache look-up, NaN checks, new tensors per
call) against the :class:`~statespaces.models.stepper.ModelStepper` (validated once, static buffers,
in-place layer steppers; a CUDA graph on CUDA), and ``generate`` with ``stepper=False`` / ``True``:

    .venv/bin/python benchmarks/bench_generation.py --stepper-only --batches 1 8

Both tables also give a memory floor per step (``common.step_floor``): the backbone's recurrent state read and
written once and the backbone and head parameters read once, at fp32 copy speed (one copy of that many bytes,
its per-call overhead included; the embedding row, logits and sampling not counted), as tokens/s or steps/s,
and ``ours/floor`` = time per step of the recurrent generation (first table) or the stepper (second) over it.
For SaShiMi the pooled tiers step only every p-th token, so its floor counts more than one token needs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from statespaces.layers.registry import available_layers
from statespaces.models.lm import SSMLanguageModel

sys.path.insert(0, str(Path(__file__).resolve().parent))       # benchmarks/common.py from any working directory
from common import machine, positive_int, run, step_floor, timing_line  # noqa: E402


def build(kind: str, d_model: int, n_layers: int, d_state: int) -> SSMLanguageModel:
    torch.manual_seed(0)
    if kind == "sashimi-s4d":
        return SSMLanguageModel(256, d_model=d_model // 2, n_layers=1, backbone="sashimi",
                                layer=dict(kind="s4d", d_state=d_state)).eval()
    size = "n_oscillators" if kind in ("linoss", "dlinoss") else "d_state"     # oscillators P, or real state size N
    return SSMLanguageModel(256, d_model=d_model, n_layers=n_layers, layer={"kind": kind, size: d_state}).eval()


def time_recurrent(model: SSMLanguageModel, B: int, L: int) -> float:
    prompt = torch.randint(0, 256, (B, 1))
    gen = torch.Generator().manual_seed(0)
    model.generate(prompt, 8, generator=gen)                                 # warm-up
    t0 = time.perf_counter()
    model.generate(prompt, L, generator=gen)
    return time.perf_counter() - t0


@torch.no_grad()
def time_conv_rerun(model: SSMLanguageModel, B: int, L: int, samples: int, exact: bool) -> float:
    seq = torch.randint(0, 256, (B, L))
    model(seq[:, :8])                                                        # warm-up
    if exact:
        t0 = time.perf_counter()
        for t in range(1, L + 1):
            logits = model(seq[:, :t])[:, -1]
            torch.multinomial(torch.softmax(logits, -1), 1)
        return time.perf_counter() - t0
    # midpoint rule over prefix lengths 1..L with `samples` bins
    width = L / samples
    total = 0.0
    for k in range(samples):
        t = max(1, min(L, int((k + 0.5) * width)))
        t0 = time.perf_counter()
        logits = model(seq[:, :t])[:, -1]
        torch.multinomial(torch.softmax(logits, -1), 1)
        total += (time.perf_counter() - t0) * width
    return total


@torch.no_grad()
def time_steps(model: SSMLanguageModel, B: int, n: int, repeats: int = 3) -> tuple:
    """Seconds for n backbone+head steps: eager ``backbone.step`` + ``decode``, and the ModelStepper."""
    x = torch.randn(B, model.d_model)
    state0 = model.backbone.initial_state(B)
    st = model.stepper(B)

    def eager() -> None:
        state = state0
        for _ in range(n):
            y, state = model.backbone.step(x, state)
            model.decode(y)

    def stepper() -> None:
        st.reset()
        for _ in range(n):
            st(x)

    best = []
    for fn in (eager, stepper):
        fn()                                                                 # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best.append(min(times))
    return tuple(best)


def time_generate(model: SSMLanguageModel, B: int, L: int, use_stepper: bool) -> float:
    prompt = torch.randint(0, 256, (B, 1))
    gen = torch.Generator().manual_seed(0)
    model.generate(prompt, 8, generator=gen, stepper=use_stepper)           # warm-up
    t0 = time.perf_counter()
    model.generate(prompt, L, generator=gen, stepper=use_stepper)
    return time.perf_counter() - t0


def model_step_floor(model: SSMLanguageModel, B: int) -> float:
    """Seconds of one model step at copy bandwidth: backbone state read + written, backbone and head weights read."""
    return step_floor(model.backbone.initial_state(B), [model.backbone, model.head])


FLOOR_NOTE = "floor: backbone state read + written and backbone + head weights read once per step, fp32 copy speed"


def stepper_table(kinds, args) -> None:
    print(f"# one recurrent step, eager vs stepper ({machine()}); H={args.d_model}, {args.n_layers} blocks, "
          f"N={args.d_state}; steps/s, best of 3 runs of {args.steps} steps; generate: tokens/s over "
          f"{args.lengths[0]}; {FLOOR_NOTE}; ours/floor: the stepper's time per step over the floor's")
    print(timing_line("wall", f"step/s: min of 3 runs of {args.steps} steps after 1 warm-up run; generate: one call of "
                      f"{args.lengths[0]} tokens after an 8-token warm-up call; floor median of 5"))
    print("| model | batch | eager step/s | stepper step/s | ratio | generate eager tok/s | generate stepper tok/s "
          "| ratio | floor step/s | ours/floor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        model = build(kind, args.d_model, args.n_layers, args.d_state)
        for B in args.batches:
            te, ts = time_steps(model, B, args.steps)
            L = args.lengths[0]
            ge, gs = time_generate(model, B, L, False), time_generate(model, B, L, True)
            floor = model_step_floor(model, B)
            print(f"| {kind} | {B} | {args.steps / te:,.0f} | {args.steps / ts:,.0f} | {te / ts:.2f}x "
                  f"| {B * L / ge:,.0f} | {B * L / gs:,.0f} | {ge / gs:.2f}x | {1 / floor:,.0f} "
                  f"| {ts / args.steps / floor:.1f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=positive_int, nargs="+", default=[256, 1024])
    ap.add_argument("--batches", type=positive_int, nargs="+", default=[1, 64])
    ap.add_argument("--layers", nargs="+", default=None, help="default: every available layer + sashimi-s4d")
    ap.add_argument("--d-model", type=positive_int, default=64)
    ap.add_argument("--n-layers", type=positive_int, default=4)
    ap.add_argument("--d-state", type=positive_int, default=64)
    ap.add_argument("--samples", type=positive_int, default=16)
    ap.add_argument("--exact", action="store_true", help="run the full conv re-run loop instead of estimating")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--steps", type=positive_int, default=200, help="steps per timing of the stepper table")
    ap.add_argument("--stepper-only", action="store_true", help="only the eager-vs-stepper table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kinds = args.layers or [k for k in ("s4d", "s4", "linoss") if k in available_layers()] + ["sashimi-s4d"]
    if args.stepper_only:
        stepper_table(kinds, args)
        return
    print(f"# generation speed ({machine()}); H={args.d_model}, {args.n_layers} blocks, N={args.d_state}, "
          f"conv re-run {'exact' if args.exact else f'estimated from {args.samples} prefix lengths'}; {FLOOR_NOTE}; "
          "ours/floor: recurrent time per token over the floor's")
    print(timing_line("wall", "recurrent: one generate call after an 8-token warm-up call; conv re-run: one call per "
                      + ("prefix length" if args.exact else f"sampled prefix length ({args.samples})")
                      + " after one warm-up call; floor median of 5"))
    print("| model | batch | L | recurrent tok/s | conv re-run tok/s | speed-up | floor tok/s | ours/floor |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        model = build(kind, args.d_model, args.n_layers, args.d_state)
        for B in args.batches:
            for L in args.lengths:
                rec = time_recurrent(model, B, L)
                conv = time_conv_rerun(model, B, L, args.samples, args.exact)
                floor = model_step_floor(model, B)
                print(f"| {kind} | {B} | {L} | {B * L / rec:,.0f} | {B * L / conv:,.0f} | {conv / rec:.1f}x "
                      f"| {B / floor:,.0f} | {rec / L / floor:.1f}x |", flush=True)
    print()
    stepper_table(kinds, args)


if __name__ == "__main__":
    run(main)
