"""Command line (``statespaces ...`` or ``python -m statespaces ...``).

```
statespaces train [--preset NAME] [--config FILE.toml] [--section.key VALUE ...]
statespaces train --trainer.out DIR --resume [--section.key VALUE ...]   # config read from DIR
statespaces evaluate CHECKPOINT_OR_RUN_DIR [MORE ...] [--data.name PATH]   # several: and their ensemble
statespaces analyze CHECKPOINT_OR_RUN_DIR [OUT_DIR]
statespaces generate RUN_DIR [--steps N] [--prompt K] [--piece I] [--n M] [--temperature T] [--top-k K] [--top-p P]
                     [--seed S] [--out STEM]
statespaces export RUN_DIR OUT.onnx|OUT.pt2 [--rate R] [--data.name PATH]
statespaces reproduce [IDS ...] [--quick]
statespaces presets
```

The top floor of the package: the only module that imports both the library (``train``, ``data``,
``models``) and the harnesses above it (``analysis``, ``reproduce``).

A user error (a config value of the wrong type or out of range, a run folder that already holds
a run, a corrupt checkpoint, a bad argument, ...) prints one line on stderr and exits with status
2; ``--debug`` (before or after the command) shows the traceback instead. Ctrl-C prints one line
(how to resume) and exits with status 130. A warning prints one line too (``statespaces train: warning: ...``;
Python's own format, with the file and source line, under ``--debug``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: Exceptions that report a user error (bad value, file, folder or checkpoint): one line, exit 2.
USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError, ImportError)


def _version() -> str:
    """``statespaces X (torch Y)``, read without importing torch (the CLI starts before it)."""
    from importlib.metadata import PackageNotFoundError, version

    from ._version import __version__

    try:
        torch_version = version("torch")
    except PackageNotFoundError:        # pragma: no cover - torch is a dependency
        torch_version = "not installed"
    return f"statespaces {__version__} (torch {torch_version})"


class UsageError(Exception):
    """A command-line syntax error (argparse's), reported in one line like the other user errors."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)     # --resum is not --resume, --data not --data.name
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, no usage block (``-h`` shows it)
        raise UsageError(f"{message} (see {self.prog} -h)")


def _parse_overrides(extra: List[str], flags: Sequence[str] = ()) -> List[Tuple[str, str]]:
    """``--section.key VALUE`` (or ``=VALUE``) pairs of the train command; ``flags``: its own options, suggested for
    a misspelt one (``--presett``)."""
    from ._config import did_you_mean
    from .train.config import ConfigError

    pairs, i = [], 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or "." not in tok:
            hint = did_you_mean(tok.split("=", 1)[0], flags) if tok.startswith("-") else ""
            raise ConfigError(f"unexpected argument {tok!r}; {hint}overrides look like --trainer.epochs 5")
        if "=" in tok:
            key, value = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra) or (extra[i + 1].startswith("--") and len(extra[i + 1]) > 2):
                got = f" (the next argument, {extra[i + 1]}, is a flag)" if i + 1 < len(extra) else ""
                raise ConfigError(f"{tok} needs a value{got}; write {tok} VALUE or {tok}=VALUE")
            key, value = tok[2:], extra[i + 1]
            i += 2
        pairs.append((key.replace("-", "_"), value))
    return pairs


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; a user error prints one line on stderr and raises ``SystemExit(2)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), "")
    formatwarning = warnings.formatwarning
    if not debug:                         # a warning is one line too, without the source line that raised it
        warnings.formatwarning = _one_line_warning(command)
    # SIGTERM (docker stop, a scheduler's time limit) ends a command as Ctrl-C does, with its message: the run is
    # resumable either way, but a silent exit 143 left the user guessing
    on_term = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return _main(argv)
    except BrokenPipeError:               # output piped into a reader that stopped (| head): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    except USER_ERRORS + (UsageError,) as e:
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        if _speaks():            # under torchrun every rank meets the same error: rank 0 says it, once
            print(f"statespaces{' ' + command if command else ''}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as e:
        if debug:
            raise
        hint = " (continue with the same command and --resume)" if command == "train" else ""
        what, code = ("terminated (SIGTERM)", 143) if isinstance(e, _Terminated) else ("interrupted", 130)
        if _speaks():
            print(f"\nstatespaces {command}: {what}{hint}", file=sys.stderr)
        raise SystemExit(code) from None
    finally:
        warnings.formatwarning = formatwarning
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)


