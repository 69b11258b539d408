"""Command line (``statespaces ...`` or ``python -m statespaces ...``).

```
statespaces train [--preset NAME] [--config FILE.toml] [--section.key VALUE ...] [--resume]
statespaces evaluate CHECKPOINT_DIR
statespaces analyze CHECKPOINT_DIR [OUT_DIR]
statespaces reproduce [IDS ...] [--quick]
statespaces presets
```

A user error (a config value of the wrong type or out of range, a run folder that already holds
a run, a corrupt checkpoint, ...) prints one line on stderr and exits with status 2; ``--debug``
(before or after the command) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, Tuple

#: Exceptions that report a user error (bad value, file, folder or checkpoint): one line, exit 2.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, FileExistsError, FloatingPointError,
               ImportError)


def _parse_overrides(extra: List[str]) -> List[Tuple[str, str]]:
    from .config import ConfigError

    pairs, i = [], 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or "." not in tok:
            raise ConfigError(f"unexpected argument {tok!r}; overrides look like --trainer.epochs 5")
        if "=" in tok:
            key, value = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise ConfigError(f"{tok} needs a value")
            key, value = tok[2:], extra[i + 1]
            i += 2
        pairs.append((key.replace("-", "_"), value))
    return pairs


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; a user error prints one line on stderr and raises ``SystemExit(2)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return _main(argv)
    except USER_ERRORS as e:
        if debug:
            raise
        command = next((a for a in argv if not a.startswith("-")), "")
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"statespaces {command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="statespaces", description="Structured state space models.",
                                     epilog="--debug (anywhere): show the traceback of an error instead of one line.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser(
        "train", help="train a model (default: S4D on sequential digits)",
        epilog="Any config field can be set as --section.key VALUE, e.g. --model.layer s4 --trainer.epochs 5 "
        "--data.name pdigits. Sections: model, data, trainer (see statespaces.train.config).",
    )
    p_train.add_argument("--preset", help="named recipe (see `statespaces presets`)")
    p_train.add_argument("--config", help="TOML file with [model], [data], [trainer] sections")
    p_train.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    p_train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p_eval = sub.add_parser("evaluate", help="test accuracy of a checkpoint directory")
    p_eval.add_argument("checkpoint")
    sub.add_parser("presets", help="list the named presets")
    p_rep = sub.add_parser("reproduce", help="re-run the thesis' claims and write REPRODUCTION.md")
    p_rep.add_argument("ids", nargs="*", help="claim ids (default: all; with --quick: the tier-A claims)")
    p_rep.add_argument("--quick", action="store_true", help="fast profile: smaller sizes, exact claims only by default")
    p_rep.add_argument("--out", default="runs/reproduce", help="folder for figures and run outputs")
    p_rep.add_argument("--table", default="REPRODUCTION.md", help="markdown table to (re)write")
    p_rep.add_argument("--figures", default=None,
                       help="folder the table's PNG plots are copied to and linked from (default: "
                            "docs/reproduction beside the table; run outputs stay in --out)")
    p_an = sub.add_parser("analyze", help="oscillator view of every SSM layer in a checkpoint: PNG plots + CSV/JSON tables")
    p_an.add_argument("checkpoint")
    p_an.add_argument("out_dir", nargs="?", default=None, help="(default: <checkpoint>/analysis)")
    args, extra = parser.parse_known_args(argv)

    if args.command == "train":
        from .config import build_config
        from .loop import train

        cfg = build_config(args.preset, args.config, _parse_overrides(extra)).validated()
        m, t = cfg.model, cfg.trainer
        print(f"training {m.layer} (H={m.d_model}, N={m.d_state}, {m.n_layers} layers, init={m.init}) on "
              f"{cfg.data.name} for {t.epochs} epochs -> {t.out}", flush=True)
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
        if summary:
            score = "R^2" if summary["task"] == "regression" else "accuracy"
            print(
                f"\ndone: {summary['dataset']} test {score} {100 * summary['test_acc']:.2f}%, "
                f"{summary['params']:,} parameters, {summary['train_seconds_this_run']:.0f}s; "
                f"checkpoints in {summary['checkpoints']}, metrics and curves in {t.out}"
            )
        return 0
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "evaluate":
        from .loop import evaluate_checkpoint

        res = evaluate_checkpoint(args.checkpoint)
        print(f"test loss {res['loss']:.4f}  test accuracy {100 * res['acc']:.2f}%")
        return 0
    if args.command == "analyze":
        from pathlib import Path

        from ..analysis import analyze_checkpoint

        out = args.out_dir or str(Path(args.checkpoint) / "analysis")
        analyze_checkpoint(args.checkpoint, out)
        print(f"wrote the oscillator analysis to {out}")
        return 0
    if args.command == "reproduce":
        from pathlib import Path

        from ..reproduce import CLAIMS, run_claims

        ids = args.ids or sorted(c.id for c in CLAIMS.values() if (c.tier == "A" or not args.quick))
        table = Path(args.table)
        figures = Path(args.figures) if args.figures else table.parent / "docs" / "reproduction"
        rows = run_claims(ids, args.quick, Path(args.out), table, figures)
        print(f"wrote {args.table}: {sum(r['passed'] for r in rows)}/{len(rows)} claims pass")
        return 0 if all(r["passed"] for r in rows) else 1
    if args.command == "presets":
        from .config import PRESETS

        for name, spec in PRESETS.items():
            print(f"{name:16s} {json.dumps(spec)}")
        return 0
    return 1
