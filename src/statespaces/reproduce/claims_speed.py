"""Tier A: recurrent generation speed (§7.4.2): one step of a 4-layer S4D stack vs recomputing the
convolution over the whole context for every new token."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..blocks import ResidualBlock
from ..layers import S4D
from .registry import Result, claim


def _per_call(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


@claim("A7", "Recurrent generation is fast and flat in context length (§7.4.2)", "A", timed=True)
def a7(quick: bool, out: Path) -> Result:
    torch.manual_seed(0)
    H = 64
    blocks = nn.ModuleList(ResidualBlock(S4D(H, 64, init="legs", seed=i)) for i in range(4)).eval()
    Ls = (1024, 4096) if quick else (1024, 4096, 16384)
    step_t, conv_t = {}, {}
    with torch.no_grad():
        for L in Ls:
            x = torch.randn(1, L, H)
            states = []
            h = x
            for b in blocks:  # ingest the context in convolution mode, keeping every layer's state
                h, s = b(h, return_state=True)
                states.append(s)
            xt = torch.randn(1, H)

            def one_step(xt=xt, states=states):
                z = xt
                for b, s in zip(blocks, states):
                    z, _ = b.step(z, s)

            def recompute(x=x):
                z = x
                for b in blocks:
                    z = b(z)

            step_t[L] = _per_call(one_step, 50)
            conv_t[L] = _per_call(recompute, 3)
    flat = max(step_t.values()) / min(step_t.values())
    speedup = conv_t[4096] / step_t[4096]
    return Result(
        thesis="S4 generation ~60x faster than a Transformer (48K vs 0.8K tok/s)",
        ours=", ".join(f"L={L}: step {1e3 * step_t[L]:.2f} ms vs recompute {1e3 * conv_t[L]:.0f} ms" for L in Ls)
        + f"; step time ratio max/min {flat:.2f}; speed-up at 4K {speedup:.0f}x",
        passed=flat <= 1.2 * 1.25 and speedup >= 10,
        criterion="step time flat in L (within the timing noise, max/min <= 1.5) "
                  "and >= 10x faster than recompute at L=4K",
    )