def _speaks() -> bool:
    """Whether this process prints the command's error and interruption lines: not the ranks > 0 of a torchrun
    launch (they meet the same error; their copies interleaved with rank 0's on one line)."""
    return os.environ.get("RANK", "0") in ("", "0")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (the same unwinding: locks released,
    no half-written checkpoint left visible)."""


def _terminate(signum, frame) -> None:
    raise _Terminated()


def _one_line_warning(command: str):
    """``warnings.formatwarning`` for the command line: ``statespaces train: warning: ...`` (the category named
    unless it is a plain UserWarning), instead of Python's ``file:line: UserWarning: ...`` plus the source line."""
    prefix = f"statespaces{' ' + command if command else ''}"

    def fmt(message, category, filename, lineno, line=None) -> str:
        kind = "warning" if category is UserWarning else f"warning ({category.__name__})"
        return f"{prefix}: {kind}: {' '.join(str(message).split())}\n"

    return fmt


def _main(argv: List[str]) -> int:
    parser = _Parser(prog="statespaces", description="Structured state space models.",
                                     epilog="--debug (anywhere): show the traceback of an error instead of one line.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_train = sub.add_parser(
        "train", help="train a model (default: S4D on sequential digits)",
        epilog="Any config field can be set as --section.key VALUE, e.g. --model.layer s4 --trainer.epochs 5 "
        "--data.name pdigits; the layer's settings as --model.layer.KEY VALUE (--model.layer.kind linoss "
        "--model.layer.n_oscillators 32). Sections: model, data, trainer (see statespaces.train.config).",
    )
    p_train.add_argument("--preset", help="named recipe (see `statespaces presets`)")
    p_train.add_argument("--config", help="TOML file with [model], [data], [trainer] sections (or JSON, e.g. a "
                         "run's run.json)")
    p_train.add_argument("--resume", action="store_true",
                         help="continue the run in --trainer.out (default runs/<preset>, or runs/<data> without a "
                              "preset) from its newest valid checkpoint, with the config stored there; flags beside "
                              "it may change where it runs (device, out, tensorboard, compile, keep_last, "
                              "checkpoint_every), any other flag that differs from the stored run is an error")
    p_train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p_eval = sub.add_parser("evaluate", help="test score (accuracy, R^2, NLL) of a checkpoint directory (a run "
                                             "folder: its best/); "
                                             "several: each one's and their ensemble's (mean class probabilities)")
    p_eval.add_argument("checkpoint", nargs="+")
    p_eval.add_argument("--data.name", dest="data_name", default=None,
                        help="evaluate on this dataset or time-series file instead of the stored one (e.g. the "
                             "same files moved elsewhere); channels and classes must match")
    sub.add_parser("presets", help="list the named presets")
    p_rep = sub.add_parser("reproduce", help="re-run the thesis' claims and write REPRODUCTION.md")
    p_rep.add_argument("ids", nargs="*", help="claim ids (default: all; with --quick: the tier-A claims)")
    p_rep.add_argument("--list", action="store_true", help="list the claims (id, tier, title) and exit")
    p_rep.add_argument("--quick", action="store_true", help="fast profile: smaller sizes, exact claims only by default")
    p_rep.add_argument("--out", default="runs/reproduce", help="folder for figures and run outputs")
    p_rep.add_argument("--table", default="REPRODUCTION.md", help="markdown table to (re)write")
    p_rep.add_argument("--figures", default=None,
                       help="folder the table's PNG plots are copied to and linked from (default: "
                            "docs/reproduction beside the table; run outputs stay in --out)")
    p_an = sub.add_parser("analyze", help="oscillator view of every SSM layer in a checkpoint (a run folder: its "
                                          "best/): PNG plots + CSV/JSON tables")
    p_an.add_argument("checkpoint")
    p_an.add_argument("out_dir", nargs="?", default=None,
                      help="(default: <run>/analysis, outside the checkpoints, which a live run replaces)")
    p_an.add_argument("--no-plots", action="store_true", help="write the CSV/NPZ/JSON tables only")
    p_gen = sub.add_parser("generate", help="sample continuations of held-out pieces from a language model's run "
                                            "(a run folder: its best/) in recurrent mode; chorales: MIDI files")
    p_gen.add_argument("checkpoint")
    p_gen.add_argument("--steps", type=int, default=256, help="new steps per piece (default 256: 16 bars of chorales)")
    p_gen.add_argument("--prompt", type=int, default=16, help="steps of each test piece given as the prompt "
                                                              "(default 16: one bar)")
    p_gen.add_argument("--piece", type=int, default=0, help="index of the first test piece used as a prompt")
    p_gen.add_argument("--n", type=int, default=1, help="number of continuations (one per test piece from --piece)")
    p_gen.add_argument("--temperature", type=float, default=1.0)
    p_gen.add_argument("--top-k", type=int, default=None)
    p_gen.add_argument("--top-p", type=float, default=None)
    p_gen.add_argument("--seed", type=int, default=0, help="seed of the sampling (the same seed, the same notes)")
    p_gen.add_argument("--data.name", dest="data_name", default=None,
                       help="take the prompts from this dataset instead of the stored one (e.g. the run's token file "
                            "moved elsewhere: tokens:NEW_PATH)")
    p_gen.add_argument("--out", default=None, help="file stem of the output (.mid/.npy/.json added; a folder holds "
                                                   "sample_<seed>.*; default "
                                                   "<run>/generated/sample_<seed>)")
    p_exp = sub.add_parser("export", help="export a run's model (a run folder: its best/) to ONNX (a language "
                                          "model's streaming step) or a torch.export program (.pt2), checked "
                                          "against the model on its test data")
    p_exp.add_argument("checkpoint")
    p_exp.add_argument("out", help="OUT.onnx or OUT.pt2")
    p_exp.add_argument("--rate", type=float, default=1.0, help="sampling-rate factor the step is frozen at "
                                                               "(language models; 1: the training rate)")
    p_exp.add_argument("--data.name", dest="data_name", default=None,
                       help="check the exported file on this dataset instead of the stored one (the run's data "
                            "moved elsewhere)")
    args, extra = parser.parse_known_args(argv)

    if args.command == "train":
        return _train(args, _parse_overrides(extra, [o for a in p_train._actions for o in a.option_strings]))
    if extra:          # named after the subcommand, whose -h lists its arguments
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "evaluate":
        from .train.evaluation import evaluate_checkpoint
        from .train.tasks import get_task

        if len(args.checkpoint) > 1:
            return _evaluate_ensemble(args.checkpoint, args.data_name)
        res = evaluate_checkpoint(args.checkpoint[0], data_name=args.data_name)
        print(f"{_test_scores(get_task(res['task']), res)}  ({res['dataset']}, {res['n_test']} test "
              f"examples)\ncheckpoint {res['checkpoint']}: {res['selection']}")
        _print_channels(res)
        return 0
    if args.command == "analyze":
        from .analysis import analyze_checkpoint
        from .train.loop import checkpoint_dir
        from .train.run import outputs_dir

        folder = checkpoint_dir(args.checkpoint)
        out = args.out_dir or str(outputs_dir(folder, "analysis"))
        summary = analyze_checkpoint(folder, out, plots=not args.no_plots)
        for entry in summary["layers"]:
            notes = [entry["kind"]] + ([f"{entry['direction']} direction"] if entry.get("direction") else [])
            if entry.get("time_unit") == "step":
                notes.append("frequencies per step: the layer has no dt")
            if entry.get("faithful") is False:      # S4 with an ill-conditioned eigenbasis (Lemma 6.6)
                notes.append(f"NOT faithful: its oscillators' kernel is off by {entry['kernel_error']:.1e}")
            print(f"{entry['layer']}: {entry['n_oscillators']} oscillators ({', '.join(notes)})")
        for skip in summary.get("skipped", []):
            print(f"{skip['layer']}: not analyzed ({skip['reason']})")
        print(f"wrote the oscillator analysis of {folder} to {Path(out)}")
        return 0
    if args.command == "generate":
        return _generate(args)
    if args.command == "export":
        from .train.export_run import export_checkpoint

        res = export_checkpoint(args.checkpoint, args.out, rate=args.rate, data_name=args.data_name)
        check = ("not checked (onnxruntime is not installed)" if res["max_abs_diff"] is None else
                 f"max |difference| from the model {res['max_abs_diff']:.1e} on {res['checked_on']}")
        print(f"wrote {res['out']}: the {res['kind']} of {res['checkpoint']}, as {res['format']}; {check}")
        if res["max_abs_diff"] is not None and not res["max_abs_diff"] <= 1e-3:
            print(f"statespaces export: error: the exported file differs from the model by {res['max_abs_diff']:.1e} "
                  "(more than 1e-3): do not use it (please report it, with the run's config)", file=sys.stderr)
            return 1
        return 0
    if args.command == "reproduce":
        from .reproduce import CLAIMS, run_claims

        if args.list:
            for c in sorted(CLAIMS.values(), key=lambda c: c.id):
                print(f"{c.id:4s} tier {c.tier}  {c.title}")
            return 0
        ids = args.ids or sorted(c.id for c in CLAIMS.values() if (c.tier == "A" or not args.quick))
        table = Path(args.table)
        figures = Path(args.figures) if args.figures else table.parent / "docs" / "reproduction"
        rows = run_claims(ids, args.quick, Path(args.out), table, figures)
        print(f"wrote {args.table}: {sum(r['passed'] for r in rows)}/{len(rows)} claims pass")
        return 0 if all(r["passed"] for r in rows) else 1
    if args.command == "presets":
        from .train.config import PRESETS, preset_out

        for name, spec in PRESETS.items():
            out = spec.get("trainer", {}).get("out", preset_out(name))
            print(f"{name:22s} -> {out:28s} {json.dumps(spec)}")
        return 0
    return 1


