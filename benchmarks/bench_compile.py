"""Eager vs ``torch.compile`` (fullgraph) on CPU for each layer: forward+backward and inference.

    PYTHONPATH=src python benchmarks/bench_compile.py [--threads 1] [--B 8 --H 128 --L 1024] [--layers s4d linoss-im]

Times are CPU time (``time.process_time``) per call, median of ``--repeat`` calls after two warm-up calls
(compilation excluded), so they do not depend on other load when ``--threads 1``. Each pass also has the fp32
copy floor of the (B, L, H) activations by the same clock (``common.layer_floor``: x->y forward; fwd+bwd two
passes, where x needs no gradient here, so the second pass stands for the backward's reads of dy and x) and
``best/floor``, the faster of eager and compiled over it. The last column is the compilation: the wall-clock
time of the compiled module's first call, fwd+bwd and then fwd under ``no_grad`` (which compiles again), each
including that call's own run. ``--layers`` times a subset (compiling is slow on a CPU).
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from common import layer_floor, machine, positive_int, run, timing_line

from statespaces import S4, S4D, LinOSS

#: --layers name -> (row label, constructor(H, N))
LAYERS = {
    "s4d": ("S4D", lambda H, N: S4D(H, N)),
    "s4": ("S4", lambda H, N: S4(H, N)),
    "linoss-imex": ("LinOSS-IMEX (scan)", lambda H, N: LinOSS(H, N, discretization="IMEX", mode="scan")),
    "linoss-im": ("LinOSS-IM (scan)", lambda H, N: LinOSS(H, N, discretization="IM", mode="scan")),
}


def first_call(fn) -> float:
    """Wall-clock seconds of ``fn()`` once: for a compiled module's first call, the compilation (and that call)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_time(fn, repeat: int) -> float:
    fn()
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--B", type=positive_int, default=8)
    ap.add_argument("--H", type=positive_int, default=128)
    ap.add_argument("--N", type=positive_int, default=64)
    ap.add_argument("--L", type=positive_int, default=1024)
    ap.add_argument("--repeat", type=positive_int, default=5)
    ap.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS), help="default: all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    x = torch.randn(args.B, args.L, args.H)
    layers = {LAYERS[k][0]: LAYERS[k][1](args.H, args.N) for k in args.layers}
    floor_train = layer_floor(x.numel(), grad=True, clock=time.process_time, repeat=max(5, args.repeat))
    floor_infer = layer_floor(x.numel(), grad=False, clock=time.process_time, repeat=max(5, args.repeat))
    print(f"CPU time per call, B={args.B} H={args.H} N={args.N} L={args.L}, {machine()}; floor: fp32 copy of the "
          "(B, L, H) activations, fwd+bwd 2 passes, fwd 1")
    print(timing_line("cpu", f"median of {args.repeat} calls after 2 warm-up calls; floor median of "
                      f"{max(5, args.repeat)}; compile: wall clock of the compiled module's first call"))
    print("| layer | fwd+bwd eager | fwd+bwd compiled | ratio | floor | best/floor | fwd eager | fwd compiled | ratio "
          "| floor | best/floor | compile s (1st call: fwd+bwd / fwd) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, layer in layers.items():
        comp = torch.compile(layer, fullgraph=True)

        def train(m):
            return lambda: m(x).square().mean().backward()

        def infer(m):
            def f():
                with torch.no_grad():
                    m(x)
            return f

        c_train = first_call(train(comp))
        c_infer = first_call(infer(comp))
        te, tc = cpu_time(train(layer), args.repeat), cpu_time(train(comp), args.repeat)
        ie, ic = cpu_time(infer(layer), args.repeat), cpu_time(infer(comp), args.repeat)
        print(f"| {name} | {te * 1e3:.1f} ms | {tc * 1e3:.1f} ms | {te / tc:.2f}x | {floor_train * 1e3:.3f} ms | "
              f"{min(te, tc) / floor_train:.0f}x | {ie * 1e3:.1f} ms | {ic * 1e3:.1f} ms | {ie / ic:.2f}x | "
              f"{floor_infer * 1e3:.3f} ms | {min(ie, ic) / floor_infer:.0f}x | {c_train:.1f} / {c_infer:.1f} |")


if __name__ == "__main__":
    run(main)
