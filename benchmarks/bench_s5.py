"""S5 (parallel scan over a shared MIMO state) against S4D (Vandermonde kernel + FFT conv), and the
irregular-sampling (time-varying scan) paths, forward+backward on CPU in one run.

    PYTHONPATH=src python benchmarks/bench_s5.py            # H=64, N=P=64; (B, L) = (16, 64) and (2, 512)
    PYTHONPATH=src python benchmarks/bench_s5.py --quick    # fewer repeats

Reports milliseconds per forward+backward (wall clock, median of 7 calls, 3 with ``--quick``, after one
warm-up; the input's gradient included), the time over S4D's at the same
shape (above 1: slower than S4D), and the ratio to the fp32
copy floor of the (B, L, H) activations (x->y, dy->dx: ``common.layer_floor``, same clock). S4D's
state is H x N/2 complex numbers per step, S5's P/2 (shared by the channels). ``--shapes B,L ...`` and
``--d-model`` (H = N = P) pick other sizes.
"""
from __future__ import annotations

import argparse

import torch

from common import LAYER_FLOOR, int_tuple, layer_floor, machine, positive_int, run, timeit, timing_line
from statespaces.layers import S4D, S5, LinOSS


def _fb(layer, x, **kw):
    """One forward+backward, the input's gradient included (x requires grad): the dy -> dx pass the floor counts."""
    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x, **kw).square().sum().backward()
    return step


class _RealForm(torch.nn.Module):
    """An S5 layer run eagerly in the real-arithmetic form that torch.compile/export trace (issue 21)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, **kw):
        import statespaces.layers.s5 as s5

        saved, s5.tracing = s5.tracing, lambda: True
        try:
            return self.layer(x, **kw)
        finally:
            s5.tracing = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 timed calls per median instead of 7")
    ap.add_argument("--shapes", nargs="+", type=int_tuple("B,L"), default=[(16, 64), (2, 512)], help="B,L pairs")
    ap.add_argument("--d-model", type=positive_int, default=64, help="H = N (S5's P = N)")
    args = ap.parse_args()
    rep = 3 if args.quick else 7
    torch.manual_seed(0)
    print(f"machine: {machine()}")
    print(f"{LAYER_FLOOR}; fwd+bwd rows")
    print(timing_line("wall", f"median of {rep} calls after 1 warm-up; floor median of {max(5, rep)}"))
    print("| shape (B, L, H, N) | layer | path | ms / fwd+bwd | time / S4D's (> 1: slower) | floor ms | ours/floor |")
    print("|---|---|---|---|---|---|---|")
    for B, L in args.shapes:
        H = N = args.d_model
        x = torch.randn(B, L, H, requires_grad=True)
        dt = torch.rand(B, L) + 0.5
        cases = [("S4D", S4D(H, N, seed=0), "conv", {}),
                 ("S4D", S4D(H, N, seed=0), "scan, irregular dt", {"dt": dt}),
                 ("S5", S5(H, N, seed=0), "scan", {}),
                 ("S5", _RealForm(S5(H, N, seed=0)), "scan, real form (traced path)", {}),
                 ("S5", S5(H, N, seed=0), "scan, irregular dt", {"dt": dt}),
                 ("LinOSS", LinOSS(H, N // 2, seed=0), "scan", {}),
                 ("LinOSS", LinOSS(H, N // 2, seed=0), "scan, irregular dt", {"dt": dt})]
        base, floor = None, layer_floor(x.numel(), repeat=max(5, rep))
        for name, layer, path, kw in cases:
            t = timeit(_fb(layer, x, **kw), repeat=rep)
            base = t if base is None else base
            print(f"| ({B}, {L}, {H}, {N}) | {name} | {path} | {1e3 * t:.2f} | {t / base:.2f}x | {1e3 * floor:.4f} "
                  f"| {t / floor:.0f}x |")


if __name__ == "__main__":
    run(main)
