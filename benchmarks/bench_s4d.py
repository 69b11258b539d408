"""S4D layer forward+backward on CPU: ours vs the naive einsum-Vandermonde + FFT reference, in one run.

    python benchmarks/bench_s4d.py            # B=8, H=128, N=64, L=1024 and 8192

Prints per-configuration times, the speed-up over the naive reference (which materializes the
(H, N, L) Vandermonde matrix, like the reference implementation's ``einsum('hn,hnl->hl')``), and
the ratio to a memory-bandwidth floor: streaming the layer's input and output once each way
(x, y in the forward, dy, dx in the backward) at the speed of a copy into a preallocated buffer
(``common.copy_floor``).
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from common import copy_floor, machine, positive_int, run, timeit, timing_line
from statespaces import S4D
from statespaces.kernels import vandermonde_naive


class NaiveS4D(nn.Module):
    """The textbook S4D forward: materialized Vandermonde kernel, FFT convolution, D skip (ZOH)."""

    def __init__(self, layer: S4D) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        sys = self.layer.diagonal_system()
        L = u.shape[1]
        k = 2 * vandermonde_naive(sys.C[0] * sys.dB, sys.log_dA, L)
        x = u.transpose(1, 2)
        y = torch.fft.irfft(torch.fft.rfft(x, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
        return y.transpose(1, 2) + u * self.layer.D


def fwd_bwd(model: nn.Module, x: torch.Tensor):
    def run():
        model.zero_grad(set_to_none=True)
        y = model(x)
        y.backward(torch.ones_like(y))
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--d-model", type=positive_int, default=128)
    p.add_argument("--d-state", type=positive_int, default=64)
    p.add_argument("--lengths", type=positive_int, nargs="+", default=[1024, 8192])
    p.add_argument("--repeat", type=positive_int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"S4D fwd+bwd, B={args.batch} H={args.d_model} N={args.d_state}; {machine()}")
    print(timing_line("wall", f"median of {args.repeat} calls after 1 warm-up (ours, naive); floor median of 5"))
    print(f"{'L':>6} {'ours ms':>9} {'naive ms':>9} {'speed-up':>9} {'floor ms':>9} {'ours/floor':>11}")
    for L in args.lengths:
        layer = S4D(args.d_model, args.d_state, init="legs", discretization="zoh")
        naive = NaiveS4D(layer)
        x = torch.randn(args.batch, L, args.d_model, requires_grad=True)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), naive(x), atol=1e-3, rtol=1e-3)
        t_ours = timeit(fwd_bwd(layer, x), repeat=args.repeat)
        t_naive = timeit(fwd_bwd(naive, x), repeat=args.repeat)
        floor = copy_floor(x.numel(), passes=2)  # x->y forward, dy->dx backward
        print(f"{L:>6} {1e3 * t_ours:9.2f} {1e3 * t_naive:9.2f} {t_naive / t_ours:8.2f}x {1e3 * floor:9.3f} {t_ours / floor:10.1f}x")


if __name__ == "__main__":
    run(main)
