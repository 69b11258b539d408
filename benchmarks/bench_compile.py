"""Eager vs ``torch.compile`` (fullgraph) on CPU for each layer: forward+backward and inference.

    PYTHONPATH=src python benchmarks/bench_compile.py [--threads 1] [--B 8 --H 128 --L 1024]

Times are CPU time (``time.process_time``) per call, median of ``--repeat`` calls after warm-up
(compilation excluded), so they do not depend on other load when ``--threads 1``.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from statespaces import S4, S4D, LinOSS


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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--H", type=int, default=128)
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--L", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    x = torch.randn(args.B, args.L, args.H)
    layers = {
        "S4D": S4D(args.H, args.N),
        "S4": S4(args.H, args.N),
        "LinOSS-IMEX (scan)": LinOSS(args.H, args.N, discretization="IMEX", mode="scan"),
        "LinOSS-IM (scan)": LinOSS(args.H, args.N, discretization="IM", mode="scan"),
    }
    print(f"CPU time per call, B={args.B} H={args.H} N={args.N} L={args.L}, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    print("| layer | fwd+bwd eager | fwd+bwd compiled | ratio | fwd eager | fwd compiled | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, layer in layers.items():
        comp = torch.compile(layer, fullgraph=True)

        def train(m):
            return lambda: m(x).square().mean().backward()

        def infer(m):
            def f():
                with torch.no_grad():
                    m(x)
            return f

        te, tc = cpu_time(train(layer), args.repeat), cpu_time(train(comp), args.repeat)
        ie, ic = cpu_time(infer(layer), args.repeat), cpu_time(infer(comp), args.repeat)
        print(f"| {name} | {te * 1e3:.1f} ms | {tc * 1e3:.1f} ms | {te / tc:.2f}x | {ie * 1e3:.1f} ms | "
              f"{ic * 1e3:.1f} ms | {ie / ic:.2f}x |")


if __name__ == "__main__":
    main()
