"""Analyze a trained checkpoint: every SSM layer as a bank of damped oscillators (seed 000).

    python examples/analyze_checkpoint.py runs/examples/digits/s4d/best
    python examples/analyze_checkpoint.py runs/digits/best --out runs/digits/analysis --top 5

For each layer it prints the strongest oscillators (natural frequency, damping ratio, decay time,
amplitude) and checks that the closed-form kernel of the oscillators equals the layer's own
kernel; then it writes the plots and tables of ``statespaces analyze`` (eigenvalues, kernels,
frequency responses, oscillator tables as PNG, CSV, JSON) into ``--out``.
Train a checkpoint first with ``examples/train_digits.py`` or ``statespaces train``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from statespaces.analysis import analyze_checkpoint, oscillators, supported_layer
from statespaces.train import load_trained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="checkpoint directory (e.g. runs/digits/best)")
    ap.add_argument("--out", default=None, help="output folder (default: <checkpoint>/analysis)")
    ap.add_argument("--top", type=int, default=4, help="oscillators listed per layer")
    args = ap.parse_args()

    model, cfg = load_trained(args.checkpoint)
    print(f"model: {cfg.model.layer}, H={cfg.model.d_model}, {cfg.model.n_layers} layers")
    for name, module in model.named_modules():
        if not supported_layer(module):
            continue
        an = oscillators(module, name=name)
        L = 256
        with torch.no_grad():
            K_layer = module.kernel(L).double()
        gap = (an.kernel(L) - K_layer).abs().max().item()
        s = an.summary()
        print(f"\n{name}: {s['n_oscillators']} oscillators, max |lambda| {s['max_abs_eig']:.4f}, "
              f"damping ratio in [{s['damping_ratio_range'][0]:.3g}, {s['damping_ratio_range'][1]:.3g}]; "
              f"closed-form kernel vs layer.kernel: {gap:.1e}")
        key = (lambda r: r["amplitude"] * r.get("gain", 1.0))
        print(f"  {'natural freq':>12} {'damping':>8} {'decay time':>10} {'amplitude':>9}")
        for r in sorted(an.table(), key=key, reverse=True)[: args.top]:
            print(f"  {r['natural_frequency']:12.4g} {r['damping_ratio']:8.4f} {r['decay_time']:10.4g} {r['amplitude']:9.4f}")

    out = Path(args.out) if args.out else Path(args.checkpoint) / "analysis"
    analyze_checkpoint(args.checkpoint, out)
    print(f"\nplots and tables written to {out}:")
    for p in sorted(out.iterdir())[:12]:
        print("  ", p.name)


if __name__ == "__main__":
    main()
