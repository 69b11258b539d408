"""Accuracy and cost of the explicit-operator view ``modes()`` (issue #19 item 1d, docs/modes.md).

    python benchmarks/bench_modes.py              # S4 LegS / Rand for N = 8 .. 128 (under a minute)
    python benchmarks/bench_modes.py --N 8 32

Per row, float64 throughout, kernels of 512 lags, H = 4:
relative error ``||K_modes - K|| / ||K||`` of the kernel assembled from ``S4.modes()`` against the
layer's own Algorithm-1 kernel, the same for ``S4D.from_modes(s4.modes())``, the largest
eigenbasis condition number (``Modes.cond``; HiPPO-LegS is exponentially ill-conditioned, Lemma 6.6)
and the time of one ``modes()`` call. S4D and LinOSS modes are exact to rounding (tests/test_modes.py).
"""
from __future__ import annotations

import argparse
import time

import torch

from statespaces.layers import S4, S4D


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--L", type=int, default=512)
    args = ap.parse_args()
    print(f"{'init':6s} {'N':>4s} {'cond(V)':>9s} {'modes err':>10s} {'S4D err':>9s} {'modes() ms':>10s}")
    for init in ("legs", "rand"):
        for N in args.N:
            layer = S4(4, N, init=init, seed=0).double()
            with torch.no_grad():
                t0 = time.perf_counter()
                m = layer.modes()
                ms = 1e3 * (time.perf_counter() - t0)
                K = layer.kernel(args.L)
                e_modes = rel(m.kernel(args.L), K)
                e_s4d = rel(S4D.from_modes(m, dtype=torch.float64).kernel(args.L), K)
            print(f"{init:6s} {N:4d} {float(m.cond.max()):9.1e} {e_modes:10.1e} {e_s4d:9.1e} {ms:10.1f}")


if __name__ == "__main__":
    main()
