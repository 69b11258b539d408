"""Training configuration: three sections (model, data, trainer), TOML files, dotted overrides, presets.

    statespaces train --preset digits-s4d --trainer.epochs 5 --model.layer s4
    statespaces train --preset digits-s4d --model.layer.kind linoss --model.layer.n_oscillators 32
    statespaces train --config my_run.toml --data.name pdigits

A TOML file has the same sections::

    [model]
    d_model = 64
    [model.layer]
    kind = "s4d"          # or the shorthand  layer = "s4d"  in [model]
    d_state = 64
    init = "legs"
    [trainer]
    epochs = 10

The layer's settings live only in ``[model.layer]``: its keys are those of the kind's config class
(:mod:`statespaces.layers.config`; ``S4DConfig``, ``LinOSSConfig``, ...), so a key the kind does
not take (``init`` for LinOSS) fails when the config is read. Changing the kind keeps the settings
given before that differ from the old kind's defaults (which the new kind must then accept).

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
import re
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from .._config import ConfigError, Rule, _num, _show, did_you_mean  # noqa: F401  (re-exported)
from ..data.augment import from_spec as augmentation_from_spec
from ..layers.config import LayerConfig, layer_config, legacy_layer, merge_layer
from ..models.classifier import POOLS
from .presets import CPU_PRESETS, LM_PRESETS, PRESETS  # noqa: F401  (re-exported)

#: Values of ``data.normalize``.
NORMALIZE_MODES = ("global", "series", "none")
#: Values of ``trainer.test_eval``: score the test split after every epoch, or never during training.
TEST_EVALS = ("epoch", "off")
#: Values of ``trainer.val_split``, the rule that sizes a stratified validation split
#: (:func:`statespaces.train.selection.validation_split`): "stratified" holds out ``round(val_fraction x n)``
#: series in total, shared out over the classes by largest remainder; "per-class-round" rounds each
#: class on its own (the rule before 2026-12-06, kept to reproduce and resume earlier runs).
VAL_SPLITS = ("stratified", "per-class-round")
#: ``trainer.val_split`` of a stored config written before the key existed: the rule that run used.
LEGACY_VAL_SPLIT = "per-class-round"


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
        "layer": Rule("layer", what="a layer kind (s4d, s4, linoss, dlinoss, s5, s4nd) or a table with kind and the "
                                    "layer's settings"),
        "d_model": Rule("int", lo=1),
        "n_layers": Rule("int", lo=1),
        "dropout": Rule("float", lo=0, hi=1, hi_open=True),
        "norm": Rule("str", choices=lambda: ("layer", "batch")),
        "prenorm": Rule("bool"),
        "mixing": Rule("str", choices=lambda: ("glu", "linear")),
        "pool": Rule("str", choices=lambda: POOLS),
        "stem": Rule("int", lo=0),
        "stem_dilations": Rule("int", lo=1, per_axis=True),
        "intervals": Rule("bool"),
        "backbone": Rule("str", choices=lambda: ("flat", "sashimi")),
        "backbone_kwargs": Rule("dict"),
    },
    "data": {
        "name": Rule("str", what="a dataset name (see statespaces.data.DATASETS), ucr:<Problem>, or a path to a "
                                 "time-series file (<Name>_TRAIN.ts/.tsv/.txt/.csv) or a folder holding one"),
        "kwargs": Rule("dict"),
        "normalize": Rule("str", choices=lambda: NORMALIZE_MODES),
        "augment": Rule("dict"),
        "time_channel": Rule("bool"),
    },
    "trainer": {
        "epochs": Rule("int", lo=1),
        "batch_size": Rule("int", lo=1),
        "lr": Rule("float", lo=0, lo_open=True),
        "ssm_lr": Rule("float", lo=0, lo_open=True),
        "weight_decay": Rule("float", lo=0),
        "warmup_steps": Rule("int", lo=0),
        "schedule": Rule("str", choices=lambda: ("cosine", "constant")),
        "grad_clip": Rule("float", lo=0),
        "label_smoothing": Rule("float", lo=0, hi=1, hi_open=True),
        "mixup": Rule("float", lo=0),
        "ema": Rule("float", lo=0, hi=1, hi_open=True),
        "val_fraction": Rule("float", lo=0, hi=1, hi_open=True),
        "val_split": Rule("str", choices=lambda: VAL_SPLITS),
        "test_eval": Rule("str", choices=lambda: TEST_EVALS),
        "min_steps": Rule("int", lo=0),
        "bucket": Rule("bool"),
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
        key, value = f"{section}.{name}", getattr(obj, name)
        # the trainer's models run (B, L, H) sequences: an N-D layer named without dims is its 1-D form
        setattr(obj, name, layer_config(value, key, dims=1) if rule.kind == "layer" else rule.validate(key, value))


def _default_layer() -> LayerConfig:
    return layer_config("s4d")


@dataclass
class ModelConfig:
    """The model: a :class:`~statespaces.models.SequenceClassifier` of ``n_layers`` residual blocks of
    width ``d_model`` around the layer ``layer`` (a :class:`~statespaces.layers.config.LayerConfig`;
    given as a kind, ``{"kind": ..., **settings}`` or a config); for a language-model dataset (task
    ``"lm"``), an :class:`~statespaces.models.SSMLanguageModel` with the backbone ``backbone``."""

    layer: LayerConfig = field(default_factory=_default_layer)
    d_model: int = 64
    n_layers: int = 4
    dropout: float = 0.1
    norm: str = "layer"
    prenorm: bool = True
    mixing: str = "glu"
    pool: str = "mean"
    stem: int = 0                          # kernel size of a convolutional stem (0: a linear encoder)
    stem_dilations: Any = 1                # an int or a list: the stem's dilations (channels split evenly)
    # irregular sampling: the layers step over the intervals of the clock channel (data.time_channel, which carries
    # a .ts file's time stamps: statespaces.models.SequenceClassifier's clock_intervals)
    intervals: bool = False
    # language models (a dataset of task "lm", e.g. chorales): "flat", a stack of n_layers residual blocks, or
    # "sashimi", the multi-scale SaShiMi of thesis ch. 8 with n_layers (SSM, FF) pairs per tier; backbone_kwargs:
    # further arguments of the backbone (SSMStack: ff_expand; SaShiMi: pool, n_pools, expand, ff_expand)
    backbone: str = "flat"
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate_section("model", self)
        if self.intervals and self.stem:
            raise ConfigError("model.intervals: a convolutional stem (model.stem) assumes a regular grid; use one or "
                              "the other")
        if self.stem == 0 and self.stem_dilations != 1:          # would be ignored: no stem to dilate
            raise ConfigError(f"model.stem_dilations: got {_show(self.stem_dilations)} with model.stem 0 (a linear "
                              "encoder, no convolution to dilate); give the stem's kernel size too (--model.stem K), "
                              "or leave stem_dilations at 1")


@dataclass
class DataConfig:
    name: str = "digits"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    # "global": the dataset's own normalisation (time-series files: per-channel mean/std of the
    # training split); "series": z-normalise each series (per channel, over its valid steps);
    # "none": raw values (time-series files only)
    normalize: str = "global"
    # train-time augmentation of float series: {"roll": p, "crop": c, "scale": s, "jitter": j}
    # (statespaces.data.augment.SeriesAugment; the clock of time_channel is left as it is); of token
    # sequences (language models): {"window": W}, random windows of W steps (TokenWindows); {}: none
    augment: Dict[str, Any] = field(default_factory=dict)
    # prepend a time channel t / (L - 1) to every series (statespaces.data.base.with_time_channel)
    time_channel: bool = False

    def __post_init__(self) -> None:
        _validate_section("data", self)
        try:
            augmentation_from_spec(self.augment)
        except ValueError as e:
            raise ConfigError(f"data.augment: got {_show(self.augment)}; {str(e).removeprefix('augment: ')}") from None


@dataclass
class TrainerConfig:
    epochs: int = 25
    batch_size: int = 64
    lr: float = 1e-2
    ssm_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 0
    # learning rate after the warmup: "cosine" decay to 0 at the last step (thesis §7.1) or "constant"
    schedule: str = "cosine"
    grad_clip: float = 0.0
    # classification only: cross-entropy against smoothed targets (1 - eps) onehot + eps / C in training
    # (statespaces.train.tasks.Classification); 0: off
    label_smoothing: float = 0.0
    # classification of float series only: mixup of each training batch with weights Beta(a, a)
    # (statespaces.train.mixup.MixUp); 0: off
    mixup: float = 0.0
    # evaluate and save an exponential moving average of the weights with this decay, updated every step
    # (statespaces.train.averaging.WeightEMA; warm-up min(decay, (1 + n) / (10 + n))); 0: the trained weights
    ema: float = 0.0
    # held out of the training split (stratified by class, seeded by ``seed``) to choose ``best/``;
    # 0: no validation split, ``best/`` is the last epoch. The test split is never used to select.
    val_fraction: float = 0.1
    # how the classes share the held-out series (classification): "stratified", round(val_fraction x n) in
    # total by largest remainder; "per-class-round", each class rounded alone (the rule before 2026-12-06,
    # which could hold out 1 series instead of 5; kept to reproduce earlier runs: VAL_SPLITS)
    val_split: str = "stratified"
    # score the test split after every epoch ("epoch": reported beside the validation score, never used to
    # choose) or not at all during training ("off": blind tuning on a validation split; nothing about the
    # test split is printed or stored; `statespaces evaluate` scores a run's best/ afterwards)
    test_eval: str = "epoch"
    # at least this many optimizer steps: when epochs x batches per pass falls short, each epoch
    # makes several passes over the training split (statespaces.data.sampler.passes_for); 0: one pass
    min_steps: int = 0
    # batches of series of similar length, each cut to its longest series (variable-length data;
    # statespaces.data.sampler.BucketBatchSampler); single process only
    bucket: bool = False
    seed: int = 0
    # run folder; when neither a preset, a config file nor a flag names it: runs/<data> (data_out)
    out: str = "runs/digits"
    keep_last: int = 2
    checkpoint_every: int = 0
    amp: bool = False
    device: str = "auto"
    tensorboard: str = "auto"   # "auto": event files in <out>/tensorboard when the package is installed; "on"; "off"
    # torch.compile the training forward: "auto" (CPU models with a LinOSS layer in mode "scan"), "on", "off"
    compile: str = "auto"

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
        d = asdict(self)
        layer = self.model.layer
        d["model"]["layer"] = layer.to_dict() if isinstance(layer, LayerConfig) else copy.deepcopy(layer)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any], legacy: bool = False) -> "TrainConfig":
        """Build and validate a config from nested dicts (TOML tables); values keep their types (a
        string is never read as a bool or a number here: see :meth:`override` for strings).

        ``legacy=True`` (configs stored by earlier runs) also reads the model section of before the
        layer configs (``d_state``, ``init``, ``dt_min``, ``dt_max``, ``layer_kwargs`` beside
        ``layer``) as the layer that run built (:func:`upgrade_model_section`), and a trainer section
        without ``val_split`` as the validation split that run drew (:data:`LEGACY_VAL_SPLIT`)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a table of sections, got {_show(d)}")
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config sections {sorted(unknown)}; "
                              f"{did_you_mean(sorted(unknown)[0], SECTIONS)}valid sections: {sorted(SECTIONS)}")
        parts = {}
        for name, klass in SECTIONS.items():
            values = d.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"[{name}]: got {_show(values)}; allowed: a table of keys "
                                  f"{', '.join(f.name for f in fields(klass))}")
            if name == "model" and legacy:
                values = upgrade_model_section(values)
            if name == "trainer" and legacy:
                values = upgrade_trainer_section(values)
            valid = {f.name for f in fields(klass)}
            bad = set(values) - valid
            if bad:
                moved = sorted(bad & set(LEGACY_MODEL_KEYS)) if name == "model" else []
                if moved:
                    raise ConfigError(f"model.{moved[0]}: the layer's settings live in [model.layer] now "
                                      f"(--model.layer.{moved[0]}, or [model.layer] {moved[0]} = ... in TOML; "
                                      "layer_kwargs entries go there too); valid keys of [model]: "
                                      f"{sorted(valid)}")
                raise ConfigError(f"unknown keys {sorted(bad)} in [{name}]; "
                                  f"{_other_section(name, sorted(bad)[0], valid)}valid keys: {sorted(valid)}")
            parts[name] = klass(**copy.deepcopy(values))
        return cls(**parts)

    def validated(self) -> "TrainConfig":
        """A checked copy (also catches fields assigned after construction), including the checks
        that need the model code: the layer's constructor must accept ``model.layer`` (e.g. an even
        ``d_state``, :meth:`~statespaces.layers.config.LayerConfig.check`); ``data.name`` must be a
        dataset name or an existing path (stored as ``ucr:<absolute path>``)."""
        cfg = TrainConfig.from_dict(self.to_dict())
        cfg.model.layer.check("model.layer", d_model=cfg.model.d_model)
        from ..data import canonical_name

        cfg.data.name = canonical_name(cfg.data.name)   # a path is stored resolved: ucr:/abs/path
        return cfg

    def override(self, key: str, value: Any) -> "TrainConfig":
        """Return a copy with ``section.key`` set; strings are parsed by the field's type (command line)."""
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            hint = did_you_mean(section, SECTIONS, suffix=f".{name}") if name else ""
            raise ConfigError(f"override {key!r} must look like section.key with section in {sorted(SECTIONS)}"
                              + (f" ({hint.strip()})" if hint else ""))
        d = self.to_dict()
        if section == "model" and name.startswith("layer."):       # one setting of the layer
            setting = name[len("layer."):]
            old = d["model"]["layer"]
            if isinstance(old, str):                                # cfg.model.layer = "s5", as validated() takes
                old = {"kind": old}
            if setting == "kind":
                d["model"]["layer"] = merge_layer(old, {"kind": value})
            else:
                if isinstance(value, str):
                    rule = _layer_rule(old.get("kind"), setting)
                    value = _coerce(key, value, rule) if rule is not None else value
                d["model"]["layer"] = {**old, setting: value}
            return TrainConfig.from_dict(d)
        table, dot, entry = name.partition(".")
        if dot and table in DICT_FIELDS.get(section, ()):          # one entry of a table: merged into it
            if not entry or "." in entry:
                raise ConfigError(f"--{key}: expected --{section}.{table}.NAME VALUE with one NAME, e.g. "
                                  f"--{section}.{table}.{DICT_FIELDS[section][table]} ...")
            if isinstance(value, str):                           # 2048 -> int, true -> bool; else the string
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            d[section][table] = {**(d[section].get(table) or {}), entry: value}
            return TrainConfig.from_dict(d)
        klass = SECTIONS[section]
        types = {f.name: f.type for f in fields(klass)}
        if name not in types:
            if section == "model" and name in LEGACY_MODEL_KEYS:
                raise ConfigError(f"--model.{name}: the layer's settings live in model.layer now; use "
                                  f"--model.layer.{name} (if the layer kind takes it)")
            raise ConfigError(f"unknown key {name!r} in [{section}]; {_other_section(section, name, types)}"
                              f"valid keys: {sorted(types)}")
        if section == "model" and name == "layer":
            if isinstance(value, str) and value.strip().startswith("{"):      # a JSON table on the command line
                try:
                    value = json.loads(value)
                except ValueError:
                    raise ConfigError(f"--model.layer: got {value!r}, not valid JSON; allowed: a layer kind or a "
                                      'JSON table like {"kind": "s4d", "d_state": 32}') from None
            d["model"]["layer"] = merge_layer(d["model"]["layer"], value)
        else:
            d[section][name] = _coerce(key, value, RULES[section][name]) if isinstance(value, str) else value
        return TrainConfig.from_dict(d)


