"""Shared SSMs across channels (``n_ssm``, thesis §7.2.2): parameter count and fwd+bwd time, in one run.

    OMP_NUM_THREADS=1 PYTHONPATH=../src python bench_n_ssm.py        # S4D and S4, B=8, H=128, N=64, L=1024

For each layer and ``n_ssm`` in (H, H/8, 1): trainable parameters (total and the (A, B) part) and the
median fwd+bwd time, with the ratio to the untied layer (``n_ssm = H``) measured alternating in the
same process (``--clock cpu``: process CPU time, robust when other jobs share the machine), and the ratio to the
fp32 copy floor of the (B, L, H) activations (x->y, dy->dx; ``common.layer_floor``, same clock). The tied
(A, B) are repeated to H channels before the kernel (the per-channel dt keeps the H kernels distinct),
so the kernel work is unchanged: the effect is on parameters and their gradient, not on FLOPs.
"""
from __future__ import annotations

import argparse
import time

import torch
from common import LAYER_FLOOR, layer_floor, machine, positive_int, run, timeit, timing_line

from statespaces import S4, S4D


def fwd_bwd(layer, x):
    """One forward+backward, the input's gradient included (x requires grad): the dy -> dx pass the floor counts."""
    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        y = layer(x)
        y.backward(torch.ones_like(y))
    return step


def n_params(layer, names=None) -> int:
    return sum(p.numel() for n, p in layer.named_parameters() if names is None or n in names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--d-model", type=positive_int, default=128)
    p.add_argument("--d-state", type=positive_int, default=64)
    p.add_argument("--length", type=positive_int, default=1024)
    p.add_argument("--repeat", type=positive_int, default=5)
    p.add_argument("--rounds", type=positive_int, default=3)
    p.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    args = p.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    H = args.d_model
    groups = list(dict.fromkeys([H, max(1, H // 8), 1]))               # distinct (H < 8: H/8 = 1)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.length, H, requires_grad=True)
    print(f"n_ssm fwd+bwd, B={args.batch} H={H} N={args.d_state} L={args.length}; {machine()}; {args.clock} clock")
    floor = layer_floor(x.numel(), grad=True, clock=clock, repeat=args.repeat)
    print(f"{LAYER_FLOOR}; fwd+bwd rows")
    print(timing_line(args.clock, f"min over {args.rounds} rounds of the median of {args.repeat} calls after 1 warm-up, "
                      f"n_ssm values alternating; floor median of {args.repeat}"))
    print(f"{'layer':>5} {'n_ssm':>6} {'params':>8} {'(A,B) params':>13} {'ms':>8} {'t/t(n_ssm=H)':>12} "
          f"{'floor ms':>9} "
          f"{'ours/floor':>11}")
    shared = {"S4D": ("A_real", "A_imag", "B"), "S4": ("Lambda_real", "Lambda_imag", "P", "B")}
    for name, cls in (("S4D", S4D), ("S4", S4)):
        layers = {g: cls(H, args.d_state, n_ssm=g, seed=0) for g in groups}
        best = {g: float("inf") for g in groups}
        for _ in range(args.rounds):                                    # alternate: min over rounds of medians
            for g in groups:
                best[g] = min(best[g], timeit(fwd_bwd(layers[g], x), repeat=args.repeat, clock=clock))
        for g in groups:
            print(f"{name:>5} {g:>6} {n_params(layers[g]):>8} {n_params(layers[g], shared[name]):>13} "
                  f"{1e3 * best[g]:>8.1f} {best[g] / best[H]:>12.2f} {1e3 * floor:>9.3f} {best[g] / floor:>10.1f}x")


if __name__ == "__main__":
    run(main)