def _evaluate_ensemble(paths: List[str], data_name: Optional[str]) -> int:
    from .train.ensemble import evaluate_ensemble
    from .train.tasks import get_task

    res = evaluate_ensemble(paths, data_name=data_name)
    task = get_task(res["task"])
    for m in res["members"]:
        print(f"{_test_scores(task, m)}  {m['checkpoint']}: {m['selection']}")
    how = {"classification": "mean class probabilities", "lm": "mean next-step probabilities"}.get(res["task"],
                                                                                                    "mean prediction")
    print(f"{_test_scores(task, res)}  ensemble of "
          f"{res['n_members']} ({how}; {res['dataset']}, {res['n_test']} test examples)")
    _print_channels(res)
    return 0


def _test_scores(task: Any, res: Dict[str, Any]) -> str:
    """``test loss L  test accuracy A`` of an evaluation (the loss left out where it is the score: a language
    model's NLL)."""
    loss = "" if task.score_is_loss else f"test loss {res['loss']:.4f}  "
    return f"{loss}test {task.score_label} {task.format_score(res['acc'])}"


def _generate(args) -> int:
    from .models.generate import check_sampling
    from .train.generation import generate_from_checkpoint

    try:
        check_sampling(args.temperature, args.top_k, args.top_p)     # before the checkpoint is loaded
    except (ValueError, TypeError) as e:                             # named as the flags the user typed
        msg = str(e)
        for name in ("temperature", "top_k", "top_p"):
            msg = re.sub(rf"\b{name}\b", "--" + name.replace("_", "-"), msg)
        raise type(e)(msg) from None
    for flag, value, lo in (("--steps", args.steps, 1), ("--prompt", args.prompt, 1), ("--piece", args.piece, 0),
                            ("--n", args.n, 1), ("--seed", args.seed, 0)):
        if value < lo:
            raise ValueError(f"{flag} {value}: allowed: an integer >= {lo}")
    res = generate_from_checkpoint(args.checkpoint, steps=args.steps, prompt_steps=args.prompt, piece=args.piece,
                                   n=args.n, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                   seed=args.seed, out=args.out, data_name=args.data_name)
    shown = [f"{p['piece']}" + (f" ({p['name']})" if p["name"] else "")
             + (f" [whole, {p['prompt_steps']} steps]" if p["prompt_steps"] < args.prompt else "")
             for p in res["prompts"]]
    distinct = len({p["piece"] for p in res["prompts"]})
    prompts = ", ".join(shown[:8]) + (f" and {len(shown) - 8} more" if len(shown) > 8 else "") + (
        f" ({distinct} distinct: --n {len(shown)} cycles through the test split's pieces, so some prompts repeat "
        "with other samples)" if distinct < len(shown) else "")
    print(f"generated {res['n']} x {res['steps']} steps in recurrent mode in {res['seconds']:.1f}s "
          f"({res['steps_per_second']:,.0f} steps/s), after the first {args.prompt} steps of test sequence(s) "
          f"{prompts}; the model's NLL of its samples {res['sample_nll']:.4f} nats/step")
    midi = [p for pair in zip(res["midi"], res.get("reference_midi") or [None] * len(res["midi"])) for p in pair if p]
    for path in (midi if len(midi) <= 8 else midi[:1] + [f"... ({len(midi) - 2} more)"] + midi[-1:]):
        print(f"wrote {path}")
    print(f"wrote {res['tokens']} (tokens) and {res['tokens'][:-len('.npy')]}.json (settings and prompts)")
    return 0


