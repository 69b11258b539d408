"""LinOSS forward+backward on CPU: parallel scan vs sequential loop vs FFT conv (same run).

    python benchmarks/bench_linoss.py            # B=8, H=128, P=64, L=1024 and L=8192 (B=2)
    python benchmarks/bench_linoss.py --quick    # fewer repeats
    python benchmarks/bench_linoss.py --shapes 2,256    # other B,L pairs (H = 128, P = 64)

Reports seconds per forward+backward (median of repeats) and, as a floor, the time to copy the
(B, L, P) complex state tensor once (memory bandwidth); every figure is also given as a ratio.
The loop is timed with a single repeat after the first shape (it is the slow reference).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import int_tuple, machine, run, timing_line

from statespaces.layers.linoss import LinOSS


def _time(fn, repeats: int) -> float:
    fn()                                                     # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench(B: int, H: int, P: int, L: int, repeats: int, loop_repeats: int) -> None:
    torch.manual_seed(0)
    layer = LinOSS(H, P, discretization="IM", seed=0)
    x = torch.randn(B, L, H, requires_grad=True)

    def fwd_bwd(mode):
        def run():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x, mode=mode).square().mean().backward()
        return run

    state = torch.randn(B, L, P, dtype=torch.complex64)
    dst = torch.empty_like(state)
    floor = _time(lambda: dst.copy_(state), 20)             # preallocated: pure memory traffic
    t_scan = _time(fwd_bwd("scan"), repeats)
    t_conv = _time(fwd_bwd("conv"), repeats)
    t_loop = _time(fwd_bwd("loop"), loop_repeats)
    print(f"B={B} H={H} P={P} L={L}; {machine()}")
    print(f"  copy (B,L,P) complex64 state once : {floor * 1e3:9.4f} ms   (floor, 1x)")
    for name, t in (("parallel scan", t_scan), ("FFT conv", t_conv), ("sequential loop", t_loop)):
        print(f"  {name:<34}: {t * 1e3:9.4f} ms   ({t / floor:7.1f}x floor)")
    print(f"  loop / scan speed-up              : {t_loop / t_scan:9.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed calls (the same shapes)")
    ap.add_argument("--shapes", nargs="+", type=int_tuple("B,L"), default=[(8, 1024), (2, 8192)],
                    help="B,L pairs (H = 128, P = 64)")
    args = ap.parse_args()
    r = 2 if args.quick else 5
    loops0 = 2 if args.quick else 3
    print(timing_line("wall", f"median of the timed calls after 1 warm-up: scan and conv {r} calls on the first shape, "
                      f"{max(2, r // 2)} after; loop {loops0} on the first shape, 1 after; floor median of 20"))
    for i, (B, L) in enumerate(args.shapes):
        first = i == 0
        loops = loops0 if first else 1
        bench(B, 128, 64, L, repeats=r if first else max(2, r // 2), loop_repeats=loops)


if __name__ == "__main__":
    run(main)
