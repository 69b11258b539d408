"""Training configuration: three sections (model, data, trainer), TOML files, dotted overrides, presets.

    statespaces train --preset digits-s4d --trainer.epochs 5 --model.layer s4
    statespaces train --config my_run.toml --data.name pdigits

A TOML file has the same sections::

    [model]
    layer = "s4d"
    d_model = 64
    [trainer]
    epochs = 10

Unknown sections or keys are errors (never silently ignored), and every value is checked by
type and range when the config is read (:data:`RULES`): a TOML string is never a bool or a
number (``amp = "false"`` is refused), an int field takes integers only (``epochs = 1.5`` is
refused), float fields take integers or floats (finite), and choices are checked against the
names the model accepts. Command-line values are strings and are parsed by the field's type
(``--trainer.amp false``/``no``/``0`` is False). Every failure is a :class:`ConfigError` whose
one-line message names the key, the value found and what is allowed.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple


class ConfigError(ValueError):
    """A config key or value that is not allowed; the message is one line naming the key, the value
    found and what is allowed."""


@dataclass(frozen=True)
class Rule:
    """What one config field accepts: ``kind`` (int, float, bool, str, dict), an optional range
    ``[lo, hi]`` (``lo_open``/``hi_open`` exclude an end), or a function ``choices()`` giving the
    valid names (matched case-insensitively, stored lower-case)."""

    kind: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    choices: Optional[Callable[[], Tuple[str, ...]]] = None
    check: Optional[Callable[[Any], bool]] = None    # extra test for strings (e.g. a device name)
    what: str = ""                                   # description of ``check``

    def allowed(self) -> str:
        """What the field accepts, as ``allowed: ...`` (or ``valid: a, b, c`` for a choice)."""
        return ("valid: " if self.choices is not None else "allowed: ") + self._describe()

    def _describe(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "dict":
            return "a table (TOML) or JSON object with string keys"
        if self.kind == "str":
            if self.choices is not None:
                return ", ".join(self.choices())
            return self.what or "a non-empty string"
        noun = "an integer" if self.kind == "int" else "a finite number"
        if self.lo is not None and self.hi is not None:
            return f"{noun} in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        return noun

    def validate(self, key: str, value: Any) -> Any:
        """Return ``value`` (floats as float, choices lower-cased) or raise :class:`ConfigError`."""
        def bad() -> ConfigError:
            return ConfigError(f"{key}: got {_show(value)}; {self.allowed()}")

        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad()
            return value
        if self.kind == "dict":
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise bad()
            return value
        if self.kind == "str":
            if not isinstance(value, str) or not value.strip():
                raise bad()
            if self.choices is not None:
                if value.lower() not in self.choices():
                    raise bad()
                return value.lower()
            if self.check is not None and not self.check(value):
                raise bad()
            return value
        # numbers: bools are not numbers here, ints take integers only, floats take both (finite)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad()
        if self.kind == "int":
            if not isinstance(value, numbers.Integral):
                raise bad()
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad()
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            raise bad()
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            raise bad()
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


#: Values of ``data.normalize``.
NORMALIZE_MODES = ("global", "series", "none")


def _layers() -> Tuple[str, ...]:
    from ..layers.registry import LAYERS

    return tuple(LAYERS)


def _inits(layer: str) -> Optional[Tuple[str, ...]]:
    """Valid ``model.init`` names for ``layer`` (None: the layer takes no init name)."""
    if layer == "s4d":
        from ..layers.init import S4D_INITS

        return tuple(S4D_INITS)
    if layer == "s4":
        from ..layers.s4 import S4_INITS

        return tuple(S4_INITS)
    return None


def _is_device(name: str) -> bool:
    if name == "auto":
        return True
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


#: The accepted values of every field, by section (``tests/test_train_integrity.py`` fuzzes each).
RULES: Dict[str, Dict[str, Rule]] = {
    "model": {
        "layer": Rule("str", choices=_layers),
        "d_model": Rule("int", lo=1),
        "n_layers": Rule("int", lo=1),
        "d_state": Rule("int", lo=1),
        "init": Rule("str", what="a non-empty string (an S4D or S4 init name, checked with the layer)"),
        "dropout": Rule("float", lo=0, hi=1, hi_open=True),
        "norm": Rule("str", choices=lambda: ("layer", "batch")),
        "prenorm": Rule("bool"),
        "mixing": Rule("str", choices=lambda: ("glu", "linear")),
        "pool": Rule("str", choices=lambda: ("mean", "last")),
        "dt_min": Rule("float", lo=0, lo_open=True),
        "dt_max": Rule("float", lo=0, lo_open=True),
        "layer_kwargs": Rule("dict"),
    },
    "data": {
        "name": Rule("str", what="a dataset name (see statespaces.data.DATASETS), ucr:<Problem>, or a path to a "
                                 "time-series file (<Name>_TRAIN.ts/.tsv/.txt) or a folder holding one"),
        "kwargs": Rule("dict"),
        "normalize": Rule("str", choices=lambda: NORMALIZE_MODES),
    },
    "trainer": {
        "epochs": Rule("int", lo=1),
        "batch_size": Rule("int", lo=1),
        "lr": Rule("float", lo=0, lo_open=True),
        "ssm_lr": Rule("float", lo=0, lo_open=True),
        "weight_decay": Rule("float", lo=0),
        "warmup_steps": Rule("int", lo=0),
        "grad_clip": Rule("float", lo=0),
        "val_fraction": Rule("float", lo=0, hi=1, hi_open=True),
        "seed": Rule("int", lo=0, hi=2**32 - 1),
        "out": Rule("str", what="a non-empty folder path"),
        "keep_last": Rule("int", lo=1),
        "checkpoint_every": Rule("int", lo=0),
        "amp": Rule("bool"),
        "device": Rule("str", check=_is_device, what="auto, cpu, cuda, cuda:N or another torch device name"),
        "tensorboard": Rule("str", choices=lambda: ("auto", "on", "off")),
        "compile": Rule("str", choices=lambda: ("auto", "on", "off")),
    },
}


def _validate_section(section: str, obj: Any) -> None:
    """Check (and normalize in place) every field of one section object, then the cross-field rules."""
    for name, rule in RULES[section].items():
        setattr(obj, name, rule.validate(f"{section}.{name}", getattr(obj, name)))
    if section == "model":
        if obj.dt_min > obj.dt_max:
            raise ConfigError(f"model.dt_min: got {obj.dt_min!r} > model.dt_max = {obj.dt_max!r}; "
                              "allowed: 0 < dt_min <= dt_max")


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

    def __post_init__(self) -> None:
        _validate_section("model", self)


@dataclass
class DataConfig:
    name: str = "digits"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    # "global": the dataset's own normalisation (time-series files: per-channel mean/std of the
    # training split); "series": z-normalise each series (per channel, over its valid steps);
    # "none": raw values (time-series files only)
    normalize: str = "global"

    def __post_init__(self) -> None:
        _validate_section("data", self)


@dataclass
class TrainerConfig:
    epochs: int = 25
    batch_size: int = 64
    lr: float = 1e-2
    ssm_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 0
    grad_clip: float = 0.0
    # held out of the training split (stratified by class, seeded by ``seed``) to choose ``best/``;
    # 0: no validation split, ``best/`` is the last epoch. The test split is never used to select.
    val_fraction: float = 0.1
    seed: int = 0
    out: str = "runs/digits"
    keep_last: int = 2
    checkpoint_every: int = 0
    amp: bool = False
    device: str = "auto"
    tensorboard: str = "auto"   # "auto": event files in <out>/tensorboard when the package is installed; "on"; "off"
    compile: str = "auto"       # torch.compile the training forward: "auto" (models with LinOSS layers), "on", "off"

    def __post_init__(self) -> None:
        _validate_section("trainer", self)


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
        """Build and validate a config from nested dicts (TOML tables); values keep their types (a
        string is never read as a bool or a number here: see :meth:`override` for strings)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a table of sections, got {_show(d)}")
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config sections {sorted(unknown)}; valid sections: {sorted(SECTIONS)}")
        parts = {}
        for name, klass in SECTIONS.items():
            values = d.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"[{name}]: got {_show(values)}; allowed: a table of keys "
                                  f"{', '.join(f.name for f in fields(klass))}")
            valid = {f.name for f in fields(klass)}
            bad = set(values) - valid
            if bad:
                raise ConfigError(f"unknown keys {sorted(bad)} in [{name}]; valid keys: {sorted(valid)}")
            parts[name] = klass(**copy.deepcopy(values))
        return cls(**parts)

    def validated(self) -> "TrainConfig":
        """A checked copy (also catches fields assigned after construction), including the checks
        that need the model code: ``model.init`` must name an init of ``model.layer`` (S4D, S4);
        ``data.name`` must be a dataset name or an existing path (stored as ``ucr:<absolute path>``)."""
        cfg = TrainConfig.from_dict(self.to_dict())
        inits = _inits(cfg.model.layer)
        if inits is not None and cfg.model.init.lower() not in inits:
            raise ConfigError(f"model.init: got {_show(cfg.model.init)} for layer {cfg.model.layer}; valid: "
                              + ", ".join(inits))
        from ..data import canonical_name

        cfg.data.name = canonical_name(cfg.data.name)   # a path is stored resolved: ucr:/abs/path
        return cfg

    def override(self, key: str, value: Any) -> "TrainConfig":
        """Return a copy with ``section.key`` set; strings are parsed by the field's type (command line)."""
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"override {key!r} must look like section.key with section in {sorted(SECTIONS)}")
        klass = SECTIONS[section]
        types = {f.name: f.type for f in fields(klass)}
        if name not in types:
            raise ConfigError(f"unknown key {name!r} in [{section}]; valid keys: {sorted(types)}")
        d = self.to_dict()
        d[section][name] = _coerce(key, value, RULES[section][name]) if isinstance(value, str) else value
        return TrainConfig.from_dict(d)


