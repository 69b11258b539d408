"""Why does LinOSS trail S4D on ACSF1? Its init's time scales, its state size, damping, lr (issue #18 item 6, claim L1)

Claim L1 (``statespaces reproduce L1``) trains LinOSS-IM/IMEX and S4D-LegS on ACSF1 (100 series of 1460 steps)
with one small recipe; LinOSS reaches 36-38% against S4D's 56%. The arms keep L1's model, recipe and data
(``_l1_run``) and change one thing of LinOSS each, at several seeds (init and batch order; S4D-LegS at the same
seeds):

* time scales: the default init draws ``dt`` in [0.5, 0.73] and ``A ~ U[0, 1]``, so the oscillators' periods
  ``2 pi / (dt sqrt(A))`` lie between about 9 steps and a few hundred for all but the few with A near 0, while
  S4D's log-uniform ``dt`` in [1e-3, 1e-1] spreads its modes over 10 to 1,000+ steps: LinOSS with S4D's dt range
  (with ``a_max`` 1 or 100) and with one wide range;
* a floor on the initial stiffness (``A ~ U[a, 1]``);
* the state size: L1 gives LinOSS P = 32 oscillators shared by all channels, S4D N = 32 per channel;
* learned damping (D-LinOSS) and S4D's learning rate.

Test accuracy only (the arms choose nothing; L1 has no validation split).

    PYTHONPATH=src OMP_NUM_THREADS=1 python experiments/linoss_timescales.py --seeds 0 1 2 [--arms a,b]

Prints a JSON line per run and a markdown table (mean and per-seed accuracy per arm) at the end.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

from torch import nn

from statespaces.layers.linoss import LinOSS
from statespaces.reproduce.claims_linoss import _l1_run

#: arm -> (layer kind, layer kwargs, lr): L1's three models and LinOSS with other time-scale inits.
ARMS = {
    "s4d-legs": ("s4d", {}, 1e-2),
    "im": ("linoss", {"discretization": "IM", "mode": "conv"}, 3e-3),
    "imex": ("linoss", {"discretization": "IMEX", "mode": "conv"}, 3e-3),
    # dt log-uniform in [1e-3, 1e-1] (S4D's range): slow modes, per-step angles <= 0.1 sqrt(a_max)
    "im-dt-s4d": ("linoss", {"discretization": "IM", "mode": "conv", "dt_min": 1e-3, "dt_max": 1e-1}, 3e-3),
    # the same with A ~ U[0, 100]: per-step angles up to ~1, as the default init's fastest
    "im-dt-s4d-a100": ("linoss", {"discretization": "IM", "mode": "conv", "dt_min": 1e-3, "dt_max": 1e-1,
                                  "a_max": 100.0}, 3e-3),
    "imex-dt-s4d-a100": ("linoss", {"discretization": "IMEX", "mode": "conv", "dt_min": 1e-3, "dt_max": 1e-1,
                                    "a_max": 100.0}, 3e-3),
    # one wide log-uniform range
    "im-dt-wide": ("linoss", {"discretization": "IM", "mode": "conv", "dt_min": 1e-3, "dt_max": 0.9}, 3e-3),
    # state size: L1 gives LinOSS P = 32 oscillators shared by the H = 32 channels (64 real state dimensions),
    # S4D N = 32 per channel (H N = 1024); these give LinOSS 256 and 512 oscillators (512 and 1024 dimensions)
    "im-p256": ("linoss", {"discretization": "IM", "mode": "conv", "n_oscillators": 256}, 3e-3),
    "im-p512": ("linoss", {"discretization": "IM", "mode": "conv", "n_oscillators": 512}, 3e-3),
    "imex-p512": ("linoss", {"discretization": "IMEX", "mode": "conv", "n_oscillators": 512}, 3e-3),
    # learned damping (D-LinOSS: each oscillator's decay is a parameter) and the learning rate (S4D's 1e-2)
    "dlinoss": ("dlinoss", {"mode": "conv"}, 3e-3),
    "im-lr1e-2": ("linoss", {"discretization": "IM", "mode": "conv"}, 1e-2),
    # a floor on the initial stiffness, A ~ U[a, 1] (PREPARE below): an oscillator's response to a constant input
    # grows to 1/A, so the few near A = 0 (double integrators over the 1460 steps) dominate the layer's output
    "im-amin0.1": ("linoss", {"discretization": "IM", "mode": "conv"}, 3e-3),
    "im-amin0.3": ("linoss", {"discretization": "IM", "mode": "conv"}, 3e-3),
    # the floor with more oscillators: without it, P = 256 / 512 stalled at chance (init output rms 3-22)
    "im-p128-amin0.1": ("linoss", {"discretization": "IM", "mode": "conv", "n_oscillators": 128}, 3e-3),
    "im-p256-amin0.1": ("linoss", {"discretization": "IM", "mode": "conv", "n_oscillators": 256}, 3e-3),
    # and with the lr scaled down by P / 32 (Adam moves every entry of B and C by about lr, and the output sums P
    # oscillators, so the size of a step in the output grows with P)
    "im-p256-lr3.75e-4": ("linoss", {"discretization": "IM", "mode": "conv", "n_oscillators": 256}, 3e-3 / 8),
    "im-p256-amin0.1-lr3.75e-4": ("linoss", {"discretization": "IM", "mode": "conv", "n_oscillators": 256},
                                  3e-3 / 8),
}


def _stiffness_floor(a: float) -> Callable[[nn.Module], None]:
    def prepare(model: nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, LinOSS):
                m.A_hat.copy_(a + (1 - a) * m.A_hat)        # U[0, 1] -> U[a, 1] (relu: A_hat is A)
    return prepare


#: arm -> an edit of the built model before training (the arms above without one train as built).
PREPARE = {"im-amin0.1": _stiffness_floor(0.1), "im-amin0.3": _stiffness_floor(0.3),
           "im-p128-amin0.1": _stiffness_floor(0.1), "im-p256-amin0.1": _stiffness_floor(0.1),
           "im-p256-amin0.1-lr3.75e-4": _stiffness_floor(0.1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problem", default="ucr:ACSF1")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
    args = ap.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    acc = {a: [] for a in arms}
    for seed in args.seeds:
        for arm in arms:
            kind, kw, lr = ARMS[arm]
            t0 = time.time()
            r = _l1_run(args.problem, arm, kind, kw, lr, quick=False, seed=seed, prepare=PREPARE.get(arm))
            acc[arm].append(100 * r["acc"])
            print(json.dumps({"arm": arm, "seed": seed, **r, "seconds": round(time.time() - t0, 1)}), flush=True)
    print(f"\n| arm ({args.problem}, L1's recipe) | test (%) per seed {tuple(args.seeds)} | mean (%) |")
    print("|---|---|---:|")
    for arm in arms:
        print(f"| {arm} | {', '.join(f'{a:.0f}' for a in acc[arm])} | {statistics.mean(acc[arm]):.1f} |")


if __name__ == "__main__":
    main()
