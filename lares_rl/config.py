"""Typed config sections built from Hydra nodes, with errors that name the offending key.

Constructors in lares_rl take explicit keyword arguments; these dataclasses are the bridge from a
composed Hydra config to those arguments. A typo in a YAML file therefore fails at start-up with
the valid keys listed, instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from omegaconf import DictConfig, OmegaConf

from .errors import LaresError

T = TypeVar("T")


def to_plain(node: Any) -> Any:
    """A resolved plain-Python copy of an OmegaConf node (dicts and lists pass through)."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def section_from_mapping(cls: type[T], mapping: Mapping[str, Any], key: str) -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown or mistyped fields raise LaresError naming ``key.field``."""
    values = dict(to_plain(mapping) or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise LaresError(f"unknown config key(s) {', '.join(f'{key}.{u}' for u in unknown)}; valid keys under {key!r}: {sorted(fields)}")
    for name, value in values.items():
        default = fields[name].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise LaresError(f"{key}.{name} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LaresError(f"{key}.{name} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and not value.is_integer():
                raise LaresError(f"{key}.{name} must be an integer, got {value!r}")
            values[name] = type(default)(value)
    section = cls(**values)
    validate = getattr(section, "validate", None)
    if validate is not None:
        validate()
    return section


def require(condition: bool, key: str, message: str) -> None:
    """Raise LaresError ``"{key}: {message}"`` unless ``condition`` holds."""
    if not condition:
        raise LaresError(f"{key}: {message}")