def _other_section(section: str, key: str, valid: Any) -> str:
    """The hint for an unknown key of ``[section]``: the section it belongs to (``trainer.dropout`` is
    ``model.dropout``), else a close spelling among ``valid``."""
    owners = [s for s, klass in SECTIONS.items() if s != section and key in {f.name for f in fields(klass)}]
    if owners:
        return f"{key} is a key of [{owners[0]}] (--{owners[0]}.{key}); "
    return did_you_mean(key, valid, section + ".")


#: The table fields whose entries ``override`` sets one at a time (``--data.kwargs.max_length 2048``: the rest of
#: the table, e.g. a preset's, is kept), with an example entry of each for messages.
DICT_FIELDS: Dict[str, Dict[str, str]] = {"data": {"kwargs": "max_length", "augment": "roll"},
                                          "model": {"backbone_kwargs": "n_pools"}}


#: Keys of [model] from before the layer configs (now settings of [model.layer]).
LEGACY_MODEL_KEYS = ("d_state", "init", "dt_min", "dt_max", "layer_kwargs")


def upgrade_model_section(model: Dict[str, Any]) -> Dict[str, Any]:
    """A stored [model] section of before the layer configs -> today's, building the same layer:
    ``d_state`` went to every layer (LinOSS/DLinOSS: as ``n_oscillators``), ``init``/``dt_min``/
    ``dt_max`` to S4D and S4 only (the old trainer dropped them for the others), then
    ``layer_kwargs`` over them. A section of today's form is returned unchanged."""
    if not any(k in model for k in LEGACY_MODEL_KEYS) or not isinstance(model.get("layer", "s4d"), str):
        return model
    model = dict(model)
    kind = model.pop("layer", "s4d")
    kwargs: Dict[str, Any] = {"d_state": model.pop("d_state", 64)}
    shared = {"init": model.pop("init", "legs"), "dt_min": model.pop("dt_min", 1e-3),
              "dt_max": model.pop("dt_max", 1e-1)}
    if str(kind).lower() in ("s4d", "s4"):
        kwargs.update(shared)
    kwargs.update(model.pop("layer_kwargs", None) or {})
    model["layer"] = legacy_layer(kind, kwargs)
    return model


