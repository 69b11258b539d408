"""Typed config values, checked when a config is read: :class:`Rule` and :class:`ConfigError`.

Used by the layer configs (:mod:`statespaces.layers.config`) and the training config
(:mod:`statespaces.train.config`): a value of the wrong type or out of range fails with one line
naming the key, the value found and what is allowed. A TOML/JSON string is never a bool or a
number; an int field takes integers only; a float field takes integers or floats (finite).
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Tuple


class ConfigError(ValueError):
    """A config key or value that is not allowed; the message is one line naming the key, the value
    found and what is allowed."""


@dataclass(frozen=True)
class Rule:
    """What one config field accepts: ``kind`` (int, float, bool, str, dict), an optional range
    ``[lo, hi]`` (``lo_open``/``hi_open`` exclude an end), or a function ``choices()`` giving the
    valid names (matched case-insensitively, stored as spelled in ``choices``).

    ``nullable``: None is also accepted (an optional setting). ``per_axis``: a list of such values
    (one per axis of an N-D layer) is also accepted, stored as a tuple. ``kind="bool"`` with
    ``choices``: true, false, or one of the names (e.g. LinOSS ``bidirectional``).
    """

    kind: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    choices: Optional[Callable[[], Tuple[str, ...]]] = None
    check: Optional[Callable[[Any], bool]] = None    # extra test for strings (e.g. a device name)
    what: str = ""                                   # description of ``check``
    nullable: bool = False
    per_axis: bool = False

    def allowed(self) -> str:
        """What the field accepts, as ``allowed: ...`` (or ``valid: a, b, c`` for a choice)."""
        text = self._describe()
        if self.per_axis:
            text += ", or a list of those (one per axis)"
        if self.nullable:
            text += ", or none (unset)"
        return ("valid: " if self.choices is not None and self.kind == "str" else "allowed: ") + text

    def _describe(self) -> str:
        if self.kind == "bool":
            if self.choices is not None:
                return "true, false, " + ", ".join(self.choices())
            return "true or false"
        if self.kind == "dict":
            return "a table (TOML) or JSON object with string keys"
        if self.kind == "layer":                     # read by statespaces.layers.config.layer_config
            return self.what or "a layer kind or a table with kind and the layer's settings"
        if self.kind == "str":
            if self.choices is not None:
                return ", ".join(self.choices())
            return self.what or "a non-empty string"
        noun = "an integer" if self.kind == "int" else "a finite number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{noun} in {left}{_num(self.lo)}, {_num(self.hi)}{right}"
        if self.lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        return noun

    def validate(self, key: str, value: Any) -> Any:
        """Return ``value`` (floats as float, choices as spelled in ``choices``) or raise :class:`ConfigError`."""
        if value is None and self.nullable:
            return None
        if self.per_axis and isinstance(value, (list, tuple)):
            if not value:
                raise ConfigError(f"{key}: got {_show(value)}; {self.allowed()}")
            try:
                return tuple(self._one(key, v) for v in value)
            except ConfigError:
                raise ConfigError(f"{key}: got {_show(value)}; {self.allowed()}") from None
        return self._one(key, value)

    def _one(self, key: str, value: Any) -> Any:
        def bad(hint: str = "") -> ConfigError:
            return ConfigError(f"{key}: got {_show(value)}; {hint}{self.allowed()}")

        if self.kind == "bool":
            if isinstance(value, str) and self.choices is not None:
                return self._choice(value, bad)
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
                return self._choice(value, bad)
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

    def _choice(self, value: str, bad: Callable[..., ConfigError]) -> str:
        names = self.choices()                                  # type: ignore[misc]
        match = [c for c in names if c.lower() == value.lower()]
        if not match:
            raise bad(did_you_mean(value.lower(), [c.lower() for c in names]))
        return match[0]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def did_you_mean(word: Any, options: Iterable[str], prefix: str = "", suffix: str = "") -> str:
    """``"did you mean <prefix><closest><suffix>? "`` for a misspelt ``word`` among ``options`` (difflib's closest
    match), or ``""`` when none is close: put before the list of valid values in a message."""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1) if isinstance(word, str) else []
    return f"did you mean {prefix}{close[0]}{suffix}? " if close else ""
