"""Diagnostic probe, not part of the library: the two ways our S4D layer differs from the official state-spaces/s4
``FFTConv(mode="diag", init="legs")`` when both sit in the trainer's recipe (``experiments/reference_layer.py``).

With the official ``B`` and ``C`` copied into our layer (conjugated: the official stores ``A`` with negative imaginary
parts) the two kernels agree to 1e-6, so the kernel formulas are the same; what differs is

* ``B`` at init: ours is ``V^* (B_LegS / 2)`` (thesis Thm 6.9, ``hippo.forms.diagonal_init``); the official's is
  ``V^* B_LegS`` with its imaginary part clipped to [-2, 2] (``nplr(..., B_clip=2.0)``), in the gauge its ``eig``
  returns. At N = 16 that is twice ours on the five slowest modes and about 2.0 on the three fastest (ours 5.11,
  1.74, 1.08 there): variant ``b`` sets ``B <- 2 B`` with ``|B|`` clipped at 2, which matches the official
  magnitudes to 0.1% (the phase of ``B`` is immaterial against a complex Gaussian ``C``);
* ``C``'s optimizer group: the official registers ``C`` with the layer's ``lr`` (``lr_dict['C']``), so the reference
  script trains it at ``trainer.ssm_lr`` (1e-3) without weight decay; ours trains it with the linear layers
  (``trainer.lr``, ``trainer.weight_decay``; thesis §7.1): variant ``c`` moves it to the SSM settings.

``bc`` is both, ``none`` neither. Runs ``statespaces train`` with the variant patched into the trainer::

    PROBE=b OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/probes/official_s4d_init.py train --preset ucr \\
        --data.name ucr:ItalyPowerDemand --trainer.val_fraction 0.25 --trainer.seed 0 --trainer.out runs/probe/b-s0

Used in experiments/ucr_tuning.md (twenty-second round).
"""
import os
import sys

import torch

import statespaces.train.loop as loop
from statespaces.cli import main as cli_main
from statespaces.layers import S4D
from statespaces.optim import param_groups as our_param_groups

VARIANT = os.environ.get("PROBE", "none")
if VARIANT not in ("none", "b", "c", "bc"):
    raise SystemExit(f"PROBE={VARIANT!r}: one of none, b, c, bc")
_build = loop.build_model


def build_model(cfg, *args, **kwargs):
    model = _build(cfg, *args, **kwargs)
    if VARIANT in ("b", "bc"):
        for layer in model.modules():
            if isinstance(layer, S4D):
                with torch.no_grad():
                    B = torch.view_as_complex(layer.B.data.double().contiguous()) * 2
                    B = B * torch.clamp(2.0 / B.abs(), max=1.0)
                    layer.B.copy_(torch.view_as_real(B).to(layer.B.dtype))
    return model


def param_groups(model, lr, weight_decay=0.0, ssm_lr=1e-3, ssm_weight_decay=0.0):
    groups = our_param_groups(model, lr=lr, weight_decay=weight_decay, ssm_lr=ssm_lr,
                              ssm_weight_decay=ssm_weight_decay)
    if VARIANT in ("c", "bc"):
        Cs = [layer.C for layer in model.modules() if isinstance(layer, S4D)]
        ids = {id(p) for p in Cs}
        for g in groups:
            g["params"] = [p for p in g["params"] if id(p) not in ids]
        groups.append(dict(name="C", params=Cs, lr=ssm_lr, weight_decay=0.0))
    return [g for g in groups if g["params"]]


loop.build_model = build_model          # type: ignore[assignment]
loop.param_groups = param_groups        # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
