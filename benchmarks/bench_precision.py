"""Float32 error against float64 over long sequences (issue #16, items 6 and 7).

    python benchmarks/bench_precision.py                 # LinOSS, S4D, Vandermonde (about a minute)
    python benchmarks/bench_precision.py --steps 10000   # also LinOSS-IMEX step() over 1e3 / 1e4 steps
    python benchmarks/bench_precision.py --parts vandermonde

Error = max |y_fp32 - y_fp64| / max |y_fp64|, where the float64 model is a copy of the float32
one (same parameter values), run with the parallel scan. Figures are quoted in docs/linoss.md.
"""
from __future__ import annotations

import argparse
import copy

import torch
from common import run

from statespaces.kernels.reference import vandermonde_naive
from statespaces.kernels.vandermonde import vandermonde
from statespaces.layers.linoss import LinOSS
from statespaces.layers.s4d import S4D


def rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.detach()
    return float((y.detach().to(ref.dtype) - ref).abs().max() / ref.abs().max())


def linoss_rows(Ls, steps: int) -> None:
    for disc in ("IMEX", "IM"):
        m32 = LinOSS(4, n_oscillators=16, discretization=disc, seed=0)
        m64 = copy.deepcopy(m32).double()
        for L in Ls:
            x = torch.randn(1, L, 4, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                ref = m64(x.double())
                cols = {"scan": rel(m32(x), ref), "conv": rel(m32(x, mode="conv"), ref)}
                ys, st = [], None
                for i in range(0, L, 8191):
                    y, st = m32(x[:, i:i + 8191], state=st, return_state=True)
                    ys.append(y)
                cols["chunks of 8191"] = rel(torch.cat(ys, 1), ref)
            print(f"LinOSS-{disc:4s} L={L:>9,d}  " + "  ".join(f"{k} {v:.1e}" for k, v in cols.items()), flush=True)
    if steps:
        m32 = LinOSS(4, n_oscillators=16, discretization="IMEX", seed=0)
        m64 = copy.deepcopy(m32).double()
        x = torch.randn(1, steps, 4, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = m64(x.double())
            s, ys = m32.initial_state(1), []
            for i in range(steps):
                y, s = m32.step(x[:, i], s)
                ys.append(y)
        y = torch.stack(ys, 1)
        n = 1000
        while n <= steps:
            print(f"LinOSS-IMEX step() n={n:>7,d}  {rel(y[:, :n], ref[:, :n]):.1e}", flush=True)
            n *= 10


def s4d_rows(L: int) -> None:
    torch.manual_seed(0)
    m32 = S4D(4, d_state=64, dt_min=1e-3, dt_max=1e-3)
    m64 = copy.deepcopy(m32).double()
    x = torch.randn(1, L, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = m64(x.double())
        full = rel(m32(x), ref)
        ys, st = [], None
        for i in range(0, L, 10_007):
            y, st = m32(x[:, i:i + 10_007], state=st, return_state=True)
            ys.append(y)
    print(f"S4D (dt 1e-3) L={L:>9,d}  full {full:.1e}  chunks of 10007 {rel(torch.cat(ys, 1), ref):.1e}")


def vandermonde_rows() -> None:
    g = torch.Generator().manual_seed(0)
    H, N = 2, 16
    re = -(10 ** torch.empty(H, N).uniform_(-5, -3, generator=g))
    im = torch.empty(H, N).uniform_(-3, 3, generator=g)
    coef = torch.randn(H, N, dtype=torch.complex64, generator=g)
    log_a = torch.complex(re, im)
    for L in (4096, 65536):
        gg = torch.randn(H, L, generator=g)
        c64, w64 = coef.cdouble().requires_grad_(), log_a.cdouble().requires_grad_()
        K64 = vandermonde_naive(c64, w64, L)
        rc, rw = torch.autograd.grad(K64, (c64, w64), gg.double())
        c, w = coef.clone().requires_grad_(), log_a.clone().requires_grad_()
        K = vandermonde(c, w, L)
        gc, gw = torch.autograd.grad(K, (c, w), gg)
        print(f"Vandermonde (PyTorch path) L={L:>6,d}  fwd {rel(K.detach(), K64.detach()):.1e}  "
              f"grad_c {rel(gc, rc):.1e}  grad_w {rel(gw, rw):.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="10000,100000,1000000", help="LinOSS sequence lengths")
    ap.add_argument("--steps", type=int, default=0, help="also run LinOSS-IMEX step() this many times")
    ap.add_argument("--parts", default="linoss,s4d,vandermonde", help="comma-separated subset to run")
    args = ap.parse_args()
    parts = [q.strip() for q in args.parts.split(",") if q.strip()]
    unknown = sorted(set(parts) - {"linoss", "s4d", "vandermonde"})
    if unknown or not parts:
        raise ValueError(f"--parts {args.parts!r}: unknown part(s) {unknown}; allowed: a comma-separated subset of "
                         "linoss, s4d, vandermonde")
    if "linoss" in parts:
        linoss_rows([int(float(v)) for v in args.lengths.split(",")], args.steps)
    if "s4d" in parts:
        s4d_rows(100_000)
    if "vandermonde" in parts:
        vandermonde_rows()


if __name__ == "__main__":
    run(main)
