"""Locate the MovieLens-100K copy shipped inside the recbole wheel.

Only the wheel's data files are used: importing recbole would pull in its whole training stack
(and its pinned dependencies) just to find two text files, so the files are found through the
installed distribution's file list instead.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from lares_rl.core.errors import LaresError

_EXAMPLE_DIR = "recbole/dataset_example/ml-100k"
_INSTALL_HINT = "run `pip install --no-deps recbole==1.2.1` (only its data files are used)"


def _embedded_file(filename: str) -> Path | None:
    """Path of ``recbole/dataset_example/ml-100k/<filename>`` in the installed wheel, or None."""
    try:
        dist = importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        return None
    wanted = f"{_EXAMPLE_DIR}/{filename}"
    for entry in dist.files or []:
        if entry.as_posix() == wanted:
            located = Path(str(dist.locate_file(entry)))
            return located if located.is_file() else None
    return None


def embedded_ml100k_path() -> Path:
    """The embedded ``ml-100k.inter`` (the default dataset when ``dataset.path`` is null)."""
    path = _embedded_file("ml-100k.inter")
    if path is None:
        raise LaresError(
            "dataset.path is null, so the embedded MovieLens-100K is used, but the recbole wheel "
            f"that ships it is not installed (or lacks {_EXAMPLE_DIR}/ml-100k.inter): "
            f"{_INSTALL_HINT}, or set dataset.path to your own interaction file"
        )
    return path


def embedded_ml100k_item_path() -> Path | None:
    """The embedded ``ml-100k.item`` (movie titles), or None when the wheel lacks it."""
    return _embedded_file("ml-100k.item")
