"""Reproduce the thesis' HiPPO reconstruction figures and tables (§4.4.1-4.4.3, Fig. 4.3/4.4).

Runs ``experiments/hippo_reconstruction.py`` (online reconstruction of the §4.4.2 function by each
measure and state size, the band-limited noise task of Table 4.1, and LegS' timescale robustness)
and then draws the LegS-vs-LegT picture of thesis Figure 4.3 for one state size.

    python examples/hippo_figures.py                   # writes runs/examples/hippo/
    python examples/hippo_figures.py --quick           # smaller state sizes, no noise task tuning

About 15-60 s on two CPU cores. The measured numbers are discussed in docs/hippo.md.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from statespaces.hippo import HiPPO
from statespaces.hippo.plots import plot_reconstruction
from statespaces.data.signals import benchmark_function

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/examples/hippo")
    ap.add_argument("--quick", action="store_true", help="state sizes 16 and 64, noise task with N = 64")
    args = ap.parse_args()
    out = Path(args.out)

    cmd = [sys.executable, str(ROOT / "experiments" / "hippo_reconstruction.py"), "--out", str(out)]
    if args.quick:
        cmd += ["--Ns", "16", "64", "--noise-N", "64"]
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)

    # Figure 4.3 in miniature: LegS (whole history) against LegT (window = whole sequence) at N = 32
    L, T, N = 1000, 100.0, 32
    dt = T / L
    x = (torch.arange(L, dtype=torch.float64) + 0.5) * dt
    f = benchmark_function(x)[None]
    legs = HiPPO(N, "legs", fast=False)
    legt = HiPPO(N, "legt", dt=dt, theta=T)
    recs = {
        f"HiPPO-LegS, N={N}": legs.reconstruct(legs(f, return_history=False)[0], length=L),
        f"HiPPO-LegT (theta = T), N={N}": legt.reconstruct(legt(f, return_history=False)[0], length=L),
    }
    plot_reconstruction(x, f[0], recs, title="online reconstruction from the final state (thesis §4.4.2)",
                        path=out / "legs_vs_legt.png")
    print(f"\nwrote {out / 'hippo_reconstruction.md'} and:")
    for p in sorted(out.glob("*.png")):
        print("  ", p)


if __name__ == "__main__":
    main()
