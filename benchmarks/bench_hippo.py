"""O(N) HiPPO-LegS update vs dense updates (thesis Lemma 4.6, App. D.3.2, Table 4.1; notes A2).

Per-step time of one bilinear LSI-LegS step ``x <- (I - bA)^{-1}((I + aA)x + g B u)``:

* ``fast``        -- O(N): cumsum + odd/even scan triangular solve (:func:`legs_step_fast`);
* ``dense LSI``   -- the same step with an explicit matvec and a dense triangular solve, O(N^2);
* ``dense matvec`` -- a single precomputed N x N matrix-vector product (what an LTI
  HiPPO step costs; a lower bound for any dense update).

Single thread (as in the thesis), batch 1, float64. Run:

    .venv/bin/python benchmarks/bench_hippo.py            # N = 64 .. 4096, < 1 min
"""

from __future__ import annotations

import argparse
import time

import torch
from common import copy_floor, machine, positive_int, run, timing_line

from statespaces.hippo import legs_step_dense, legs_step_fast, transition
from statespaces.hippo.legs_fast import legs_gbt_coefficients


def per_step(fn, min_time: float = 0.3, max_reps: int = 2000) -> float:
    fn()  # warm-up
    reps, t0 = 0, time.perf_counter()
    while reps < max_reps and (time.perf_counter() - t0) < min_time:
        fn()
        reps += 1
    return (time.perf_counter() - t0) / reps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--Ns", type=positive_int, nargs="+", default=[64, 256, 1024, 2048, 4096])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {machine()}; floor: one float64 copy of the state (N read, N written) per step")
    print(timing_line("wall", "mean per step over back-to-back calls for 0.3 s or 2000 calls, whichever comes first, "
                      "after 1 warm-up call; floor median of 5 copies"))
    print("| N | fast O(N) [us/step] | dense LSI [us/step] | dense matvec [us/step] | dense LSI / fast | matvec / fast "
          "| floor [us/step] | fast / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for N in args.Ns:
        A, B = transition("legs", N)
        x = torch.randn(1, N, dtype=torch.float64)
        u = torch.randn(1, dtype=torch.float64)
        a, b, g = legs_gbt_coefficients(100.0, 101.0, 0.5)
        M = torch.randn(N, N, dtype=torch.float64)
        t_fast = per_step(lambda: legs_step_fast(x, u, a, b, g))
        t_dense = per_step(lambda: legs_step_dense(x, u, a, b, g, A, B))
        t_mv = per_step(lambda: x @ M.T)
        floor = copy_floor(N, 1, dtype=torch.float64)
        print(f"| {N} | {t_fast * 1e6:.1f} | {t_dense * 1e6:.1f} | {t_mv * 1e6:.1f} | "
              f"{t_dense / t_fast:.1f}x | {t_mv / t_fast:.2f}x | {floor * 1e6:.2f} | {t_fast / floor:.1f}x |", flush=True)


if __name__ == "__main__":
    run(main)
