"""Typed config sections built from Hydra nodes, with errors that name the offending key.

Constructors in lares_rl take explicit keyword arguments; these dataclasses are the bridge from a
composed Hydra config to those arguments. A typo in a YAML file therefore fails at start-up with
the valid keys listed, instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

from omegaconf import DictConfig, OmegaConf

from .errors import LaresError

T = TypeVar("T")


def to_plain(node: Any) -> Any:
    """A resolved plain-Python copy of an OmegaConf node (dicts and lists pass through)."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _checked(key: str, value: Any, hint: Any) -> Any:
    """``value`` as the field type ``hint`` wants (bool, int, float, str, ``X | None``,
    ``list[X]``), or LaresError naming ``key``. Integral floats become ints (YAML ``1e3``)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _checked(key, value, inner[0]) if len(inner) == 1 else value
    if typing.get_origin(hint) is list:
        if not isinstance(value, (list, tuple)):
            raise LaresError(f"{key} must be a list, e.g. {key}=[5,10], got {value!r}")
        return [_checked(f"{key}[{i}]", item, args[0]) for i, item in enumerate(value)] if args else list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise LaresError(f"{key} must be true or false, got {value!r}")
    elif hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LaresError(f"{key} must be a number, got {value!r}")
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise LaresError(f"{key} must be an integer, got {value!r}")
        return hint(value)
    elif hint is str and not isinstance(value, str):
        raise LaresError(f"{key} must be a string, got {value!r}")
    return value


def section_from_mapping(cls: type[T], mapping: Mapping[str, Any], key: str) -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown or mistyped fields raise LaresError naming ``key.field``."""
    values = dict(to_plain(mapping) or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise LaresError(f"unknown config key(s) {', '.join(f'{key}.{u}' for u in unknown)}; valid keys under {key!r}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _checked(f"{key}.{name}", value, hints[name]) for name, value in values.items()}
    section = cls(**values)
    validate = getattr(section, "validate", None)
    if validate is not None:
        validate()
    return section


def require(condition: bool, key: str, message: str) -> None:
    """Raise LaresError ``"{key}: {message}"`` unless ``condition`` holds."""
    if not condition:
        raise LaresError(f"{key}: {message}")
