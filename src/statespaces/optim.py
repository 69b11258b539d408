r"""Optimizer parameter groups for SSM models (thesis §7.1, app. G.1).

The state-equation parameters (A, B, dt: "everything in the A/B/Delta part") train with their
own, smaller learning rate (at most 1e-3 in the thesis) and no weight decay; C, D and the
linear layers use the global settings. Biases and normalization parameters get no weight decay.
"""
from __future__ import annotations

from typing import Dict, List, Set

from torch import nn

from .layers.base import SSMLayer


def param_groups(
    model: nn.Module,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    ssm_lr: float = 1e-3,
    ssm_weight_decay: float = 0.0,
) -> List[Dict]:
    """Split ``model``'s trainable parameters into optimizer groups.

    Returns up to three groups (empty ones dropped), each parameter in exactly one:

    * ``"ssm"``: A, B, dt of every :class:`~statespaces.layers.base.SSMLayer`
      (``ssm_parameters()``; ``lr=ssm_lr``, ``weight_decay=ssm_weight_decay``);
    * ``"decay"``: other parameters with 2+ dims: the linear layers' weights and each layer's output
      matrix C (``lr``, ``weight_decay``; C takes the global settings, thesis §7.1);
    * ``"no_decay"``: remaining parameters (1-D ones: biases, norm scales, the skip term D; and any
      tensor marked ``_no_weight_decay``) (``lr``, no weight decay).

    Usage: ``torch.optim.AdamW(param_groups(model, lr=1e-2, weight_decay=0.05))``.
    """
    for name, value in (("lr", lr), ("ssm_lr", ssm_lr)):
        if not (value > 0 and value != float("inf")):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    ssm_ids: Set[int] = set()
    for module in model.modules():
        if isinstance(module, SSMLayer):
            ssm_ids.update(id(p) for p in module.ssm_parameters())
    groups: Dict[str, List[nn.Parameter]] = {"ssm": [], "decay": [], "no_decay": []}
    seen = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in ssm_ids:
            groups["ssm"].append(p)
        elif p.dim() >= 2 and not getattr(p, "_no_weight_decay", False):
            groups["decay"].append(p)
        else:
            groups["no_decay"].append(p)
    settings = {
        "ssm": dict(lr=ssm_lr, weight_decay=ssm_weight_decay),
        "decay": dict(lr=lr, weight_decay=weight_decay),
        "no_decay": dict(lr=lr, weight_decay=0.0),
    }
    return [dict(name=k, params=v, **settings[k]) for k, v in groups.items() if v]
