"""One loader for every config dataclass: YAML (or a dict) in, a checked dataclass out.

Unknown keys and values of the wrong type fail with a one-line :class:`~mosr.errors.ConfigError`
that names the key. ``5e-4`` (which YAML 1.1 reads as a string) is accepted where a float is
expected, and lists become tuples where the field is a tuple.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from mosr.errors import ConfigError

C = TypeVar("C")
L = TypeVar("L", bound="YamlLoadable")

_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (an empty file is an empty mapping)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def from_mapping(cls: type[C], data: Mapping[str, Any], *, what: str = "config", prefix: str = "",
                 hidden: Iterable[str] = (), extra: Mapping[str, Any] | None = None, check: bool = True) -> C:
    """``cls(**data, **extra)`` after the checks: a mapping, known keys only, values of the field types.

    ``what`` and ``prefix`` name the section in messages (``unknown eval key 'x'``); ``hidden``
    keys are left out of the listing of known keys (they are set by the caller, through ``extra``).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or what}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        listing = ", ".join(sorted(known - set(hidden)))
        raise ConfigError(f"unknown {what} key {prefix}{unknown[0]!r}; known keys: {listing}")
    hints = typing.get_type_hints(cls)
    values = {k: coerce(v, hints[k]) for k, v in {**data, **(extra or {})}.items()}
    if check:  # before __post_init__, so that its checks meet values of the right types
        for key, value in values.items():
            if not _plausible(value, hints[key]):
                raise ConfigError(f"{prefix}{key}: expected {type_name(hints[key])}, got {value!r}")
    cfg = cls(**values)
    if check:
        check_types(cfg, prefix)
    return cfg


def _plausible(value: Any, tp: Any) -> bool:
    """``value`` matches ``tp``, or is what ``__post_init__`` may still normalise: one item of a list
    field, or a mapping for a dataclass field."""
    if matches(value, tp):
        return True
    for arg in union_args(tp):
        if typing.get_origin(arg) is list and matches(value, typing.get_args(arg)[0]):
            return True
        if isinstance(value, Mapping) and dataclasses.is_dataclass(arg):
            return True
    return False


def load_config(cls: type[C], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *,
                what: str = "config") -> C:
    """Defaults, then the YAML file at ``path``, then ``overrides``."""
    data = read_yaml(path) if path is not None else {}
    data.update(overrides or {})
    return from_mapping(cls, data, what=what)


class YamlLoadable:
    """``from_dict`` and ``load`` for a config dataclass, through :func:`from_mapping`; ``config_name`` names it in messages."""

    config_name: ClassVar[str] = "config"

    @classmethod
    def from_dict(cls: type[L], data: Mapping[str, Any]) -> L:
        return from_mapping(cls, data, what=cls.config_name)  # type: ignore[attr-defined]

    @classmethod
    def load(cls: type[L], path: str | Path, overrides: Mapping[str, Any] | None = None) -> L:
        """Defaults, then the YAML file, then ``overrides``; unknown keys and wrong types fail."""
        return load_config(cls, path, overrides, what=cls.config_name)  # type: ignore[attr-defined]


def coerce(value: Any, tp: Any) -> Any:
    """A float written ``5e-4`` (a YAML string) as a float; a list as a tuple where the field is a tuple."""
    args = union_args(tp)
    if isinstance(value, str) and float in args and str not in args and _FLOAT_RE.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list) and any(typing.get_origin(a) is tuple for a in args):
        return tuple(value)
    return value


def check_types(cfg: Any, prefix: str = "") -> None:
    """Every field of the dataclass ``cfg`` holds a value of its annotated type (floats finite)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not matches(value, hints[f.name]):
            raise ConfigError(f"{prefix}{f.name}: expected {type_name(hints[f.name])}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{f.name}: must be a finite number, got {value}")


def union_args(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return isinstance(value, list) and all(matches(v, inner) for v in value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return isinstance(value, tuple) and all(matches(v, args[0]) for v in value)
        return isinstance(value, tuple) and len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        return isinstance(value, dict) and all(matches(k, key_tp) and matches(v, value_tp) for k, v in value.items())
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + "/".join(map(str, typing.get_args(tp)))
    if origin is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if origin is tuple:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))
