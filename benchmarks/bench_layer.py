"""Forward+backward time of one layer configuration on this machine: the A/B tool behind the closing notes' CPU
figures (run it at two commits, e.g. one of them in a ``git worktree``, and compare).

    OMP_NUM_THREADS=1 python benchmarks/bench_layer.py '{"kind": "s4"}'                       # causal S4
    OMP_NUM_THREADS=1 python benchmarks/bench_layer.py '{"kind": "s4", "bidirectional": true}'
    OMP_NUM_THREADS=1 python benchmarks/bench_layer.py '{"kind": "s4"}' --state --length 4096   # stateful
    OMP_NUM_THREADS=1 python benchmarks/bench_layer.py '{"kind": "dlinoss", "mode": "scan"}' --d-state 0

The layer is ``statespaces.layers.registry.make_layer(SPEC, H)`` with ``d_state`` N unless ``--d-state 0`` (the
layer's own default, e.g. P=64 oscillators for LinOSS/D-LinOSS). The loss is ``y.sum()`` (plus the real part of the
final state's sum with ``--state``, which feeds the layer its initial state as well). Prints the median and the
minimum of ``--repeat`` calls in process CPU time (robust on a shared machine) after one warm-up call, and the
fp32 copy floor of the (B, L, H) activations (x->y, dy->dx; ``common.layer_floor``, same clock) with median/floor;
there is no naive reference here (the A/B is between commits).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from common import layer_floor, machine, nonneg_int, positive_int, run, timeit

from statespaces.layers.config import config_class
from statespaces.layers.registry import make_layer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("spec", help='layer spec as JSON, e.g. \'{"kind": "s4", "bidirectional": true}\'')
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--length", type=positive_int, default=1024)
    p.add_argument("--d-model", type=positive_int, default=128)
    p.add_argument("--d-state", type=nonneg_int, default=64,
                   help="N for the kinds that take d_state (0: the layer's default; others ignore it)")
    p.add_argument("--state", action="store_true", help="stateful call: state= and return_state=True")
    p.add_argument("--repeat", type=positive_int, default=9)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    spec = json.loads(a.spec)
    if a.d_state and "d_state" in {f.name for f in dataclasses.fields(config_class(spec.get("kind", "s4d")))}:
        spec.setdefault("d_state", a.d_state)      # kinds without d_state (LinOSS: n_oscillators) keep their own
    torch.manual_seed(a.seed)
    layer = make_layer(spec, a.d_model)
    x = torch.randn(a.batch, a.length, a.d_model, requires_grad=True)
    state = layer.initial_state(a.batch).normal_() if a.state else None

    def fwd_bwd() -> None:
        if state is None:
            layer(x).sum().backward()
        else:
            y, s = layer(x, state=state, return_state=True)
            (y.sum() + s.real.sum()).backward()

    fwd_bwd()                                                                  # warm-up
    times = sorted(timeit(fwd_bwd, repeat=1, warmup=0, clock=time.process_time) for _ in range(a.repeat))
    floor = layer_floor(x.numel(), grad=True, clock=time.process_time, repeat=max(5, a.repeat))
    print(f"{layer.__class__.__name__} {json.dumps(spec)} B={a.batch} L={a.length} H={a.d_model}"
          f"{' stateful' if a.state else ''}: fwd+bwd median {times[len(times) // 2] * 1e3:.1f} ms, "
          f"min {times[0] * 1e3:.1f} ms; floor {floor * 1e3:.3f} ms (fp32 copy x->y, dy->dx of (B, L, H)), "
          f"median/floor {times[len(times) // 2] / floor:.1f}x ({machine()}, process CPU time, {a.repeat} calls)")


if __name__ == "__main__":
    run(main)
