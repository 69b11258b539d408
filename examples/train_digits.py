"""Train a small SSM classifier on sequential digits with each layer type.

sklearn's 8x8 handwritten digits read pixel by pixel (L = 64, 10 classes, bundled with
scikit-learn: no download). Uses the same config system as ``statespaces train`` and writes a
checkpoint directory per layer (``<out>/<layer>/best``), ``metrics.csv`` and ``curves.png``.

    python examples/train_digits.py                       # s4d, s4 and linoss, 5 epochs each
    python examples/train_digits.py --layer all           # every registered layer (also dlinoss, s4nd, s5)
    python examples/train_digits.py --layer linoss --epochs 10
    python examples/train_digits.py --layer s4d --permuted  # pixel order shuffled (pMNIST protocol)

About 10-30 s per layer and epoch budget on two CPU cores with the defaults below.
"""
from __future__ import annotations

import argparse
import json
import time

from statespaces.layers.config import state_key
from statespaces.layers.registry import available_layers
from statespaces.train import build_config, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="s4d,s4,linoss",
                    help=f"comma-separated kinds of {', '.join(available_layers())}, or 'all' (default: s4d,s4,linoss)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--n-layers", type=int, default=2)
    ap.add_argument("--d-state", type=int, default=32, help="state size (LinOSS/D-LinOSS: oscillators)")
    ap.add_argument("--permuted", action="store_true", help="fixed random pixel permutation (pdigits)")
    ap.add_argument("--out", default="runs/examples/digits")
    args = ap.parse_args()

    layers = available_layers() if args.layer == "all" else tuple(k.strip() for k in args.layer.split(","))
    results = {}
    for layer in layers:
        overrides = [
            ("model.layer", layer), ("model.d_model", str(args.d_model)), ("model.n_layers", str(args.n_layers)),
            (f"model.layer.{state_key(layer)}", str(args.d_state)), ("model.dropout", "0.0"),
            ("data.name", "pdigits" if args.permuted else "digits"),
            ("trainer.epochs", str(args.epochs)), ("trainer.batch_size", "32"),
            ("trainer.lr", "0.01" if layer == "linoss" else "0.03"), ("trainer.weight_decay", "0.0"),
            ("trainer.out", f"{args.out}/{layer}"),
        ]
        cfg = build_config(overrides=overrides)
        print(f"--- {layer}: H={args.d_model}, N={args.d_state}, {args.n_layers} layers, {args.epochs} epochs", flush=True)
        t0 = time.time()
        summary = train(cfg, progress=False, replace=True)
        results[layer] = {"test_acc": summary["test_acc"], "params": summary["params"],
                          "seconds": round(time.time() - t0, 1), "best": summary["best"]}
    print("\nlayer     test acc   params   seconds   checkpoint")
    for layer, r in results.items():
        print(f"{layer:8s}  {100 * r['test_acc']:6.1f}%  {r['params']:7d}  {r['seconds']:8.1f}   {r['best']}")
    with open(f"{args.out}/results.json", "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
