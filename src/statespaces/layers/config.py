"""One typed, frozen config per layer kind: what a layer is built from, in Python, TOML and on the CLI.

Each layer module defines its config beside the layer (``S4DConfig`` in :mod:`.s4d`, ...), and
:mod:`.registry` maps a kind (``"s4d"``) to (layer class, config class). A config holds every
constructor argument of its layer except the width ``d_model``, with the constructor's defaults;
``config.build(d_model)`` makes the layer. In a training config the model section takes::

    [model.layer]
    kind = "linoss"
    n_oscillators = 32

or ``--model.layer.kind linoss --model.layer.n_oscillators 32`` (``--model.layer s4`` is short for
the kind with its defaults). A key the kind does not take, or a value of the wrong type or range,
fails when the config is read (:class:`~statespaces._config.ConfigError` naming the key, the kind
and the keys it takes); constraints between settings (an even ``d_state``, ``alpha`` exactly with
``discretization="gbt"``) are the constructor's and are checked by :meth:`LayerConfig.check`.
"""
from __future__ import annotations

import importlib
import inspect
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Type, Union

import torch
from torch import nn

from .._checks import check_int
from .._config import ConfigError, Rule, _show, did_you_mean

#: What a model's ``layer`` argument may be: a kind, a config, or a mapping ``{"kind": ..., **settings}``.
LayerSpec = Union[str, "LayerConfig", Mapping[str, Any]]


def setting(default: Any, kind: str, doc: str = "", **rule: Any) -> Any:
    """A config field: its default, its :class:`Rule` (``kind``, ``lo``, ``choices``, ``nullable``, ...)
    and a one-line description (``doc``, shown by :func:`describe`)."""
    return field(default=default, metadata={"rule": Rule(kind, **rule), "doc": doc})


#: Seed offset between the layers of a model built from one seeded config (:meth:`LayerConfig.build`): wider than
#: the offsets a layer gives its own parts (S4ND: one per axis and one for its skip; LinOSS ``"concat"``: + 1).
BLOCK_SEED_STRIDE = 16


@dataclass(frozen=True)
class LayerConfig:
    """Base of the layer configs: validation of every field by its rule, ``build``, JSON form."""

    kind: ClassVar[str] = ""
    #: keys that moved to another name in this kind: old name -> what to use instead
    renamed: ClassVar[Dict[str, str]] = {}

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _rule(type(self), f).validate(f"{self.kind}.{f.name}", getattr(self, f.name))
            object.__setattr__(self, f.name, value)

    # ---- views ----------------------------------------------------------------------------------
    def settings(self) -> Dict[str, Any]:
        """The constructor's keyword arguments (everything but ``d_model``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> Dict[str, Any]:
        """JSON/TOML data: ``{"kind": ..., **settings}`` (tuples as lists)."""
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.settings().items()}}

    def replace(self, **changes: Any) -> "LayerConfig":
        """A copy with some settings changed (checked like :func:`layer_config`)."""
        return layer_config({**self.to_dict(), **changes})

    def check_saveable(self, where: str = "layer") -> None:
        """Raise ``TypeError`` unless this kind is registered: a model saved with it could not be rebuilt from its
        ``config.json`` (called by ``save_pretrained``)."""
        if self.kind not in LAYERS:
            raise TypeError(f"{where} is a layer of kind {self.kind!r}, which is not registered, so a saved model "
                            "could not be rebuilt from config.json; register it with "
                            "statespaces.layers.register_layer (in every process that loads it)")

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    # ---- layers ---------------------------------------------------------------------------------
    def build(self, d_model: int, block: int = 0) -> nn.Module:
        """The layer of this config with ``d_model`` channels (fresh parameters).

        ``block``: the layer's index in a model. With a ``seed`` set, block i is seeded with
        ``seed + BLOCK_SEED_STRIDE * i``, so a model's layers differ from one another and the model is reproducible
        (block 0 is the layer ``seed`` alone builds); without one, every layer draws from the global RNG."""
        settings = self.settings()
        seed = settings.get("seed")
        if block and seed is not None:
            settings["seed"] = seed + BLOCK_SEED_STRIDE * check_int("block", block, 0)
        return layer_class(self.kind)(d_model, **settings)

    def check(self, where: str = "layer", d_model: int = 1) -> "LayerConfig":
        """Raise :class:`ConfigError` if the layer's constructor refuses these settings (checks
        between settings, and against the model's width ``d_model``, e.g. ``n_ssm`` dividing it); builds the layer
        without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            try:
                self.build(d_model)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{where} (kind {self.kind!r}): {' '.join(str(e).split())}") from None
        return self


