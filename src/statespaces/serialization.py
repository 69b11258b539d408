"""Save and share models: ``save_pretrained(dir)`` / ``from_pretrained(dir)`` (safetensors + JSON, no pickle).

Every public layer, block and model of the package records the arguments it was built with
(:class:`Pretrained`, through ``__init_subclass__``), so a directory holds all that is needed to
rebuild it:

* ``config.json``: ``{"class": "S4D", "config": {"d_model": 64, ...}, "format": 1, "statespaces": version}``;
  a module passed as an argument (a layer given to ``ResidualBlock``) is stored as a nested
  ``{"__module__": {"class": ..., "config": ...}}``, a layer config (``S4DConfig(...)``) as its
  ``{"kind": ..., **settings}`` table; a class may define ``upgrade_config`` (and
  ``upgrade_state_dict``) to read what older versions saved (e.g. ``layer_kwargs``). Arguments that
  may also be set after construction (``settable_arguments``, e.g. ``S4ND.bandlimit``) are saved
  with their current values: the module's own in ``config``, those of submodules it built itself
  (a model's layers, built from a layer table) under ``"settings": {"blocks.0.layer": {...}}``,
  set again after the rebuild;
* ``model.safetensors``: the ``state_dict`` (complex tensors stored as their real views, listed in the
  file's metadata), loaded with ``strict=True``, so a round trip is bit-exact.

Loading never executes code from the directory: the class name is looked up among this package's
own classes only, and the weights are safetensors. The file names are those of the Hugging Face
hub mixin (``config.json``, ``model.safetensors``); when ``huggingface_hub`` is installed,
``from_pretrained`` also accepts a hub repository id (``push_to_hub`` uploads a saved folder).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterator, Optional, Tuple, Type, TypeVar, Union, cast

import torch
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = 1
_COMPLEX_TAG = "complex_keys"

#: class name -> class, for every Pretrained subclass defined in this package.
REGISTRY: Dict[str, type] = {}

T = TypeVar("T", bound="Pretrained")
PathLike = Union[str, Path]


def _encode(value: Any, where: str) -> Any:
    """An ``__init__`` argument -> JSON data (raises TypeError naming the argument if impossible)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} = {value!r} is not finite and cannot be saved in config.json")
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where} has non-string keys and cannot be saved in config.json")
        return {k: _encode(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Pretrained):
        return {"__module__": value.config_dict()}
    to_dict = getattr(value, "to_dict", None)
    if dataclasses.is_dataclass(value) and isinstance(getattr(value, "kind", None), str) and callable(to_dict):
        saveable = getattr(value, "check_saveable", None)     # a kind that could not be built again is refused
        if callable(saveable):
            saveable(where)
        return _encode(to_dict(), where)              # a layer config: {"kind": ..., **settings}
    raise TypeError(
        f"{where} is a {type(value).__name__}, which config.json cannot hold; build the model from "
        "plain arguments (numbers, strings, lists, dicts, or statespaces modules) to save it"
    )


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__module__"}:
            return build_from_config(value["__module__"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def build_from_config(cfg: Dict[str, Any]) -> nn.Module:
    """Rebuild a module (fresh parameters) from ``{"class": name, "config": {...}}``."""
    if not isinstance(cfg, dict) or "class" not in cfg or not isinstance(cfg.get("config"), dict):
        raise ValueError("a model config must be a JSON object with 'class' and 'config' entries")
    name = cfg["class"]
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown model class {name!r} in config; known: {', '.join(sorted(REGISTRY))}")
    kwargs = {k: _decode(v) for k, v in cfg["config"].items()}
    upgrade = getattr(cls, "upgrade_config", None)      # arguments saved by an older version -> today's
    if upgrade is not None:
        kwargs = upgrade(kwargs)
    try:
        module = cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"config of {name} does not match its arguments: {e}") from e
    _apply_settings(module, cfg.get("settings", {}), name)
    return module


def _argument_modules(value: Any) -> Iterator[nn.Module]:
    """The modules among an ``__init__`` argument (nested in lists and dicts): saved as ``__module__``."""
    if isinstance(value, Pretrained):
        yield cast(nn.Module, value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _argument_modules(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _argument_modules(v)


def _changed_settings(module: nn.Module) -> Dict[str, Any]:
    """The settable arguments of ``module`` whose values differ from those it was built with."""
    recorded = module.__dict__.get("_init_config") or {}
    names = getattr(type(module), "settable_arguments", ())
    return {n: getattr(module, n) for n in names if getattr(module, n) != recorded.get(n)}


def _built_settings(root: nn.Module, params: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{path: {name: value}}``: the settable arguments changed since construction of the submodules
    that ``root`` builds itself. A rebuild from ``params`` builds them again with their original
    arguments, so these values must be set again; modules passed in ``params`` save their own."""
    passed = {id(m) for v in params.values() for m in _argument_modules(v)}
    out: Dict[str, Dict[str, Any]] = {}

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if id(child) in passed:
                continue
            changed = _changed_settings(child)
            if changed:
                out[prefix + name] = changed
            visit(child, f"{prefix}{name}.")

    visit(root, "")
    return out


def _apply_settings(module: nn.Module, settings: Any, name: str) -> None:
    """Set the ``"settings"`` of a config (see :func:`_built_settings`) on the rebuilt ``module``;
    only the declared ``settable_arguments`` of each submodule may be set."""
    if not isinstance(settings, dict):
        raise ValueError(f"config of {name}: 'settings' must be a JSON object of {{submodule path: {{name: value}}}}")
    for path, values in settings.items():
        try:
            sub = module.get_submodule(path)
        except AttributeError:
            raise ValueError(f"config of {name}: 'settings' names {path!r}, which a {name} built from this config "
                             "does not have; the config was edited or written for another model") from None
        allowed = getattr(type(sub), "settable_arguments", ())
        if not isinstance(values, dict) or not set(values) <= set(allowed):
            raise ValueError(f"config of {name}: 'settings' of {path!r} ({type(sub).__name__}) may set only "
                             f"{list(allowed)}, got {values!r}")
        for key, value in values.items():
            setattr(sub, key, _decode(value))


class Pretrained:
    """Mixin: records ``__init__`` arguments and provides ``save_pretrained`` / ``from_pretrained``."""

    #: ``__init__`` arguments that may also be set after construction (attributes of the same name,
    #: e.g. ``S4ND.bandlimit``): saved with their current values, not those the module was built with
    settable_arguments: ClassVar[Tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("statespaces."):
            REGISTRY.setdefault(cls.__name__, cls)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_config", False):
            return
        sig = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args: Any, **kw: Any) -> None:
            outermost = "_init_config" not in self.__dict__
            if outermost:
                bound = sig.bind(self, *args, **kw)
                bound.apply_defaults()
                params = dict(bound.arguments)
                params.pop(next(iter(sig.parameters)))                     # self
                for name, p in sig.parameters.items():                     # **extra keyword arguments
                    if p.kind is inspect.Parameter.VAR_KEYWORD and name in params:
                        params.update(params.pop(name))
                    elif p.kind is inspect.Parameter.VAR_POSITIONAL and name in params:
                        params.pop(name)
                self.__dict__["_init_config"] = params
            init(self, *args, **kw)

        __init__._records_config = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]  # records the config, then runs the class's own

    # ---- config --------------------------------------------------------------------------------
    def config_dict(self) -> Dict[str, Any]:
        """``{"class": name, "config": {...}}``: what :func:`build_from_config` needs (JSON data)."""
        params = self.__dict__.get("_init_config")
        if params is None:
            raise TypeError(f"{type(self).__name__} did not record its arguments and cannot be saved")
        name = type(self).__name__
        if REGISTRY.get(name) is not type(self):
            raise TypeError(f"{name} is not one of statespaces' classes; only those can be rebuilt from a config")
        module = cast(nn.Module, self)
        params = dict(params, **_changed_settings(module))
        cfg: Dict[str, Any] = {"class": name, "config": {k: _encode(v, f"{name}.{k}") for k, v in params.items()}}
        settings = _built_settings(module, params)
        if settings:
            cfg["settings"] = {path: {k: _encode(v, f"{name}.{path}.{k}") for k, v in values.items()}
                               for path, values in settings.items()}
        return cfg

    # ---- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``save_directory`` (created if needed)."""
        from safetensors.torch import save_file

        from ._version import __version__

        out = Path(save_directory)
        floats = [t.dtype for t in self.state_dict().values() if t.is_floating_point()]   # type: ignore[attr-defined]
        cfg = dict(self.config_dict(), format=FORMAT, statespaces=__version__,
                   dtype=str(floats[0]).replace("torch.", "") if floats else None)
        tensors, complex_keys = {}, []
        for key, t in self.state_dict().items():        # type: ignore[attr-defined]
            t = t.detach().cpu()
            if t.is_complex():
                complex_keys.append(key)
                t = torch.view_as_real(t.resolve_conj())
            tensors[key] = t.contiguous().clone()
        out.mkdir(parents=True, exist_ok=True)
        tmp_w, tmp_c = out / (WEIGHTS_NAME + ".tmp"), out / (CONFIG_NAME + ".tmp")
        save_file(tensors, str(tmp_w), metadata={_COMPLEX_TAG: json.dumps(complex_keys), "format": "pt"})
        tmp_c.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        # safetensors creates its file owner-only (0600); give the weights the config's umask mode, to share them
        os.chmod(tmp_w, tmp_c.stat().st_mode & 0o777)
        tmp_w.replace(out / WEIGHTS_NAME)                # atomic per file; config last
        tmp_c.replace(out / CONFIG_NAME)
        return out

    @classmethod
    def from_pretrained(cls: Type[T], pretrained: PathLike, map_location: Union[str, torch.device] = "cpu",
                        **hub_kwargs: Any) -> T:
        """Rebuild a saved module: a local directory, or a Hugging Face hub id when
        ``huggingface_hub`` is installed (``hub_kwargs`` go to ``snapshot_download``).

        ``S4D.from_pretrained(d)`` checks that ``d`` holds an S4D; ``Pretrained.from_pretrained``
        (or :func:`load_pretrained`) accepts any class.
        """
        return load_pretrained(pretrained, map_location, expect=cls, **hub_kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:  # pragma: no cover - needs the network
        """Save to a temporary folder and upload it with ``huggingface_hub.upload_folder``."""
        import tempfile

        try:
            from huggingface_hub import create_repo, upload_folder
        except ImportError as e:
            raise ImportError("push_to_hub needs the huggingface_hub package") from e
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            create_repo(repo_id, exist_ok=True, **{k: v for k, v in kwargs.items() if k in ("token", "private")})
            return upload_folder(repo_id=repo_id, folder_path=tmp, **{k: v for k, v in kwargs.items() if k == "token"})


def _resolve(pretrained: PathLike, **hub_kwargs: Any) -> Path:
    path = Path(pretrained)
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; from_pretrained takes the directory written by save_pretrained")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"no directory {path} (install huggingface_hub to load a hub repository id)") from None
    return Path(snapshot_download(str(pretrained), **hub_kwargs))  # pragma: no cover - needs the network


def _is_trainer_checkpoint(path: Path) -> bool:
    """A ``statespaces train`` checkpoint folder (``meta.json`` + ``tensors.safetensors``), or a run
    folder holding ``best/``."""
    return (path / "meta.json").is_file() or (path / "best" / "meta.json").is_file()


#: Rebuilds a ``statespaces train`` checkpoint folder as a module. The trainer lives on a higher floor
#: than this module, so it is registered from above (by the package ``__init__``, which runs before
#: any ``statespaces.*`` import) instead of imported from here.
_TRAINER_LOADER: Optional[Callable[[str], nn.Module]] = None


def register_trainer_loader(loader: Callable[[str], nn.Module]) -> None:
    """Let :func:`load_pretrained` read ``statespaces train`` checkpoints through ``loader(path)``."""
    global _TRAINER_LOADER
    _TRAINER_LOADER = loader


def load_pretrained(pretrained: PathLike, map_location: Union[str, torch.device] = "cpu",
                    expect: Optional[type] = None, **hub_kwargs: Any) -> Any:
    """Rebuild the module saved in ``pretrained`` (see :meth:`Pretrained.save_pretrained`).

    Also takes a checkpoint written by ``statespaces train`` (``runs/x/best`` or the run folder
    ``runs/x``), checked by its SHA-256 sums like ``statespaces evaluate`` does. The model comes back in eval mode
    (as Hugging Face's ``from_pretrained``; a dropout model scored twice gave two losses): ``.train()`` to fine-tune."""
    path = _resolve(pretrained, **hub_kwargs)
    model: nn.Module
    if not (path / CONFIG_NAME).exists() and _is_trainer_checkpoint(path):
        # a checkpoint (or run folder) of `statespaces train`: verified and rebuilt by the trainer's loader
        if _TRAINER_LOADER is None:
            raise RuntimeError(f"{path} is a statespaces train checkpoint and no trainer loader is registered; "
                               "import statespaces (its __init__ registers statespaces.train.load_trained)")
        model = _TRAINER_LOADER(str(path))
    else:
        model = _load_saved(path)
    if expect is not None and expect is not Pretrained and not isinstance(model, expect):
        raise TypeError(f"{path} holds a {type(model).__name__}, not a {expect.__name__}")
    return model.to(map_location).eval()    # as Hugging Face's from_pretrained: dropout off until .train()


def _load_saved(path: Path) -> nn.Module:
    """The module in a folder written by :meth:`Pretrained.save_pretrained` (config, then weights)."""
    cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: {path} was not written by save_pretrained")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_file} must hold a JSON object ({{\"class\": ..., \"config\": {{...}}, ...}}), "
                         f"got {type(cfg).__name__}")
    fmt = cfg.get("format", FORMAT)
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise ValueError(f"{cfg_file}: 'format' must be an integer, got {fmt!r}")
    if fmt > FORMAT:
        raise ValueError(f"{cfg_file} has format {fmt}, newer than this statespaces reads ({FORMAT})")
    try:
        model = build_from_config(cfg)
    except ValueError as e:
        raise ValueError(f"{cfg_file}: {e}") from None
    dtype = cfg.get("dtype")
    if dtype is not None:
        if dtype not in ("float16", "bfloat16", "float32", "float64"):
            raise ValueError(f"{cfg_file}: unsupported dtype {dtype!r}; allowed: float16, bfloat16, float32, float64 "
                             "(the file was edited, or written by a newer version)")
        model = model.to(getattr(torch, dtype))
    state = _read_weights(w_file)
    upgrade = getattr(model, "upgrade_state_dict", None)   # weights saved by an older version -> today's keys
    if upgrade is not None:
        state = upgrade(state)
    # a tensor saved in another floating dtype than the config's (a float64 head on a float32 model) keeps it
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        saved = state.get(name)
        if saved is not None and saved.dtype != t.dtype and saved.is_floating_point() and t.is_floating_point():
            t.data = t.data.to(saved.dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:                # missing / unexpected keys, size mismatches
        raise ValueError(f"{path}: the weights in {WEIGHTS_NAME} do not fit the model that {CONFIG_NAME} describes "
                         f"(was one of the two files edited or replaced?): {' '.join(str(e).split())[:400]}") from None
    return model


def _read_weights(w_file: Path) -> Dict[str, torch.Tensor]:
    from safetensors import safe_open

    state = {}
    with safe_open(str(w_file), framework="pt", device="cpu") as f:
        complex_keys = set(json.loads((f.metadata() or {}).get(_COMPLEX_TAG, "[]")))
        for key in f.keys():
            t = f.get_tensor(key)
            state[key] = torch.view_as_complex(t) if key in complex_keys else t
    return state