def upgrade_trainer_section(trainer: Dict[str, Any]) -> Dict[str, Any]:
    """A stored [trainer] section of before ``val_split`` -> today's, drawing the same validation split: the
    per-class rounding of that time (:data:`LEGACY_VAL_SPLIT`), not today's default. Resume is exact, so a
    resumed run must hold out the series it held out before."""
    if "val_split" in trainer:
        return trainer
    return {**trainer, "val_split": LEGACY_VAL_SPLIT}


def _layer_rule(kind: Any, setting: str) -> Optional[Rule]:
    """The rule of ``setting`` in layer ``kind`` (None if either is unknown: reading the config says so)."""
    from ..layers.registry import LAYERS, config_class

    if not isinstance(kind, str) or kind.lower() not in LAYERS:
        return None
    for f in fields(config_class(kind)):
        if f.name == setting:
            return f.metadata["rule"]
    return None


#: Command-line spellings of a bool (case-insensitive).
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _coerce(key: str, value: str, rule: Rule) -> Any:
    """Parse a command-line string by the field's kind (range checks follow in the section)."""
    typ = rule.kind
    word = value.strip().lower()
    if rule.nullable and word in ("none", "null"):
        return None
    if rule.per_axis and word.startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            raise ConfigError(
                f"--{key} expects a JSON list like [true, false], got {value!r}; {rule.allowed()}") from None
        return items                   # JSON values keep their types; the rule checks them
    try:
        if typ == "bool":
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            if rule.choices is not None:
                return value           # a name (e.g. bidirectional = concat), checked by the rule
            raise ValueError(value)
        if typ == "int":
            try:
                return int(value)
            except ValueError:                 # 1e3 or 2.0: an integer written as a float, taken when exact
                number = float(value)
                if not number.is_integer() or abs(number) >= 2 ** 53:
                    raise
                return int(number)
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
        what = {"int": "an integer", "float": "a number", "bool": "a boolean",
                "dict": "a JSON object"}.get(typ, f"a {typ}")
        raise ConfigError(f"--{key} expects {what}, got {value!r}; {rule.allowed()}{extra}") from None