def _print_channels(res: Dict[str, Any], most: int = 16) -> None:
    """A forecast's R^2 per channel (``r2_channels``): all of them up to ``most`` channels, else the range
    and the worst channels; nothing for other tasks."""
    r2 = res.get("r2_channels")
    if not r2:
        return
    if len(r2) <= most:
        print("test R^2 per channel: " + ", ".join(f"{i}: {v:.4f}" for i, v in enumerate(r2)))
        return
    order = sorted((i for i in range(len(r2)) if not math.isnan(r2[i])), key=lambda i: r2[i])
    flat = len(r2) - len(order)
    print(f"test R^2 per channel ({len(r2)} channels): worst " + ", ".join(f"{i}: {r2[i]:.4f}" for i in order[:5])
          + (f"; best {r2[order[-1]]:.4f}" if order else "")
          + (f"; {flat} with constant targets (nan)" if flat else ""))


def layer_call(layer, d_model: int) -> str:
    """The constructor call each block's layer receives, e.g. ``S4D(d_model=64, d_state=64, init='legs', ...)``."""
    from .layers.registry import layer_class

    args = ", ".join(f"{k}={v!r}" for k, v in layer.settings().items())
    return f"{layer_class(layer.kind).__name__}(d_model={d_model}, {args})"


def _earlier_default_folder(cfg, out: str) -> None:
    """Raise when ``--resume`` finds no run in the data's default folder ``out`` but ``runs/digits`` holds a run
    on the same data: versions before 2026-12-07 wrote every run without a preset or ``--trainer.out`` there."""
    from .train.config import TrainConfig, data_out
    from .train.loop import stored_config

    old = TrainConfig().trainer.out
    if out == old or out != data_out(cfg.data.name):
        return
    found = stored_config(old)
    if found is not None and (found[0].get("data") or {}).get("name") == cfg.data.name:
        raise FileNotFoundError(f"--resume: {out} holds no run, but {old} holds a run on {cfg.data.name} (earlier "
                                f"versions wrote runs without a preset there); resume it with --trainer.out {old}")


