"""Typed config sections built from Hydra nodes, with errors that name the offending key.

Constructors in lares_rl take explicit keyword arguments; these dataclasses are the bridge from a
composed Hydra config to those arguments. A typo in a YAML file therefore fails at start-up with
the valid keys listed, instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from lares_rl.core.errors import LaresError

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
        guesses = [
            f"{key}.{u} (did you mean {' or '.join(f'{key}.{g}' for g in nearest_keys(u, fields))}?)"
            if nearest_keys(u, fields)
            else f"{key}.{u}"
            for u in unknown
        ]
        raise LaresError(
            f"unknown config key(s) {', '.join(guesses)}; nothing reads them, so fix the spelling or drop them; valid keys under {key!r}: {sorted(fields)}"
        )
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


def nearest_keys(key: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to a misspelled ``key``, best first (empty when none is close):
    Hydra's own message suggests appending the key with ``+``, which only creates a key nothing reads."""
    return difflib.get_close_matches(key, list(valid), n=n, cutoff=0.6)


def flatten_keys(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested mapping (``{"spt": {"lr": 1}}`` -> ``{"spt.lr": 1}``), in order; a
    list or scalar is a leaf. So a mismatch, a table row or a search axis names ``spt.lr``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config, sections included (``spt``, ``spt.lr``, ...)."""
    keys: list[str] = []
    for name, value in (to_plain(node) or {}).items():
        keys.append(prefix + str(name))
        if isinstance(value, dict):
            keys.extend(config_keys(value, f"{prefix}{name}."))
    return keys


def settable_key(override: str) -> str | None:
    """The key of a plain ``key=value`` override, None for what is left to Hydra: ``+key``/``~key``
    (appending and deleting are deliberate), ``hydra.*``, group paths (``hydra/job_logging=...``)
    and flags."""
    key, sep, _ = override.partition("=")
    if not sep or key.startswith(("+", "~", "-", "hydra.")) or "/" in key:
        return None
    return key


def unknown_key_hints(overrides: Iterable[str], valid: Iterable[str]) -> list[str]:
    """One line for each plain ``key=value`` override (:func:`settable_key`) whose key is not in
    ``valid``, naming the nearest valid keys (or, when none is close, the keys of its section).
    Hydra's own message for a typo suggests ``+key=``, a key nothing would read."""
    valid = set(valid)
    hints = []
    for override in overrides:
        key = settable_key(override)
        if key is None or key in valid:
            continue
        section, _, leaf = key.rpartition(".")
        same_section = sorted(k.rpartition(".")[2] for k in valid if k.rpartition(".")[0] == section)
        # a typo inside the right section first (spt.lrr -> spt.lr), then the section left out (lr -> spt.lr), then anywhere
        guesses = (
            [f"{section}.{g}" if section else g for g in nearest_keys(leaf, same_section)]
            or sorted(k for k in valid if k.endswith("." + leaf))
            or nearest_keys(key, valid)
        )
        fix = (
            f"did you mean {' or '.join(guesses)}?"
            if guesses
            else f"the keys {f'under {section}' if section else 'at the top level'} are: {', '.join(same_section)}"
        )
        hints.append(f"{key} is not a config key; {fix} (a +{key}=... would add a key that nothing reads)")
    return hints
