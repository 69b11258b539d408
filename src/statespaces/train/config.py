"""Training configuration: three sections (model, data, trainer), TOML files, dotted overrides, presets.

    statespaces train --preset digits-s4d --trainer.epochs 5 --model.layer s4
    statespaces train --config my_run.toml --data.name pdigits

A TOML file has the same sections::

    [model]
    layer = "s4d"
    d_model = 64
    [trainer]
    epochs = 10

Unknown sections or keys are errors (never silently ignored).
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Tuple


@dataclass
class ModelConfig:
    layer: str = "s4d"
    d_model: int = 64
    n_layers: int = 4
    d_state: int = 64
    init: str = "legs"
    dropout: float = 0.1
    norm: str = "layer"
    prenorm: bool = True
    mixing: str = "glu"
    pool: str = "mean"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    layer_kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = "digits"
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    epochs: int = 25
    batch_size: int = 64
    lr: float = 1e-2
    ssm_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 0
    grad_clip: float = 0.0
    val_fraction: float = 0.0
    seed: int = 0
    out: str = "runs/digits"
    keep_last: int = 2
    checkpoint_every: int = 0
    amp: bool = False
    device: str = "auto"
    tensorboard: str = "auto"   # "auto": event files in <out>/tensorboard when the package is installed; "on"; "off"


SECTIONS = {"model": ModelConfig, "data": DataConfig, "trainer": TrainerConfig}


@dataclass
class TrainConfig:
    """A whole run: ``model``, ``data`` and ``trainer`` sections (defaults: S4D on sequential digits)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; valid sections: {sorted(SECTIONS)}")
        parts = {}
        for name, klass in SECTIONS.items():
            values = d.get(name, {})
            valid = {f.name for f in fields(klass)}
            bad = set(values) - valid
            if bad:
                raise ValueError(f"unknown keys {sorted(bad)} in [{name}]; valid keys: {sorted(valid)}")
            parts[name] = klass(**values)
        return cls(**parts)

    def override(self, key: str, value: Any) -> "TrainConfig":
        """Return a copy with ``section.key`` set; strings are converted to the field's type."""
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ValueError(f"override {key!r} must look like section.key with section in {sorted(SECTIONS)}")
        klass = SECTIONS[section]
        types = {f.name: f.type for f in fields(klass)}
        if name not in types:
            raise ValueError(f"unknown key {name!r} in [{section}]; valid keys: {sorted(types)}")
        d = self.to_dict()
        d[section][name] = _coerce(key, value, types[name]) if isinstance(value, str) else value
        return TrainConfig.from_dict(d)


def _coerce(key: str, value: str, typ: Any) -> Any:
    typ = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if typ == "bool":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if typ == "int":
            return int(value)
        if typ == "float":
            return float(value)
        if typ.startswith("Dict"):
            out = json.loads(value)
            if not isinstance(out, dict):
                raise ValueError(value)
            return out
        return value
    except ValueError:
        raise ValueError(f"--{key} expects a {typ}, got {value!r}") from None