def load_config_file(path: str) -> Dict[str, Any]:
    """Parse a config file: TOML (``tomllib``: data only, no code execution), or JSON for a ``.json`` file, e.g. a
    run's own ``run.json`` (its ``config`` table is read; JSON has the nulls TOML lacks, e.g. a layer's
    ``"seed": null``). A run folder given instead of its ``run.json`` is named as such."""
    p = Path(path)
    if not p.is_file():
        if p.is_dir() and (p / "run.json").is_file():
            raise FileNotFoundError(f"config file {path} is a run folder; its config is {p / 'run.json'} (--config "
                                    f"{p / 'run.json'}), or continue that run with --trainer.out {path} --resume")
        raise FileNotFoundError(f"config file {path} is a folder, not a file; give a .toml or .json file"
                                if p.is_dir() else f"config file {path} does not exist")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        if isinstance(data, dict) and isinstance(data.get("config"), dict) and "run_id" in data:
            data = data["config"]                                 # a run's run.json
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object with model, data, trainer tables")
        return data
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        # tomli ships types but is only installed on Python 3.10, where mypy (targeting 3.10) may not find it
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e


#: Config keys a resumed run may change: where it runs and what it writes, not what it computes
#: (``trainer.compile`` computes the same function, but draws dropout masks from another stream: a warning says so;
#: ``trainer.val_split`` is not one: it decides which series are trained on; nor ``trainer.test_eval``: switched
#: on resume, a run's metrics and summary held test figures for some epochs under ``test_eval = "off"``).
RESUMABLE = ("trainer.out", "trainer.device", "trainer.tensorboard", "trainer.compile", "trainer.keep_last",
             "trainer.checkpoint_every")


