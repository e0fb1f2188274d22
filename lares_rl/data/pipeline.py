"""``load_dataset``: config -> processed ``SequenceData``, served from the cache when it can be.

Re-runs must start instantly, so the processed result is cached under a fingerprint of the raw
bytes and every setting that changes it; the raw file is still hashed on each call, because a
cache keyed on paths or modification times would silently serve stale data after an edit.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lares_rl.core.errors import LaresError
from lares_rl.core.tracking import progress
from lares_rl.data.build import build_sequences
from lares_rl.data.cache import cache_path, file_sha256, fingerprint, load_cache, resolve_cache_dir, save_cache
from lares_rl.data.config import DatasetConfig
from lares_rl.data.embedded import embedded_ml100k_item_path, embedded_ml100k_path
from lares_rl.data.loaders import check_readable, read_interactions, read_item_titles, resolve_format
from lares_rl.data.sequences import SequenceData

logger = logging.getLogger("lares_rl.data")

_EMBEDDED_NAME = "ml-100k"


def load_dataset(cfg: DatasetConfig, cache_dir: str | Path | None = None) -> SequenceData:
    """Validate ``cfg``, then load the processed dataset from the cache or build and cache it
    (``cache_dir``, else ``$LARES_RL_CACHE_DIR``, else the user's cache directory: resolve_cache_dir)."""
    cfg.validate()
    path, item_file = _resolve_paths(cfg)
    fmt = resolve_format(path, cfg.format)
    check_readable(path, fmt, origin=cfg.origin)
    if item_file is not None:
        check_readable(item_file, "atomic", key="dataset.item_file")

    settings = {
        "format": fmt,
        "user_col": cfg.user_col,
        "item_col": cfg.item_col,
        "time_col": cfg.time_col,
        "sep": cfg.sep,
        "user_core": cfg.user_core,
        "item_core": cfg.item_core,
        "title_col": cfg.title_col if item_file is not None else None,
    }
    hashes = [file_sha256(path)] + ([file_sha256(item_file)] if item_file is not None else [])
    fp = fingerprint(hashes, settings)
    cached = cache_path(resolve_cache_dir(cache_dir), cfg.name, fp)
    if cached.exists():
        try:
            data = load_cache(cached, fp)
        except Exception as exc:  # any damage means "do not trust", never "crash"
            logger.warning("cache %s is damaged or stale (%s: %s); rebuilding it", cached, type(exc).__name__, exc)
        else:
            logger.info("%s: loaded from cache %s", cfg.name, cached)
            return data

    # the steps of processing, each shown as it finishes (a large file takes minutes on a CPU)
    built: dict = {}
    steps = {
        "read": lambda: read_interactions(path, fmt, cfg),
        "titles": lambda: read_item_titles(item_file, cfg.item_col, cfg.title_col) if item_file is not None else None,
        "build": lambda: build_sequences(
            built["read"],
            user_core=cfg.user_core,
            item_core=cfg.item_core,
            titles=built["titles"],
            fingerprint=fp,
            source=path,
            name=cfg.name,
        ),
    }
    for name in progress(steps, len(steps), f"processing {cfg.name} (read, titles, k-core and split)", unit="step", every=5.0):
        built[name] = steps[name]()
    data = built["build"]
    try:
        save_cache(cached, data)
    except LaresError as exc:  # an unwritable cache costs speed, not correctness
        logger.warning("could not write cache %s (%s); continuing without it", cached, exc)
    else:
        logger.info("%s: processed and cached at %s", cfg.name, cached)
    return data


def _resolve_paths(cfg: DatasetConfig) -> tuple[Path, Path | None]:
    """(interaction file, optional item file); a null path means the embedded MovieLens-100K."""
    if cfg.path is None:
        if cfg.name != _EMBEDDED_NAME:
            raise LaresError(
                f"dataset.path is null but dataset.name={cfg.name!r}: only {_EMBEDDED_NAME} is embedded; "
                f"set dataset.path to the {cfg.name} interaction file"
            )
        item_file = Path(cfg.item_file).expanduser() if cfg.item_file else embedded_ml100k_item_path()
        return embedded_ml100k_path().resolve(), item_file
    item_file = Path(cfg.item_file).expanduser() if cfg.item_file else None
    return Path(cfg.path).expanduser().resolve(), item_file