def _rule(cls: type, f: Any) -> Rule:
    """The validation rule of a config field, declared by :func:`setting`."""
    rule = f.metadata.get("rule")
    if rule is None:
        raise TypeError(f"{cls.__name__}.{f.name}: every field of a LayerConfig is declared with setting(default, "
                        "kind, doc, ...) (statespaces.layers.config.setting), which gives it the rule that checks it")
    return rule


#: kind -> (module, layer class, config class): names, imported on first use (the modules import this one), or the
#: classes themselves for kinds added by :func:`register_layer`.
LAYERS: Dict[str, Tuple[Any, Any, Any]] = {
    "s4d": ("statespaces.layers.s4d", "S4D", "S4DConfig"),
    "s4": ("statespaces.layers.s4", "S4", "S4Config"),
    "linoss": ("statespaces.layers.linoss", "LinOSS", "LinOSSConfig"),
    "dlinoss": ("statespaces.layers.dlinoss", "DLinOSS", "DLinOSSConfig"),
    "s4nd": ("statespaces.layers.s4nd", "S4ND", "S4NDConfig"),
    "s5": ("statespaces.layers.s5", "S5", "S5Config"),
}


def _kinds() -> Tuple[str, ...]:
    return tuple(LAYERS)


def _entry(kind: str) -> Tuple[type, Type[LayerConfig]]:
    if not isinstance(kind, str) or kind.lower() not in LAYERS:
        raise ConfigError(f"unknown layer kind {kind!r}; {did_you_mean(kind, LAYERS)}valid: {', '.join(LAYERS)} "
                          "(a layer of your own: "
                          "statespaces.layers.register_layer, in every process that builds or loads it)")
    module, layer, config = LAYERS[kind.lower()]
    if isinstance(layer, type):                       # registered by register_layer
        return layer, config
    mod = importlib.import_module(module)
    return getattr(mod, layer), getattr(mod, config)