def flat(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``{"section.key": value}`` of a nested config dict; the layer table gives ``model.layer.kind``,
    ``model.layer.<setting>`` (a bare kind string stays ``model.layer``)."""
    out: Dict[str, Any] = {}
    for s, section in cfg.items():
        if not isinstance(section, dict):
            continue
        for k, v in section.items():
            if s == "model" and k == "layer" and isinstance(v, dict):
                out.update({f"model.layer.{kk}": vv for kk, vv in v.items()})
            else:
                out[f"{s}.{k}"] = v
    return out


def config_conflicts(stored: Dict[str, Any], given: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """``{key: (stored value, given value)}`` for every key outside :data:`RESUMABLE` that differs
    (a stored config written before a field existed has that field's default, except ``trainer.val_split``:
    the rule of that time, :func:`upgrade_trainer_section`)."""
    try:
        stored = TrainConfig.from_dict(stored, legacy=True).to_dict()
    except ConfigError:
        pass
    a, b = flat(stored), flat(given)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in RESUMABLE and a.get(k) != b.get(k)}


def _get(cfg: "TrainConfig", key: str) -> Any:
    section, name = key.split(".", 1)
    if section == "model" and (name == "layer" or name.startswith("layer.")):
        layer = cfg.model.layer.to_dict()
        return layer if name == "layer" else layer.get(name[len("layer."):])
    if section == "data" and name.startswith("kwargs."):
        return cfg.data.kwargs.get(name[len("kwargs."):])
    if section == "data" and name == "name":
        from ..data import canonical_name

        return canonical_name(cfg.data.name)        # a path and its resolved spelling are the same data
    return getattr(getattr(cfg, section), name)


def _setting_key(key: str, value: Any) -> str:
    """The key a setting is compared under: a bare layer kind (``layer = "s4"``) is ``model.layer.kind``."""
    bare_kind = isinstance(value, str) and not value.lstrip().startswith("{")     # not a JSON table
    return "model.layer.kind" if key == "model.layer" and bare_kind else key


def _set_keys(preset: Optional[str], config_file: Optional[str],
              overrides: Sequence[Tuple[str, str]]) -> Dict[str, str]:
    """``{key: flag}`` of every key a preset, a config file and the overrides set, each named by the last
    source that sets it (``--k v``, else ``--config FILE (sets k)``, else ``--preset P (sets k)``)."""
    flags: Dict[str, str] = {}
    if preset is not None:
        flags.update({_setting_key(k, v): f"--preset {preset} (sets {_setting_key(k, v)})"
                      for k, v in flat(PRESETS[preset]).items()})
    if config_file is not None:
        flags.update({_setting_key(k, v): f"--config {config_file} (sets {_setting_key(k, v)})"
                      for k, v in flat(load_config_file(config_file)).items()})
    flags.update({_setting_key(k, v): f"--{k} {v}" for k, v in overrides})
    return flags


def resume_config(stored: Dict[str, Any], where: str, preset: Optional[str] = None,
                  config_file: Optional[str] = None,
                  overrides: Sequence[Tuple[str, str]] = ()) -> TrainConfig:
    """The config of a resumed run: the stored one, with the settings given beside ``--resume``.

    The preset, config file and overrides are first combined as a new run would combine them
    (:func:`build_config`), so the command that started the run, repeated with ``--resume``,
    continues it (an override undoing a preset's value included). Then only the final values of the
    keys those sources set are compared with the stored run: a :data:`RESUMABLE` key (device, out,
    tensorboard, ...) is applied; one that would change what the run computes (model, data,
    optimizer, schedule, seed, ...) is a :class:`ConfigError` naming each conflicting flag and the
    stored value. ``where`` names the run folder in messages."""
    try:
        cfg = TrainConfig.from_dict(stored, legacy=True)
    except ConfigError as e:
        raise ConfigError(f"--resume: the config stored in {where} is invalid ({e})") from None
    given = build_config(preset, config_file, overrides)       # refuses an unknown preset
    conflicts = []
    for key, flag in _set_keys(preset, config_file, overrides).items():
        before, after = _get(cfg, key), _get(given, key)
        if after == before:
            continue
        if key in RESUMABLE:
            cfg = cfg.override(key, after)
            if key == "trainer.compile" and cfg.model.dropout > 0:
                warnings.warn(f"--resume with {flag}: trainer.compile was {before!r}; compiled and eager code draw "
                              "dropout masks from different random streams, so the run goes on but is no longer "
                              "bit-identical to one that never stopped (with model.dropout 0 it would be)",
                              stacklevel=2)
        else:
            conflicts.append(f"{flag} conflicts with the stored run ({key} = {before!r})")
    if conflicts:
        raise ConfigError(f"--resume: {'; '.join(conflicts)} in {where}; drop the flag to continue that run, or "
                          "start a new run in another --trainer.out")
    return cfg


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """``extra`` (a preset or a file) over ``base``, section by section; a layer table or kind is
    applied with :func:`~statespaces.layers.config.merge_layer`."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if k in SECTIONS and isinstance(v, dict) and isinstance(out.get(k), dict):
            section = out[k]
            for kk, vv in v.items():
                if k == "model" and kk == "layer" and "layer" in section:
                    section[kk] = merge_layer(section[kk], copy.deepcopy(vv))
                else:
                    section[kk] = copy.deepcopy(vv)
        else:
            out[k] = copy.deepcopy(v)
    return out


def preset_out(preset: str) -> str:
    """Default run folder of a preset: ``runs/<preset>``."""
    return f"runs/{preset}"


def data_out(name: str) -> str:
    """Default run folder of a run that names no preset and no ``trainer.out``: ``runs/<data>``, e.g.
    ``runs/digits`` (the default data), ``runs/ucr-GunPoint`` for ``ucr:GunPoint``, ``runs/GunPoint`` for a path
    ``.../GunPoint_TRAIN.ts`` and ``runs/tokens-mine`` for ``tokens:.../mine.npz`` (a file's stem, less a
    ``_TRAIN``/``_TEST`` suffix; each run of characters other than ASCII letters, digits, ``.``, ``_`` and ``-``
    becomes one ``-``)."""
    prefix, sep, rest = name.partition(":")
    if not sep or len(prefix) == 1:                # no prefix, or a Windows drive letter
        prefix, rest = "", name
    path = Path(rest)
    stem = path.name if path.suffix == "" else path.stem
    for suffix in ("_TRAIN", "_TEST"):
        if stem.upper().endswith(suffix) and len(stem) > len(suffix):
            stem = stem[:-len(suffix)]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(p for p in (prefix, stem) if p))
    return f"runs/{re.sub(r'-{2,}', '-', slug).strip('.-') or 'data'}"


def build_config(preset: Optional[str] = None, config_file: Optional[str] = None,
                 overrides: Sequence[Tuple[str, str]] = ()) -> TrainConfig:
    """Defaults <- preset <- config file <- command-line overrides, in that order, each validated
    (:class:`ConfigError` names the key, the value and what is allowed; a config file's errors
    also name the file). A preset writes to ``runs/<preset>`` unless ``trainer.out`` is given; a run without
    a preset to ``runs/<data>`` (:func:`data_out`)."""
    d = TrainConfig().to_dict()
    out_given = preset is not None or any(key == "trainer.out" for key, _ in overrides)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; {did_you_mean(preset.lower(), PRESETS)}valid presets: "
                              f"{', '.join(PRESETS)}")
        d = _merge(d, PRESETS[preset])
        if "out" not in PRESETS[preset].get("trainer", {}):
            d["trainer"]["out"] = preset_out(preset)
    if config_file is not None:
        file_config = load_config_file(config_file)
        out_given = out_given or "out" in (file_config.get("trainer") or {})
        d = _merge(d, file_config)
        try:
            cfg = TrainConfig.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{config_file}: {e}") from None
    else:
        cfg = TrainConfig.from_dict(d)
    for key, value in overrides:
        cfg = cfg.override(key, value)
    if not out_given:
        cfg = cfg.override("trainer.out", data_out(cfg.data.name))
    return cfg
