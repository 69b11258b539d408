"""S4 (DPLR) layer: forward+backward time and peak memory of its kernel routes, against a naive reference.

Each configuration runs in its own subprocess so that its peak resident memory (ru_maxrss) is its own.
Three routes of the same layer, checked to give the same output:

* ``power``: what a stateless S4 call takes on the CPU (:func:`statespaces.kernels.chunked_conv.prefer_power_kernel`:
  the kernel from dense powers of dA);
* ``chunked``: Algorithm 1 with the blocked Cauchy kernel (``cauchy_backend="chunked"``, the route on CUDA), forced
  here on the CPU by switching the power route off;
* ``naive``: Algorithm 1 with ``cauchy_backend="naive"``: the (H, (1+r)^2, L/2+1, N) Cauchy products materialized
  and kept by autograd (the "materialized Cauchy matrix" baseline), likewise forced.

Times are milliseconds per forward+backward, wall clock (``time.perf_counter``), the median of the timed calls
after one warm-up call (3 timed calls for ``--quick``, ``--shapes`` and L = 1024; 1 for the default L = 8192). Each
row also has the fp32 copy floor of the (B, L, H) activations (``common.layer_floor``: x->y and dy->dx, by the same
wall clock in the parent process, median of 5) and ``power/floor``, the CPU's own route over it.

The three ``GiB`` columns are the peak resident memory (``ru_maxrss``) of each route's child process: the Python
interpreter, torch and the layer included, not the route's own allocations alone (about 0.24 GiB at a tiny shape;
the memory run also prints the baseline after building its layer and input).
The memory run (default only, not with ``--quick`` or ``--shapes``) is one fwd+bwd call of the power route at
B=1, H=256, N=64, L=65536.

Before 2026-12-06 the script compared ``chunked`` with ``naive`` without forcing Algorithm 1, so on the CPU both
columns ran the power route (ratio ~1).

    python benchmarks/bench_s4.py            # all: B=8,H=128,N=64, L=1024 and 8192; B=1,H=256,L=65536
    python benchmarks/bench_s4.py --quick    # L=1024 only
    python benchmarks/bench_s4.py --shapes 1,8,8,64    # these B,H,N,L only, 3 timed calls each (no memory run)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from common import int_tuple, machine, run, timing_line


def run_case(B: int, H: int, N: int, L: int, backend: str, repeat: int) -> dict:
    import torch

    from statespaces.layers import s4 as s4_module
    from statespaces.layers.s4 import S4

    if backend != "power":        # Algorithm 1 (the Cauchy route) on the CPU too
        s4_module.prefer_power_kernel = lambda u: False
    torch.manual_seed(0)
    layer = S4(H, N, init="legs", cauchy_backend="naive" if backend == "naive" else "chunked", seed=0)
    x = torch.randn(B, L, H)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    times = []
    for _ in range(repeat + 1):
        layer.zero_grad()
        t0 = time.perf_counter()
        y = layer(x)
        y.square().mean().backward()
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:]) if repeat > 0 else times
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with torch.no_grad():
        check = float(layer(x[:1, : min(L, 2048)]).double().abs().sum())
    return {"B": B, "H": H, "N": N, "L": L, "backend": backend, "time_s": times[len(times) // 2],
            "peak_rss_gib": peak, "baseline_rss_gib": base, "check": check}


def spawn(B, H, N, L, backend, repeat) -> dict:
    cmd = [sys.executable, __file__, "--case", f"{B},{H},{N},{L},{backend},{repeat}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if out.returncode != 0:
        return {"B": B, "H": H, "N": N, "L": L, "backend": backend, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n\n")[0])
    ap.add_argument("--case", help=argparse.SUPPRESS)       # internal: one measurement in a child process
    ap.add_argument("--quick", action="store_true", help="the L = 1024 shape only")
    ap.add_argument("--shapes", nargs="+", type=int_tuple("B,H,N,L"),
                    help="B,H,N,L configurations (3 timed calls each) instead of the defaults (no memory run)")
    args = ap.parse_args()
    if args.case:
        B, H, N, L, backend, repeat = args.case.split(",")
        print(json.dumps(run_case(int(B), int(H), int(N), int(L), backend, int(repeat))))
        return
    from common import LAYER_FLOOR, layer_floor

    print(f"# S4 fwd+bwd, {machine()}, fp32, init=legs, rank 1; "
          f"{LAYER_FLOOR}")
    configs = [(8, 128, 64, 1024, 3)] if args.quick else [(8, 128, 64, 1024, 3), (8, 128, 64, 8192, 1)]
    if args.shapes:
        configs = [(*shape, 3) for shape in args.shapes]
    print(timing_line("wall", "median of the timed calls after 1 warm-up, each route in its own process "
                      f"({', '.join(f'L={c[3]}: {c[4]}' for c in configs)} timed calls); floor median of 5"))
    print(f"{'B':>3} {'H':>4} {'N':>3} {'L':>6} {'power ms':>9} {'chunked ms':>11} {'naive ms':>9} {'naive/chunked':>14} "
          f"{'naive/power':>12} {'floor ms':>9} {'power/floor':>12} {'power GiB':>10} {'chunked GiB':>12} "
          f"{'naive GiB':>10}  (GiB: peak RSS of each route's process, interpreter and torch included)")
    for B, H, N, L, rep in configs:
        runs = {b: spawn(B, H, N, L, b, rep) for b in ("power", "chunked", "naive")}
        if any("error" in r for r in runs.values()):
            print("error", runs)
            continue
        a, c, b = runs["power"], runs["chunked"], runs["naive"]
        floor = layer_floor(B * L * H, grad=True)
        for r in (a, c):
            assert abs(r["check"] - b["check"]) <= 1e-4 * abs(b["check"]), (r, b)
        print(f"{B:>3} {H:>4} {N:>3} {L:>6} {1e3 * a['time_s']:>9.1f} {1e3 * c['time_s']:>11.1f} {1e3 * b['time_s']:>9.1f} "
              f"{b['time_s'] / c['time_s']:>13.2f}x {b['time_s'] / a['time_s']:>11.2f}x {1e3 * floor:>9.3f} "
              f"{a['time_s'] / floor:>11.0f}x "
              f"{a['peak_rss_gib']:>10.2f} {c['peak_rss_gib']:>12.2f} {b['peak_rss_gib']:>10.2f}")
    if not (args.quick or args.shapes):
        m = spawn(1, 256, 64, 65536, "power", 0)
        print(f"memory run B=1 H=256 N=64 L=65536 fwd+bwd: peak RSS {m.get('peak_rss_gib', float('nan')):.2f} GiB "
              f"(baseline after setup {m.get('baseline_rss_gib', float('nan')):.2f} GiB), "
              f"time {1e3 * m.get('time_s', float('nan')):.0f} ms (one call)  {m.get('error', '')}")


if __name__ == "__main__":
    run(main)