def register_layer(kind: str, layer: type, config: Type["LayerConfig"]) -> None:
    """Make a layer of your own a kind that models, the trainer and saved models know.

    ``layer``: a subclass of :class:`~statespaces.layers.base.SSMLayer` (or
    :class:`~statespaces.layers.base.DiagonalSSM`) built as ``layer(d_model, **settings)``; ``config``: a frozen
    dataclass subclass of :class:`LayerConfig` with ``kind = kind`` whose fields, each declared with
    :func:`setting`, are those settings. Then ``SequenceClassifier(..., layer=kind)``, ``{"kind": kind, ...}``,
    the trainer's ``model.layer`` and ``save_pretrained`` / ``load_pretrained`` take it. A process that loads
    such a model (or runs ``statespaces evaluate`` on its run) must register the kind first; the command line
    sees it only when the module that registers it is imported before ``statespaces.cli.main`` runs.
    Registering a kind again with the same classes changes nothing; a taken kind or class name raises
    ``ValueError``."""
    from ..serialization import REGISTRY, Pretrained

    if not isinstance(kind, str) or not kind.isidentifier() or kind != kind.lower():
        raise ValueError(f"register_layer: kind must be a lower-case identifier, got {kind!r}")
    from .base import SSMLayer

    if not (isinstance(layer, type) and issubclass(layer, SSMLayer)):
        raise TypeError(f"register_layer: layer must be a subclass of statespaces.layers.SSMLayer (or DiagonalSSM), "
                        f"got {layer!r}")
    if not (isinstance(config, type) and issubclass(config, LayerConfig)):
        raise TypeError(f"register_layer: config must be a LayerConfig subclass, got {config!r}")
    if config.kind != kind:
        raise ValueError(f"register_layer: {config.__name__}.kind is {config.kind!r}, not {kind!r}; set "
                         f"kind: ClassVar[str] = {kind!r} on it")
    for f in fields(config):
        _rule(config, f)
    if kind in LAYERS:
        try:
            same = _entry(kind) == (layer, config)
        except (ImportError, AttributeError):
            same = False
        if not same:
            raise ValueError(f"register_layer: kind {kind!r} is taken ({LAYERS[kind][1]}); choose another name")
        return
    added = False
    if issubclass(layer, Pretrained):
        taken = REGISTRY.get(layer.__name__)
        if taken is not None and taken is not layer:
            raise ValueError(f"register_layer: the class name {layer.__name__!r} is taken by {taken.__module__}."
                             f"{taken.__qualname__} (saved models name classes); rename your class")
        added = taken is None
        REGISTRY[layer.__name__] = layer
    LAYERS[kind] = (layer.__module__, layer, config)
    try:            # checked now, not at first use: the defaults pass their own rules, the constructor takes them
        defaults = config()
        params = inspect.signature(layer.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            lacking = [k for k in defaults.settings() if k not in params]
            if lacking:
                raise TypeError(f"{layer.__name__}.__init__ takes no {', '.join(lacking)}")
    except Exception as e:
        del LAYERS[kind]
        if added:
            del REGISTRY[layer.__name__]
        raise ValueError(f"register_layer({kind!r}): {config.__name__} does not fit {layer.__name__}: "
                         f"{type(e).__name__}: {' '.join(str(e).split())}") from None


def layer_class(kind: str) -> type:
    """The layer class of ``kind``."""
    return _entry(kind)[0]


def layer_config(value: LayerSpec, where: str = "layer", dims: Optional[int] = None) -> LayerConfig:
    """A :class:`LayerConfig` from a config, a kind (``"s4d"``: its defaults) or a mapping
    ``{"kind": "s4d", "d_state": 32}``. Unknown keys and bad values raise :class:`ConfigError`
    naming the key (``where.key``), the kind, and the keys the kind takes. ``dims``: the default of an N-D
    layer's ``dims`` where the value does not set it (1 in sequence models: ``"s4nd"`` is then its 1-D form)."""
    if isinstance(value, LayerConfig):
        return value
    if isinstance(value, str):
        kind, given = value, {}
    elif isinstance(value, Mapping):
        given = dict(value)
        if "kind" not in given:
            raise ConfigError(f"{where}: got a table without 'kind'; allowed: kind = one of {', '.join(_kinds())} "
                              "and that layer's settings")
        kind = given.pop("kind")
    else:
        raise ConfigError(f"{where}: got {_show(value)}; allowed: a layer kind ({', '.join(_kinds())}) or a table "
                          "with kind and the layer's settings")
    try:
        kind = Rule("str", choices=_kinds).validate(f"{where}.kind" if isinstance(value, Mapping) else where, kind)
    except ConfigError as e:
        if not (isinstance(kind, str) and kind.strip()):
            raise
        raise ConfigError(f"{e} (a layer of your own: statespaces.layers.register_layer, in every process that "
                          "builds or loads it)") from None
    cls = config_class(kind)
    rules = {f.name: _rule(cls, f) for f in fields(cls)}
    if dims is not None and "dims" in rules and "dims" not in given:
        given["dims"] = dims
    for key in given:
        if key not in rules:
            hint = _elsewhere(cls, key)
            close = "" if hint else did_you_mean(key, rules, where + ".")
            raise ConfigError(f"{where}.{key}: not a setting of layer kind {kind!r}{hint}; {close}{kind} takes: "
                              f"{', '.join(rules)}")
    return cls(**{k: rules[k].validate(f"{where}.{k}", v) for k, v in given.items()})


def _elsewhere(cls: Type[LayerConfig], key: str) -> str:
    """Where a setting that ``cls`` does not take belongs: its new name, or the kinds that take it (a close
    spelling among ``cls``'s own settings would mislead: D-LinOSS's ``dt_min`` is not its ``r_min``)."""
    if key in cls.renamed:
        return f" (use {cls.renamed[key]})"
    kinds = []
    for other in LAYERS:
        try:
            if key in config_class(other).keys():
                kinds.append(other)
        except ConfigError:          # a registered kind whose module does not import: not a place to point to
            continue
    return f" (a setting of {', '.join(kinds)})" if kinds else ""


def sequence_layer(value: LayerSpec, where: str = "layer") -> LayerConfig:
    """:func:`layer_config` for models of 1-D sequences (B, L, H): an N-D layer must have ``dims=1`` (its
    default here when ``value`` is a kind or a table without ``dims``)."""
    spec = layer_config(value, where, dims=1)
    dims = getattr(spec, "dims", 1)
    if dims != 1:
        raise ValueError(f"{where}: a sequence model runs (B, L, H) inputs, so an {spec.kind} layer needs dims=1, "
                         f"got dims={dims}: set dims=1 (statespaces train: --model.layer.dims 1); images and "
                         "video: statespaces.models.image.ImageClassifier")
    return spec


def config_class(kind: str) -> Type[LayerConfig]:
    """The config class of a registered layer kind."""
    return _entry(kind)[1]


def state_key(kind: str) -> str:
    """The setting that sizes a layer kind's state: ``"d_state"``, or ``"n_oscillators"`` for a kind without one (the
    LinOSS family, whose state is P oscillators of two components each)."""
    return "d_state" if "d_state" in {f.name for f in fields(config_class(kind))} else "n_oscillators"


def merge_layer(old: Union[LayerSpec, None], new: Any) -> Any:
    """Layer settings ``new`` applied over ``old`` (both kinds, mappings or configs), as a mapping
    (``new`` itself if it is not a layer spec or names an unknown kind: reading it reports that).

    Without a ``kind`` (or with the same kind) ``new`` updates ``old``. With another kind, the
    settings of ``old`` that differ from its kind's defaults and that the new kind also takes are
    carried over, then ``new``'s, so ``--model.layer.d_state 32 --model.layer s4`` is an S4 with
    d_state 32 and ``--preset uea --model.layer.kind linoss`` a bidirectional LinOSS (the preset's
    S4D ``d_state`` is no LinOSS setting). The settings left behind are named in a
    :class:`UserWarning`; a setting of ``new`` the kind does not take still fails when read.
    """
    if not _mappable(new) or (old is not None and not _mappable(old)):
        return new                      # not a layer spec: reading the result names the bad value
    base = _as_mapping(old) if old is not None else {}
    extra = _as_mapping(new)
    kind = extra.get("kind", base.get("kind"))
    if kind is None or base.get("kind") in (None, kind):
        return {**base, **extra}
    if isinstance(new, str) and kind.lower() not in _kinds():
        return new                      # an unknown kind: reported as given when the result is read
    carried = {"kind": kind}
    try:
        defaults = config_class(base["kind"])().to_dict()
    except ConfigError:
        defaults = {}
    try:
        cls = config_class(kind)
        rules: Optional[Dict[str, Rule]] = {f.name: _rule(cls, f) for f in fields(cls)}
    except ConfigError:
        rules = None                    # an unknown kind: reported when the result is read
    dropped, refused = [], []
    for k, v in base.items():
        if k != "kind" and (k not in defaults or defaults[k] != v):
            if rules is None or k in extra:
                carried[k] = v
            elif k not in rules:
                dropped.append(f"{k}={v!r}")
            elif _accepts(rules[k], k, v):
                carried[k] = v
            else:                       # LinOSS's discretization "imex" is a setting of S4D too, not a value of it
                refused.append(f"{k}={v!r}")
    for pair in PAIRED_SETTINGS:            # one end of a range left behind: the other end goes too
        left = [k for k in pair if k in base and k not in carried and k not in extra]
        for k in pair:
            if left and k in carried and k not in extra:
                refused.append(f"{k}={carried.pop(k)!r}")
    if dropped or refused:
        why = [f"{', '.join(dropped)} (not settings of {kind!r})"] if dropped else []
        why += [f"{', '.join(refused)} (not values {kind!r} takes: its default is used)"] if refused else []
        warnings.warn(f"model.layer: switching kind {base['kind']!r} -> {kind!r} leaves behind {'; '.join(why)}",
                      UserWarning, stacklevel=3)
    return {**carried, **extra}


#: Settings given together (the two ends of a range): :func:`merge_layer` carries both or neither.
PAIRED_SETTINGS = (("dt_min", "dt_max"), ("A_min", "A_max"), ("G_min", "G_max"), ("r_min", "r_max"),
                   ("theta_min", "theta_max"))


def _accepts(rule: Rule, key: str, value: Any) -> bool:
    """Whether a setting's rule takes ``value``."""
    try:
        rule.validate(f"model.layer.{key}", value)
    except (ConfigError, ValueError, TypeError):
        return False
    return True


def _mappable(value: Any) -> bool:
    return isinstance(value, (LayerConfig, str, Mapping))


def _as_mapping(value: LayerSpec) -> Dict[str, Any]:
    if isinstance(value, LayerConfig):
        return value.to_dict()
    if isinstance(value, str):
        return {"kind": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"layer: got {_show(value)}; allowed: a layer kind or a table with kind and settings")


def legacy_layer(kind: str, kwargs: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The ``{"kind": ..., **settings}`` of the arguments ``layer=kind, layer_kwargs=kwargs`` of models
    saved before the layer configs (renamed keys, e.g. LinOSS ``d_state``, take their new name)."""
    out: Dict[str, Any] = {"kind": kind}
    renamed = {}
    try:
        renamed = {old: new.split(",")[0].split()[0] for old, new in config_class(str(kind).lower()).renamed.items()}
    except ConfigError:
        pass
    for k, v in (kwargs or {}).items():
        out[renamed.get(k, k)] = v
    return out


def upgrade_layer_arguments(config: Dict[str, Any]) -> Dict[str, Any]:
    """Saved model arguments with ``layer`` + ``layer_kwargs`` (before the layer configs) -> ``layer``
    as one ``{"kind": ..., ...}`` mapping; newer arguments are returned as they are."""
    if "layer_kwargs" not in config:
        return config
    config = dict(config)
    kwargs = config.pop("layer_kwargs")
    layer = config.get("layer", "s4d")
    if isinstance(layer, str):
        config["layer"] = legacy_layer(layer, kwargs)
    elif kwargs:
        raise ValueError("saved arguments hold both a layer table and layer_kwargs, and cannot tell which applies; "
                         "keep one of them in the saved config.json (layer = {kind = ..., ...} is the current form)")
    return config


def describe(cls: Type[LayerConfig]) -> str:
    """One line per setting: name, default, and what it means (for docs and ``--help``)."""
    return "\n".join(f"{f.name} = {f.default!r}: {f.metadata['doc']}" for f in fields(cls))


__all__ = ["LayerConfig", "LayerSpec", "layer_config", "sequence_layer", "merge_layer", "legacy_layer",
           "upgrade_layer_arguments", "setting", "describe", "state_key", "ConfigError"]
