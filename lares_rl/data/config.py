"""The ``dataset`` config group as a typed dataclass, checked before any file is touched.

Every check names the config key (``dataset.<field>``) so a bad Hydra override is fixed from the
message alone instead of surfacing later as a confusing shape or parser error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lares_rl.core.errors import LaresError

FORMATS = ("auto", "atomic", "movielens", "ordered_lines", "csv", "tsv", "parquet")


def origin_note(origin: str | None) -> str:
    """`` (<where the data comes from>)`` for an error about a missing file, or nothing."""
    return f" (the data: {origin})" if origin else ""


@dataclass
class DatasetConfig:
    """Where the interactions live, how to read them, and how to filter them."""

    name: str = "ml-100k"
    path: str | None = None
    format: str = "auto"
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = "timestamp"
    sep: str | None = None
    user_core: int = 5
    item_core: int = 5
    max_len: int = 20
    item_file: str | None = None
    title_col: str = "movie_title"
    origin: str | None = None  # where the file comes from; the errors for a missing dataset.path quote it

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DatasetConfig:
        """Build from a plain mapping (e.g. ``OmegaConf.to_container(cfg.dataset)``).

        A typo in a key would otherwise be a bare ``TypeError`` from ``__init__``; here it is a
        ``LaresError`` naming the key and listing the valid ones.
        """
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in values if k not in valid)
        if unknown:
            raise LaresError(f"unknown config key(s) {', '.join('dataset.' + k for k in unknown)}; valid keys are: {', '.join(valid)}")
        cfg = cls(**dict(values))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``LaresError`` naming the first bad key and what to set it to."""
        if not isinstance(self.name, str) or not self.name:
            raise LaresError(f"dataset.name must be a non-empty string (got {self.name!r})")
        if self.path == "???":  # OmegaConf's mark for a mandatory value nobody set
            raise LaresError(
                f"dataset.path is required for dataset={self.name}: pass dataset.path=<your interactions file>{origin_note(self.origin)}"
            )
        for key in ("path", "item_file", "time_col", "origin"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise LaresError(f"dataset.{key} must be a non-empty string or null (got {value!r})")
        for key in ("user_col", "item_col", "title_col"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise LaresError(f"dataset.{key} must be a non-empty column name (got {value!r})")
        if self.format not in FORMATS:
            raise LaresError(f"dataset.format={self.format!r} is not a known format; use one of: {', '.join(FORMATS)}")
        for key in ("user_core", "item_core", "max_len"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LaresError(f"dataset.{key} must be an integer >= 1 (got {value!r})")
        if self.sep is not None and (not isinstance(self.sep, str) or len(self.sep) != 1):
            raise LaresError(
                f"dataset.sep must be a single character or null (got {self.sep!r}); for MovieLens '::' files use dataset.format=movielens"
            )
