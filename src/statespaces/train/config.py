"""Training configuration: one dataclass, the CLI flags map 1:1 onto its fields."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict


@dataclass
class TrainConfig:
    """Settings of one training run (defaults: the main job, S4D on sequential digits)."""

    task: str = "digits"
    layer: str = "s4d"
    d_model: int = 64
    n_layers: int = 4
    d_state: int = 64
    init: str = "legs"
    dropout: float = 0.1
    norm: str = "layer"
    prenorm: bool = True
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-2
    ssm_lr: float = 1e-3
    weight_decay: float = 0.05
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    seed: int = 0
    out: str = "runs/digits"
    layer_kwargs: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; valid keys: {sorted(names)}")
        return cls(**d)
