"""Accuracy and cost of the explicit-operator view ``modes()`` (issue #19 item 1d, docs/modes.md).

    python benchmarks/bench_modes.py                       # S4 LegS/LegT/LagT/FouT/Rand, N = 8 .. 128 (~ a minute)
    python benchmarks/bench_modes.py --N 8 32 --init legs
    python benchmarks/bench_modes.py --built float32       # layers built in float32, then cast (hides Lemma 6.6)

Per row, H = 4, kernels of 512 lags, all arithmetic in float64 on layers **built** in float64 (the HiPPO
inits exact; ``--built float32`` rounds them to float32 first, whose perturbed matrices are far better
conditioned, so that column measures a different layer): the relative error
``||K_modes - K|| / ||K||`` of the kernel assembled from ``S4.modes()`` against the layer's own
Algorithm-1 kernel, the same for ``S4D.from_modes(s4.modes())``, the largest ``Modes.kernel_error``
(the check ``modes()`` runs itself, per channel over 256 lags; above 1e-4 it warns, counted in ``warned``),
the largest eigenbasis condition number (``Modes.cond``; Lemma 6.6) and the time of one ``modes()``
call (check included). S4D and LinOSS modes are exact to rounding (tests/test_modes.py).
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch
from common import positive_int, run, timing_line

from statespaces.layers import S4, S4D
from statespaces.layers.modes import ModesAccuracyWarning


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def build(init: str, N: int, dtype: torch.dtype) -> S4:
    """``S4(4, N, init, seed=0)`` built with ``dtype`` as the default dtype, returned in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return S4(4, N, init=init, seed=0).double()
    finally:
        torch.set_default_dtype(old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=positive_int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--init", nargs="+", default=["legs", "legt", "lagt", "fout", "rand"])
    ap.add_argument("--L", type=positive_int, default=512)
    ap.add_argument("--built", choices=["float64", "float32"], default="float64",
                    help="dtype the layers are built in (then cast to float64)")
    args = ap.parse_args()
    dtype = torch.float64 if args.built == "float64" else torch.float32
    build("rand", 8, dtype).modes()                                   # warm-up: the first call loads LAPACK
    print(f"layers built in {args.built}; errors relative, float64 arithmetic, {args.L} lags")
    print(timing_line("wall", "modes() ms: one call per row (its accuracy check included), after one warm-up "
                      "modes() call on another layer"))
    print(f"{'init':6s} {'N':>4s} {'cond(V)':>9s} {'modes err':>10s} {'S4D err':>9s} {'kernel_error':>12s} "
          f"{'warned':>6s} {'modes() ms':>10s}")
    for init in args.init:
        for N in args.N:
            layer = build(init, N, dtype)
            with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ModesAccuracyWarning)
                t0 = time.perf_counter()
                m = layer.modes()
                ms = 1e3 * (time.perf_counter() - t0)
                K = layer.kernel(args.L)
                e_modes = rel(m.kernel(args.L), K)
                e_s4d = rel(S4D.from_modes(m, dtype=torch.float64).kernel(args.L), K)
            warned = any(issubclass(w.category, ModesAccuracyWarning) for w in caught)
            assert m.cond is not None and m.kernel_error is not None
            print(f"{init:6s} {N:4d} {float(m.cond.max()):9.1e} {e_modes:10.1e} {e_s4d:9.1e} "
                  f"{float(m.kernel_error.max()):12.1e} {'yes' if warned else 'no':>6s} {ms:10.1f}")


if __name__ == "__main__":
    run(main)
