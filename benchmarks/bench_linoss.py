"""LinOSS forward+backward on CPU: parallel scan vs sequential loop vs FFT conv (same run).

    python benchmarks/bench_linoss.py            # B=8, H=128, P=64, L=1024 and L=8192 (B=2)
    python benchmarks/bench_linoss.py --quick    # fewer repeats

Reports seconds per forward+backward (median of repeats) and, as a floor, the time to copy the
(B, L, P) complex state tensor once (memory bandwidth); every figure is also given as a ratio.
The loop is timed with a single repeat at L=8192 (it is the slow reference).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

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
    print(f"B={B} H={H} P={P} L={L}  (threads={torch.get_num_threads()})")
    print(f"  copy (B,L,P) complex64 state once : {floor * 1e3:9.2f} ms   (floor, 1x)")
    for name, t in (("parallel scan", t_scan), ("FFT conv", t_conv), ("sequential loop", t_loop)):
        print(f"  {name:<34}: {t * 1e3:9.2f} ms   ({t / floor:7.1f}x floor)")
    print(f"  loop / scan speed-up              : {t_loop / t_scan:9.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    r = 2 if args.quick else 5
    bench(8, 128, 64, 1024, repeats=r, loop_repeats=2 if args.quick else 3)
    bench(2, 128, 64, 8192, repeats=max(2, r // 2), loop_repeats=1)


if __name__ == "__main__":
    main()
