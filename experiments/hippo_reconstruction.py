"""HiPPO online reconstruction experiments (thesis §4.4.1-4.4.3, App. D.4; notes §11.1 A1/A3).

1. §4.4.2 function ``f(x) = 1/4 sin x + 1/2 sin(x/3) + sin(x/7)`` on [0, 100] (L = 1000):
   reconstruction MSE over the whole history per measure and N; LegT window
   sensitivity (theta 0.5% too small / too large); LegS discretization rules.
2. §4.4.1 band-limited white noise (1 Hz, rms 0.5, 100 s of signal) with N = 256:
   LegS vs LegT/LMU (window = whole sequence). The thesis uses dt = 1e-4 (L = 1e6);
   LegS is step-size free, so dt = 1e-2 (L = 1e4) is the same 100-s task up to
   discretization error (``--noise-dt`` to change).
3. §4.4.3 timescale robustness of LegS: the same function sampled at 250..4000 points
   gives (nearly) the same final coefficients; scaling all timestamps gives exactly
   the same coefficients.

Writes ``hippo_reconstruction.md`` and PNGs to ``--out`` (default ``runs/hippo``).
Runs in well under a minute on 2 CPU cores:

    .venv/bin/python experiments/hippo_reconstruction.py --out runs/hippo
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from statespaces.hippo import HiPPO
from statespaces.hippo.plots import plot_basis, plot_reconstruction
from statespaces.data.signals import bandlimited_noise, benchmark_function

F64 = torch.float64


def mse(a, b) -> float:
    return float(((a - b) ** 2).mean())


def run_memory(measure: str, N: int, u: torch.Tensor, dt: float, theta: float | None = None, **kw):
    """Run one HiPPO memory over u (1, L) and reconstruct the whole history."""
    L = u.shape[-1]
    if measure in ("legs", "chebyshev") and kw.get("mode", "lsi") == "lsi":
        m = HiPPO(N, measure, mode="lsi", **{k: v for k, v in kw.items() if k != "mode"})
    else:
        m = HiPPO(N, measure, mode="lti", dt=dt, theta=theta, **{k: v for k, v in kw.items() if k != "mode"})
    c = m(u, return_history=False)
    return m.reconstruct(c, L)


def function_table(Ns, out_lines):
    L, T = 1000, 100.0
    dt = T / L
    x = (torch.arange(L, dtype=F64) + 0.5) * dt
    u = benchmark_function(x)[None]
    lagt_thetas = (1.0, 2.0, 5.0, 10.0, 20.0)
    rows, recs = {}, {}
    for N in Ns:
        rows.setdefault("legs (LSI, bilinear)", []).append(mse(run_memory("legs", N, u, dt), u))
        rows.setdefault("legt (theta = T)", []).append(mse(run_memory("legt", N, u, dt, theta=T), u))
        rows.setdefault("lmu (theta = T)", []).append(mse(run_memory("lmu", N, u, dt, theta=T), u))
        rows.setdefault("fout (theta = T)", []).append(mse(run_memory("fout", N + 1 - N % 2, u, dt, theta=T), u))
        best = min((mse(run_memory("lagt", N, u, dt, theta=th), u), th) for th in lagt_thetas)
        rows.setdefault("lagt (best theta of 1,2,5,10,20)", []).append(best[0])
        rows.setdefault("chebyshev (LSI, Cor E.7)", []).append(mse(run_memory("chebyshev", N, u, dt), u))
    N0 = 64
    recs["legs N=64"] = run_memory("legs", N0, u, dt)[0]
    recs["legt N=64, theta=T"] = run_memory("legt", N0, u, dt, theta=T)[0]
    recs["fout N=65, theta=T"] = run_memory("fout", N0 + 1, u, dt, theta=T)[0]
    recs["lagt N=64, theta=10"] = run_memory("lagt", N0, u, dt, theta=10.0)[0]
    recs["chebyshev N=64 (LSI)"] = run_memory("chebyshev", N0, u, dt)[0]

    out_lines += ["## 1. Function f(x) = 1/4 sin x + 1/2 sin(x/3) + sin(x/7), x in [0, 100], L = 1000",
                  "", "Reconstruction MSE over the whole history [0, 100] from the final state.", "",
                  "| measure | " + " | ".join(f"N={N}" for N in Ns) + " |",
                  "|---|" + "---|" * len(Ns)]
    for name, vals in rows.items():
        out_lines.append(f"| {name} | " + " | ".join(f"{v:.2e}" for v in vals) + " |")
    out_lines.append("")
    out_lines.append("(fout uses the next odd N so that every cosine has its sine.)")
    out_lines.append("")

    # LegT window sensitivity and LegS discretization (Figs 4.3, 4.4)
    sens = [(f"{fac:g} T", mse(run_memory("legt", 64, u, dt, theta=T * fac), u))
            for fac in (0.995, 1.0, 1.005)]
    out_lines += ["LegT (N=64) window sensitivity, MSE over [0, 100]:", "",
                  "| theta | " + " | ".join(s for s, _ in sens) + " |", "|---|" + "---|" * len(sens),
                  "| MSE | " + " | ".join(f"{v:.2e}" for _, v in sens) + " |", ""]
    disc = [(d, mse(run_memory("legs", 64, u, dt, discretization=d), u))
            for d in ("forward_euler", "backward_euler", "bilinear")]
    out_lines += ["LegS (N=64) discretization rule, MSE:", "",
                  "| rule | " + " | ".join(d for d, _ in disc) + " |", "|---|" + "---|" * len(disc),
                  "| MSE | " + " | ".join(f"{v:.2e}" for _, v in disc) + " |", ""]
    return x, u[0], recs


def noise_table(noise_dt: float, N: int, out_lines):
    T = 100.0
    L = int(round(T / noise_dt))
    u = bandlimited_noise(L, noise_dt)
    res = {}
    t0 = time.perf_counter()
    res["legs (LSI, bilinear)"] = mse(run_memory("legs", N, u, noise_dt), u)
    t_legs = time.perf_counter() - t0
    res["legt (theta = T)"] = mse(run_memory("legt", N, u, noise_dt, theta=T), u)
    res["lmu (theta = T)"] = mse(run_memory("lmu", N, u, noise_dt, theta=T), u)
    out_lines += [f"## 2. Band-limited white noise (1 Hz, rms 0.5, T = 100 s, dt = {noise_dt:g}, L = {L}), N = {N}",
                  "", "| measure | MSE | thesis (dt = 1e-4, L = 1e6) |", "|---|---|---|"]
    thesis = {"legs (LSI, bilinear)": "0.02", "legt (theta = T)": "-", "lmu (theta = T)": "0.05 (LMU)"}
    for k, v in res.items():
        out_lines.append(f"| {k} | {v:.4f} | {thesis[k]} |")
    out_lines += ["", f"Signal variance 0.25 (predicting 0). LegS O(N) run: {L / t_legs:,.0f} steps/s "
                      f"(1 thread, Python).", ""]


def timescale_table(out_lines):
    T, N = 100.0, 64
    Ls = (250, 500, 1000, 2000, 4000)
    finals, errs = [], []
    for L in Ls:
        x = (torch.arange(L, dtype=F64) + 0.5) * (T / L)
        u = benchmark_function(x)[None]
        m = HiPPO(N, "legs")
        c = m(u, return_history=False)
        finals.append(c[0])
        errs.append(mse(m.reconstruct(c, L), u))
    ref = finals[-1]
    out_lines += [f"## 3. LegS timescale robustness (N = {N}, same f on [0, 100] at different sampling rates)", "",
                  "| samples L | rel. diff of final coefficients vs L=4000 | reconstruction MSE |", "|---|---|---|"]
    for L, c, e in zip(Ls, finals, errs):
        out_lines.append(f"| {L} | {float((c - ref).norm() / ref.norm()):.2e} | {e:.2e} |")
    # exact invariance under a change of time unit (timestamps scaled)
    L = 1000
    u = benchmark_function((torch.arange(L, dtype=F64) + 0.5) * 0.1)[None]
    m = HiPPO(N, "legs")
    ts = torch.arange(1, L + 1, dtype=F64)
    d = max(float((m(u, timestamps=ts * s, return_history=False) - m(u, return_history=False)).abs().max())
            for s in (1e-3, 0.1, 7.0, 1e4))
    out_lines += ["", f"Scaling all timestamps by 1e-3, 0.1, 7, 1e4: max |coefficient difference| = {d:.1e}.", ""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/hippo", help="output folder for the markdown table and PNGs")
    ap.add_argument("--noise-dt", type=float, default=1e-2, help="sampling step of the noise task (thesis: 1e-4)")
    ap.add_argument("--noise-N", type=int, default=256)
    ap.add_argument("--Ns", type=int, nargs="+", default=[16, 32, 64, 128])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lines = ["# HiPPO reconstruction experiments", ""]
    x, u, recs = function_table(args.Ns, lines)
    noise_table(args.noise_dt, args.noise_N, lines)
    timescale_table(lines)
    lines.append(f"Total runtime: {time.perf_counter() - t0:.1f} s (1 thread).")
    text = "\n".join(lines) + "\n"
    (out / "hippo_reconstruction.md").write_text(text)
    print(text)
    import matplotlib.pyplot as plt

    plt.close(plot_reconstruction(x, u, recs, title="f(x) = 1/4 sin x + 1/2 sin(x/3) + sin(x/7): online "
                                  "reconstruction from the final state", path=out / "reconstruction.png"))
    for measure, kw in [("legs", {}), ("legt", {}), ("fout", {}), ("lagt", {}), ("chebyshev", {})]:
        plt.close(plot_basis(measure, 5 if measure != "fout" else 5, path=out / f"basis_{measure}.png", **kw))
    print(f"wrote {out}/hippo_reconstruction.md and PNGs")


if __name__ == "__main__":
    main()