def _train(args, overrides: List[Tuple[str, str]]) -> int:
    from .train.config import build_config, resume_config
    from .train.loop import stored_config, train
    from .train.tasks import get_task

    cfg = build_config(args.preset, args.config, overrides).validated()
    # under torchrun every process runs this: rank 0 alone speaks (the process group starts later, in train)
    say = print if _speaks() else (lambda *a, **k: None)
    if args.resume:
        out = cfg.trainer.out
        found = stored_config(out)
        if found is None:
            _earlier_default_folder(cfg, out)
            given = [k for k, _ in overrides if k != "trainer.out"]
            if args.preset is None and args.config is None and not given:
                raise FileNotFoundError(f"--resume: {out} holds no run to resume (no checkpoint, no run.json); "
                                        "start one without --resume")
            # train() says "note: ... holds no run yet; starting a new one"
        else:
            stored, source = found
            cfg = resume_config(stored, out, args.preset, args.config, overrides).override("trainer.out", out)
            cfg = cfg.validated()
            say(f"resuming the run in {out} with the config stored in {source}", file=sys.stderr)
    m, t = cfg.model, cfg.trainer
    if m.backbone == "sashimi":
        options = ", ".join(f"{k}={v!r}" for k, v in m.backbone_kwargs.items())
        what = (f"a SaShiMi ({m.n_layers} (SSM, FF) pair(s) per tier{', ' + options if options else ''}) of "
                f"{layer_call(m.layer, m.d_model)} (d_model: the top tier's width)")
    else:
        what = f"{m.n_layers} blocks of {layer_call(m.layer, m.d_model)}"
    banner = f"training {what} on {cfg.data.name} for {t.epochs} epochs -> {t.out}"
    summary = train(cfg, resume=args.resume, progress=not args.no_progress,
                    announce=lambda: say(banner, flush=True))        # once data, model and folder are ready
    if summary:
        task = get_task(summary["task"])
        fmt = task.format_score
        how = summary["selection"]
        epoch = f"epoch {summary['selected_epoch']}"
        chosen = (f"{epoch}, chosen by {how} {fmt(summary['selected_val_acc'])}" if how != "last epoch"
                  else f"{epoch}, the last epoch (no validation split)")
        score = (f"test {task.score_label} {fmt(summary['test_acc'])}" if summary["test_acc"] is not None
                 else f"test split not scored (trainer.test_eval off: `statespaces evaluate {t.out}` scores it)")
        print(
            f"\ndone: {summary['dataset']} {score} for best/ "
            f"({chosen}; test data never used to choose), {summary['params']:,} parameters, "
            f"{summary['train_seconds']:.0f}s training"
            + (f" ({summary['train_seconds_this_run']:.0f}s in this segment)"
               if summary["train_seconds"] - summary["train_seconds_this_run"] > 0.5 else "")
            + f"; checkpoints in {summary['checkpoints']}, "
            + (f"metrics and curves in {t.out}" if (Path(t.out) / "curves.png").is_file()
               else f"metrics in {t.out} (no curves.png: matplotlib is not installed)")
        )
    return 0