#: Command-line spellings of a bool (case-insensitive).
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _coerce(key: str, value: str, rule: Rule) -> Any:
    """Parse a command-line string by the field's kind (range checks follow in the section)."""
    typ = rule.kind
    word = value.strip().lower()
    try:
        if typ == "bool":
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise ValueError(value)
        if typ == "int":
            return int(value)
        if typ == "float":
            return float(value)
        if typ == "dict":
            out = json.loads(value)
            if not isinstance(out, dict):
                raise ValueError(value)
            return out
        return value
    except ValueError:
        extra = f" ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})" if typ == "bool" else ""
        raise ConfigError(f"--{key} expects a {typ}, got {value!r}; {rule.allowed()}{extra}") from None


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
        raise ConfigError(f"{path} is not valid TOML: {e}") from e


#: Named recipes; each is a partial config merged over the defaults.
PRESETS: Dict[str, Dict[str, Any]] = {
    # sequential digits (sklearn 8x8, L=64): the default main job and its layer/ordering variants
    "digits-s4d": {},
    "pdigits-s4d": {"data": {"name": "pdigits"}},
    "digits-s4": {"model": {"layer": "s4"}},
    # LinOSS: BatchNorm pre-norm, as the official model (experiments/linoss_fidelity.py: +3 to +4.5 test
    # points over LayerNorm at 500 steps; lr 1e-2 or the ssm_lr group dropped cost 5 points)
    "digits-linoss": {"model": {"layer": "linoss", "norm": "batch", "layer_kwargs": {}}, "trainer": {"lr": 3e-3}},
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


#: Config keys a resumed run may change: where it runs and what it writes, not what it computes.
RESUMABLE = ("trainer.out", "trainer.device", "trainer.tensorboard", "trainer.compile", "trainer.keep_last",
             "trainer.checkpoint_every")


def flat(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``{"section.key": value}`` of a nested config dict."""
    return {f"{s}.{k}": v for s, section in cfg.items() if isinstance(section, dict) for k, v in section.items()}


def config_conflicts(stored: Dict[str, Any], given: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """``{key: (stored value, given value)}`` for every key outside :data:`RESUMABLE` that differs
    (a stored config written before a field existed has that field's default)."""
    try:
        stored = TrainConfig.from_dict(stored).to_dict()
    except ConfigError:
        pass
    a, b = flat(stored), flat(given)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in RESUMABLE and a.get(k) != b.get(k)}


def _get(cfg: "TrainConfig", key: str) -> Any:
    section, name = key.split(".", 1)
    return getattr(getattr(cfg, section), name)


def resume_config(stored: Dict[str, Any], where: str, preset: str = None, config_file: str = None,
                  overrides: List[Tuple[str, str]] = ()) -> TrainConfig:
    """The config of a resumed run: the stored one, with the settings given beside ``--resume``.

    A setting of a :data:`RESUMABLE` key (device, out, tensorboard, ...) is applied; one that would
    change what the run computes (model, data, optimizer, schedule, seed, ...) is a
    :class:`ConfigError` naming each conflicting flag and the stored value. ``where`` names the run
    folder in messages."""
    try:
        cfg = TrainConfig.from_dict(stored)
    except ConfigError as e:
        raise ConfigError(f"--resume: the config stored in {where} is invalid ({e})") from None
    settings: List[Tuple[str, str, Any]] = []
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        settings += [(f"--preset {preset} (sets {k})", k, v) for k, v in flat(PRESETS[preset]).items()]
    if config_file is not None:
        settings += [(f"--config {config_file} (sets {k})", k, v) for k, v in flat(load_config_file(config_file)).items()]
    settings += [(f"--{k} {v}", k, v) for k, v in overrides]
    conflicts = []
    for flag, key, value in settings:
        new = cfg.override(key, value)
        before, after = _get(cfg, key), _get(new, key)
        if key == "data.name":
            from ..data import canonical_name

            before, after = canonical_name(before), canonical_name(after)
        if after == before:
            continue
        if key in RESUMABLE:
            cfg = new
        else:
            conflicts.append(f"{flag} conflicts with the stored run ({key} = {before!r})")
    if conflicts:
        raise ConfigError(f"--resume: {'; '.join(conflicts)} in {where}; drop the flag to continue that run, or "
                          "start a new run in another --trainer.out")
    return cfg


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k in SECTIONS else v
    return out


def preset_out(preset: str) -> str:
    """Default run folder of a preset: ``runs/<preset>``."""
    return f"runs/{preset}"


def build_config(preset: str = None, config_file: str = None, overrides: List[Tuple[str, str]] = ()) -> TrainConfig:
    """Defaults <- preset <- config file <- command-line overrides, in that order, each validated
    (:class:`ConfigError` names the key, the value and what is allowed; a config file's errors
    also name the file). A preset writes to ``runs/<preset>`` unless ``trainer.out`` is given."""
    d = TrainConfig().to_dict()
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        d = _merge(d, PRESETS[preset])
        if "out" not in PRESETS[preset].get("trainer", {}):
            d["trainer"]["out"] = preset_out(preset)
    if config_file is not None:
        d = _merge(d, load_config_file(config_file))
        try:
            cfg = TrainConfig.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{config_file}: {e}") from None
    else:
        cfg = TrainConfig.from_dict(d)
    for key, value in overrides:
        cfg = cfg.override(key, value)
    return cfg
