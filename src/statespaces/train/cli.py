"""Command line: ``statespaces train [--flags]`` (also ``python -m statespaces train``)."""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields
from typing import List, Optional

from .config import TrainConfig


def _add_train_args(p: argparse.ArgumentParser) -> None:
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if f.type in ("bool", bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=default,
                           metavar="{true,false}", help=f"(default: {default})")
        elif f.name == "layer_kwargs":
            p.add_argument(flag, type=json.loads, default=default,
                           help='extra layer arguments as JSON, e.g. \'{"discretization": "bilinear"}\'')
        else:
            typ = {"int": int, "float": float, "str": str}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
            p.add_argument(flag, type=typ, default=default, help=f"(default: {default})")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt if it exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="statespaces", description="Structured state space models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train a model (default: S4D on sequential digits)")
    _add_train_args(p_train)
    args = parser.parse_args(argv)

    if args.command == "train":
        from .loop import train

        values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
        cfg = TrainConfig(**values)
        print(f"training {cfg.layer} (H={cfg.d_model}, N={cfg.d_state}, {cfg.n_layers} layers, init={cfg.init}) "
              f"on {cfg.task} for {cfg.epochs} epochs -> {cfg.out}", flush=True)
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
        print(
            f"\ndone: {summary['task']} test accuracy {100 * summary['test_acc']:.2f}% "
            f"(best {100 * summary['best_test_acc']:.2f}%), {summary['params']:,} parameters, "
            f"{summary['train_seconds_this_run']:.0f}s; checkpoint {summary['checkpoint']}"
        )
    return 0