def load_config_file(path: str) -> Dict[str, Any]:
    """Parse a TOML config file (``tomllib``: data only, no code execution)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from e


#: Named recipes; each is a partial config merged over the defaults.
PRESETS: Dict[str, Dict[str, Any]] = {
    # sequential digits (sklearn 8x8, L=64): the default main job and its layer/ordering variants
    "digits-s4d": {},
    "pdigits-s4d": {"data": {"name": "pdigits"}},
    "digits-s4": {"model": {"layer": "s4"}},
    "digits-linoss": {"model": {"layer": "linoss", "layer_kwargs": {}}, "trainer": {"lr": 3e-3}},
    # UCR/UEA (aeon's .ts files): variable-length multichannel speech features, and motion sensors
    "japanese-vowels-s4d": {"data": {"name": "ucr:JapaneseVowels"},
                            "model": {"d_model": 32, "n_layers": 2}, "trainer": {"epochs": 20, "batch_size": 32}},
    "japanese-vowels-s4": {"data": {"name": "ucr:JapaneseVowels"}, "model": {"layer": "s4", "d_model": 32, "n_layers": 2},
                           "trainer": {"epochs": 20, "batch_size": 32}},
    "japanese-vowels-linoss": {"data": {"name": "ucr:JapaneseVowels"},
                               "model": {"layer": "linoss", "d_model": 32, "n_layers": 2},
                               "trainer": {"epochs": 20, "batch_size": 32, "lr": 3e-3}},
    "basicmotions-s4d": {"data": {"name": "ucr:BasicMotions"}, "model": {"d_model": 32, "n_layers": 2},
                         "trainer": {"epochs": 40, "batch_size": 8}},
    # long-range synthetic tasks generated here (LRA-style), CPU-sized
    "listops-s4d": {"data": {"name": "listops"}, "model": {"d_model": 64, "n_layers": 4, "pool": "mean"},
                    "trainer": {"epochs": 5, "batch_size": 32}},
    "pathfinder-s4d": {"data": {"name": "pathfinder"}, "model": {"d_model": 64, "n_layers": 4},
                       "trainer": {"epochs": 10, "batch_size": 32}},
    # smaller versions that learn within CPU minutes: ListOps of 100..300 tokens (depth <= 6) and
    # Pathfinder 16x16 (L = 256) with solid curves and no distractors; both bidirectional
    "listops-short-s4d": {"data": {"name": "listops", "kwargs": {"n_train": 10000, "n_test": 1000, "min_length": 100,
                                                                 "max_length": 300, "max_depth": 6}},
                          "model": {"d_model": 64, "n_layers": 4, "pool": "mean",
                                    "layer_kwargs": {"bidirectional": True}},
                          "trainer": {"epochs": 20, "batch_size": 32}},
    "pathfinder16-s4d": {"data": {"name": "pathfinder", "kwargs": {"n_train": 10000, "n_test": 1000, "size": 16,
                                                                   "n_distractors": 0, "dash_off": 0}},
                         "model": {"d_model": 64, "n_layers": 4, "dropout": 0.0,
                                   "layer_kwargs": {"bidirectional": True}},
                         "trainer": {"epochs": 10, "batch_size": 64}},
    # sequential / permuted Fashion-MNIST, L = 784 (GPU-sized; Debian's dataset-fashion-mnist)
    "sfmnist-s4d": {"data": {"name": "fashion_mnist"}, "model": {"d_model": 128, "n_layers": 4},
                    "trainer": {"epochs": 20, "batch_size": 64, "lr": 4e-3, "weight_decay": 0.01, "device": "auto"}},
    "psfmnist-s4d": {"data": {"name": "pfashion_mnist"}, "model": {"d_model": 128, "n_layers": 4},
                     "trainer": {"epochs": 20, "batch_size": 64, "lr": 4e-3, "weight_decay": 0.01}},
    "fmnist14-s4d": {"data": {"name": "fashion_mnist14", "kwargs": {"n_train": 10000}}, "trainer": {"epochs": 3}},
}

#: Presets that finish in minutes on a 2-core CPU (the others are meant for a GPU).
CPU_PRESETS = ("digits-s4d", "pdigits-s4d", "digits-s4", "digits-linoss", "japanese-vowels-s4d", "japanese-vowels-s4",
               "japanese-vowels-linoss", "basicmotions-s4d", "listops-s4d", "pathfinder-s4d", "listops-short-s4d", "pathfinder16-s4d",
               "fmnist14-s4d")


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k in SECTIONS else v
    return out


def build_config(preset: str = None, config_file: str = None, overrides: List[Tuple[str, str]] = ()) -> TrainConfig:
    """Defaults <- preset <- config file <- command-line overrides, in that order."""
    d = TrainConfig().to_dict()
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        d = _merge(d, PRESETS[preset])
    if config_file is not None:
        d = _merge(d, load_config_file(config_file))
    cfg = TrainConfig.from_dict(d)
    for key, value in overrides:
        cfg = cfg.override(key, value)
    return cfg
