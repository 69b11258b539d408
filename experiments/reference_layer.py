"""A preset trained with the official state-spaces/s4 layer in place of ours (issue #18 item 7).

The question this answers: is a preset's accuracy target within reach of the *reference* S4D/S4 layer
in the same recipe? Everything but the SSM layer is the trainer's (data, split, bucketing, block,
optimizer groups, schedule, selection, evaluation); each block's layer is replaced by the official
``FFTConv`` (``models/s4/s4.py`` of a state-spaces/s4 checkout, imported unchanged from a user-given
path and never part of this repository) with the preset layer's state size, direction and dt range,
no activation and no dropout inside (the block has its own), channels-last. Its ``lr``-tagged
parameters (A, B, dt: the official ``_optim`` attribute) go to the trainer's SSM group
(``trainer.ssm_lr``, no weight decay), its D to the no-decay group, as ours.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/reference_layer.py --official PATH/s4.py \
        --mode diag --init legs -- train --preset japanese-vowels-s4d --trainer.seed 0 \
        --trainer.out runs/reference/japanese-vowels-s4d-s0 --no-progress

Arguments after ``--`` are a ``statespaces`` command line, run as the CLI runs it (``train`` and
``evaluate``; before training, the run folder gets this script's settings in ``reference.json``, which
``experiments/seeds_table.py`` and ``results_table.py`` refuse, and with which ``evaluate`` through this script
rebuilds the same model). The official code needs ``einops`` (and ``scipy`` for some
inits); its CUDA extension and pykeops are optional. Lightning's one import (``rank_zero_only``) is
supplied here.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

import statespaces.train.loop as loop
from statespaces.blocks import ResidualBlock
from statespaces.cli import main as cli_main
from statespaces.optim import param_groups as our_param_groups

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_peers import load_official  # noqa: E402  (the official s4.py with Lightning's one import supplied)


class OfficialLayer(nn.Module):
    """The official ``FFTConv`` behind our layer contract: (B, L, H) -> (B, L, H), stateless.

    ``dims = 1`` and ``d_model`` are what :class:`~statespaces.blocks.ResidualBlock` reads of a layer.
    """

    dims = 1

    def __init__(self, official: types.ModuleType, d_model: int, d_state: int, bidirectional: bool,
                 mode: str, init: str, dt_min: float, dt_max: float, ssm_lr: float) -> None:
        super().__init__()
        self.d_model = d_model
        self.conv = official.FFTConv(d_model, d_state=d_state, bidirectional=bidirectional, activation=None,
                                     transposed=False, dropout=0.0, mode=mode, init=init, dt_min=dt_min,
                                     dt_max=dt_max, lr=ssm_lr)
        self.conv.D._no_weight_decay = True

    def forward(self, x: torch.Tensor, state: Optional[torch.Tensor] = None, return_state: bool = False,
                rate: float = 1.0) -> torch.Tensor:
        if state is not None or return_state or rate != 1.0:
            raise ValueError("the official layer runs here in convolution mode only (no state, rate 1)")
        y, _ = self.conv(x)
        return y


def install(settings: Dict[str, Any]) -> None:
    """Patch the trainer's model builder and optimizer groups for the official layer."""
    official = load_official(settings["official"])
    build = loop.build_model

    def build_model(cfg, d_input: int, n_classes: int, task: Any = "classification"):
        model = build(cfg, d_input, n_classes, task)
        spec = cfg.model.layer
        for block in model.modules():
            if isinstance(block, ResidualBlock):
                block.layer = OfficialLayer(
                    official, block.layer.d_model, int(getattr(spec, "d_state", 64)),
                    bool(getattr(spec, "bidirectional", False)), settings["mode"], settings["init"],
                    float(getattr(spec, "dt_min", 1e-3)), float(getattr(spec, "dt_max", 1e-1)), cfg.trainer.ssm_lr)
        return model

    def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0, ssm_lr: float = 1e-3,
                     ssm_weight_decay: float = 0.0) -> List[Dict[str, Any]]:
        groups = our_param_groups(model, lr=lr, weight_decay=weight_decay, ssm_lr=ssm_lr,
                                  ssm_weight_decay=ssm_weight_decay)
        tagged = [p for p in model.parameters() if hasattr(p, "_optim")]
        ids = {id(p) for p in tagged}
        for g in groups:
            g["params"] = [p for p in g["params"] if id(p) not in ids]
        groups.append(dict(name="ssm_official", params=tagged, lr=ssm_lr, weight_decay=ssm_weight_decay))
        return [g for g in groups if g["params"]]

    loop.build_model = build_model          # type: ignore[assignment]
    loop.param_groups = param_groups        # type: ignore[assignment]


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit("usage: reference_layer.py --official PATH [--mode diag] [--init legs] -- train|evaluate ...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True, help="path of the official models/s4/s4.py")
    parser.add_argument("--mode", default="diag", help="official kernel: diag (S4D) or dplr (S4)")
    parser.add_argument("--init", default="legs", help="official init (legs: S4D-LegS / S4-LegS)")
    settings = vars(parser.parse_args(argv[:split]))
    command = argv[split + 1:]
    install(settings)
    out = next((command[i + 1] for i, a in enumerate(command[:-1]) if a == "--trainer.out"), None)
    if out is not None and command[:1] == ["train"]:     # first: an interrupted run is marked too
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "reference.json").write_text(json.dumps(settings, indent=1) + "\n")
    return cli_main(command)


if __name__ == "__main__":
    raise SystemExit(main())
