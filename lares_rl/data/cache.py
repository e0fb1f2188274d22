"""Processed-dataset cache: content fingerprints, checksummed ``.npz`` files, atomic writes.

The cache file name carries the fingerprint (raw file bytes + every setting that changes the
result), so a changed file or setting simply misses. The payload carries its own sha256, so a
truncated or damaged file is detected and rebuilt instead of trusted. Writes go to a temporary
file in the same directory, are fsynced, then ``os.replace``d: a crash never leaves a
half-written cache under the real name.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas

from lares_rl.core.atomic import atomic_write_bytes
from lares_rl.data.sequences import SequenceData

# Part of every data fingerprint, hence of every checkpoint's check that it meets its own data:
# fixed, so that code changes which keep the processed data also keep checkpoints valid. Whether
# a cache file was built by the current processing code is ``processing_code_version``'s job.
FINGERPRINT_FORMAT = 1
_CHUNK = 1 << 20
# Environment variable naming the cache directory when the ``cache_dir`` key is not set.
CACHE_DIR_ENV = "LARES_RL_CACHE_DIR"


def resolve_cache_dir(configured: str | Path | None = None) -> Path:
    """Where processed data (and RPT's filter masks) are cached: ``configured`` (the ``cache_dir``
    key) when set, else ``$LARES_RL_CACHE_DIR``, else ``lares_rl/`` in the user's cache directory
    (:func:`user_cache_root`). One place per user, not one per working directory: the same file
    and settings are processed once, whichever folder a command runs from."""

    if configured is not None and str(configured) != "":
        return Path(configured).expanduser()
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return user_cache_root() / "lares_rl"


def user_cache_root() -> Path:
    """The platform's per-user cache directory, as platformdirs (not a dependency here) places it:
    ``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches`` on macOS, elsewhere ``$XDG_CACHE_HOME`` when it
    is an absolute path (the XDG base-directory rule), else ``~/.cache``."""

    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"


@functools.lru_cache(maxsize=1)
def processing_code_version() -> str:
    """sha256 of this package's sources and the pandas/numpy versions that parse the raw files
    (computed once per process: the code does not change under a running program).

    A cache built by other processing code is rebuilt. (A hand-bumped version number was
    forgotten once: parsing fixes went out while old caches kept being served.)"""

    digest = hashlib.sha256(f"pandas {pandas.__version__} numpy {np.__version__}".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, streamed so large files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(file_hashes: list[str], settings: dict) -> str:
    """Hex digest identifying the processed result of these files under these settings."""
    payload = json.dumps({"files": file_hashes, "settings": settings, "cache_version": FINGERPRINT_FORMAT}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_path(cache_dir: Path, name: str, fp: str) -> Path:
    """``<cache_dir>/<name>-<fingerprint[:16]>.npz`` with the name made filesystem-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return cache_dir / f"{safe}-{fp[:16]}.npz"


def save_cache(path: Path, data: SequenceData) -> None:
    """Write ``data`` atomically (see :mod:`lares_rl.core.atomic`)."""
    arrays = {
        "items": data.items,
        "offsets": data.offsets,
        "user_ids": np.asarray(data.user_ids, dtype=np.str_),
        "item_ids": np.asarray(data.item_ids, dtype=np.str_),
    }
    if data.item_titles is not None:
        arrays["item_titles"] = np.asarray(data.item_titles, dtype=np.str_)
    meta = {
        "code": processing_code_version(),
        "fingerprint": data.fingerprint,
        "num_items": data.num_items,
        "source": data.source,
        "name": data.name,
        "filter_log": data.filter_log,
    }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True), dtype=np.str_)
    arrays["checksum"] = np.array(_checksum(arrays), dtype=np.str_)

    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_cache(path: Path, fp: str) -> SequenceData:
    """Read a cache file written by ``save_cache``; raises on any mismatch or damage."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    stored = str(arrays.pop("checksum"))
    if _checksum(arrays) != stored:
        raise ValueError("checksum mismatch")
    meta = json.loads(str(arrays["meta"]))
    if meta["fingerprint"] != fp:
        raise ValueError("cache written for other settings")
    if meta.get("code") != processing_code_version():
        raise ValueError("cache built by other data-processing code (lares_rl/data, pandas or numpy changed)")
    return SequenceData(
        items=arrays["items"],
        offsets=arrays["offsets"],
        num_items=int(meta["num_items"]),
        user_ids=arrays["user_ids"],
        item_ids=arrays["item_ids"],
        item_titles=arrays.get("item_titles"),
        fingerprint=meta["fingerprint"],
        source=meta["source"],
        filter_log=meta["filter_log"],
        name=meta["name"],
    )


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
