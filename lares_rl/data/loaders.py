"""Read raw interaction files into (user, item, timestamp) columns in file order.

pandas' C parser is used for the delimited formats (and pyarrow for Parquet) because a
hand-written reader is ~10x slower on MovieLens-20M-sized files; ids are read as strings so
tokens like ``"007"`` survive unchanged. Every problem a user can fix (missing file, wrong
format, misnamed column, non-numeric timestamp) becomes a ``LaresError`` naming the file and
the config key to change.

Ids are opaque tokens taken verbatim: ``"-2"``, ``"3.5"``, ``"1e3"``, ``"nan"`` or a 31-digit
number are distinct items, never parsed as numbers, and spaces inside a delimited field are part
of the token. Text must be UTF-8 (a leading BOM is ignored). In csv/tsv/atomic files the
configured columns are read by header position; fields past the header's width are ignored.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lares_rl.core.errors import LaresError
from lares_rl.data.config import FORMATS, DatasetConfig, origin_note

_EXTENSIONS = {
    ".inter": "atomic",
    ".data": "movielens",
    ".dat": "movielens",
    ".txt": "ordered_lines",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class RawInteractions:
    """One row per interaction in file order; ``times`` is None when file order is chronological."""

    users: np.ndarray  # object [n] of str
    items: np.ndarray  # object [n] of str
    times: np.ndarray | None  # int64 or float64 [n]


def resolve_format(path: Path, fmt: str) -> str:
    """Concrete format for ``path``: ``fmt`` itself, or guessed from the extension when ``auto``."""
    if fmt != "auto":
        return fmt
    guessed = _EXTENSIONS.get(path.suffix.lower())
    if guessed is None:
        known = ", ".join(f"{ext}->{name}" for ext, name in _EXTENSIONS.items())
        raise LaresError(
            f"{path}: cannot guess the format from the extension {path.suffix!r} ({known}); "
            f"set dataset.format to one of: {', '.join(f for f in FORMATS if f != 'auto')}"
        )
    return guessed


def read_interactions(path: Path, fmt: str, cfg: DatasetConfig) -> RawInteractions:
    """Parse ``path`` (format resolved, ``check_readable`` passed) with the column mapping of ``cfg``."""
    try:
        if fmt == "atomic":
            raw = _read_delimited(path, cfg, sep="\t", strip_types=True)
        elif fmt == "csv":
            raw = _read_delimited(path, cfg, sep=cfg.sep or ",", strip_types=False)
        elif fmt == "tsv":
            raw = _read_delimited(path, cfg, sep=cfg.sep or "\t", strip_types=False)
        elif fmt == "movielens":
            raw = _read_movielens(path, cfg)
        elif fmt == "ordered_lines":
            raw = _read_ordered_lines(path)
        else:
            raw = _read_parquet(path, cfg)
    except UnicodeDecodeError as exc:
        raise LaresError(f"{path}: not UTF-8 text ({exc.reason}); check dataset.path and dataset.format") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise LaresError(f"{path}: could not be parsed as dataset.format={fmt} ({exc}); check dataset.format and dataset.sep") from exc
    if len(raw.users) == 0:
        raise LaresError(f"{path}: contains no interactions; check dataset.path and dataset.format={fmt}")
    return raw


def read_item_titles(path: Path, item_col: str, title_col: str) -> dict[str, str]:
    """Map original item id -> title from a RecBole ``.item`` atomic file (tab-separated)."""
    try:
        columns = _header(path, "\t", strip_types=True)
        wanted = []
        for key, col in (("dataset.item_col", item_col), ("dataset.title_col", title_col)):
            _require_column(path, columns, _strip_type(col), key)
            wanted.append(columns[_strip_type(col)])
        frame = pd.read_csv(
            path,
            sep="\t",
            dtype=str,
            engine="c",
            na_filter=False,
            quoting=csv.QUOTE_NONE,
            usecols=wanted,
            encoding="utf-8",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise LaresError(f"{path}: could not be read as a RecBole .item file ({exc}); check dataset.item_file") from exc
    return dict(zip(frame[wanted[0]], frame[wanted[1]]))


def check_readable(path: Path, fmt: str, key: str = "dataset.path", origin: str | None = None) -> None:
    """Fail early and clearly on a missing, empty or binary file instead of a parser traceback;
    ``origin`` (``dataset.origin``) says where a missing file comes from."""
    if not path.is_file():
        raise LaresError(f"{path}: file not found; set {key} to an existing file{origin_note(origin)}")
    if path.stat().st_size == 0:
        raise LaresError(f"{path}: file is empty; set {key} to a file with data")
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if fmt == "parquet":
        return
    if head.startswith(b"PAR1"):
        raise LaresError(f"{path}: is a Parquet file, not {fmt} text; set dataset.format=parquet")
    if b"\x00" in head:
        raise LaresError(f"{path}: looks binary, not {fmt} text; check {key} and dataset.format")


def _header(path: Path, sep: str, strip_types: bool) -> dict[str, str]:
    """Column names in the header (``:type`` suffix stripped for atomic files) -> raw header name."""
    names = pd.read_csv(path, sep=sep, nrows=0, engine="c", quoting=_quoting(strip_types), encoding="utf-8").columns
    return {(_strip_type(n) if strip_types else str(n).strip()): str(n) for n in names}


def _strip_type(name: str) -> str:
    """``user_id:token`` -> ``user_id`` (RecBole atomic headers carry the field type)."""
    return str(name).strip().split(":", 1)[0]


def _quoting(atomic: bool) -> int:
    """RecBole atomic files are plain tab-split tokens: quotes inside titles are data, not quoting."""
    return csv.QUOTE_NONE if atomic else csv.QUOTE_MINIMAL


def _require_column(path: Path, columns: dict[str, str], col: str, key: str) -> None:
    if col not in columns:
        extra = "; or set dataset.time_col=null to use file order as chronological order" if key.endswith("time_col") else ""
        if len(columns) == 1:
            extra += " (only one column was found: check dataset.sep and dataset.format)"
        raise LaresError(
            f"{path}: column {col!r} ({key}) not found; columns found: {list(columns)}. Set {key} to the right column name{extra}"
        )


def _read_delimited(path: Path, cfg: DatasetConfig, sep: str, strip_types: bool) -> RawInteractions:
    """Atomic / CSV / TSV with a header row and the configured column mapping."""
    columns = _header(path, sep, strip_types)
    wanted = [("dataset.user_col", cfg.user_col), ("dataset.item_col", cfg.item_col)]
    if cfg.time_col is not None:
        wanted.append(("dataset.time_col", cfg.time_col))
    mapped = []
    for key, col in wanted:
        col = _strip_type(col) if strip_types else col
        _require_column(path, columns, col, key)
        mapped.append(columns[col])
    frame = pd.read_csv(
        path,
        sep=sep,
        dtype=str,
        engine="c",
        na_filter=False,
        usecols=mapped,
        quoting=_quoting(strip_types),
        encoding="utf-8",
    )
    users = _ids(path, frame[mapped[0]], cfg.user_col)
    items = _ids(path, frame[mapped[1]], cfg.item_col)
    times = _times(path, frame[mapped[2]], cfg.time_col) if cfg.time_col is not None else None
    return RawInteractions(users, items, times)


def _read_movielens(path: Path, cfg: DatasetConfig) -> RawInteractions:
    """``u.data`` (tab, ``user item rating timestamp``) or ``ratings.dat`` (``::``), no header.

    ``::`` is split as ``:`` with the empty fields skipped, which keeps pandas on its fast C
    parser (multi-character separators force the slow Python engine).
    """
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
    double_colon = "::" in first
    sep, cols = (":", [0, 2, 6]) if double_colon else ("\t", [0, 1, 3])
    width = 7 if double_colon else 4
    frame = pd.read_csv(
        path,
        sep=sep,
        header=None,
        dtype=str,
        engine="c",
        na_filter=False,
        quoting=csv.QUOTE_NONE,
        encoding="utf-8",
    )
    if frame.shape[1] != width:
        found = (
            f"found {frame.shape[1]} ':'-separated pieces instead of 7 (ids cannot contain ':' in '::' files)"
            if double_colon
            else f"found {frame.shape[1]}"
        )
        raise LaresError(
            f"{path}: MovieLens rows need 4 fields (user, item, rating, timestamp), {found}; "
            "check dataset.format (a csv/tsv file with a header needs dataset.format=csv or tsv)"
        )
    if double_colon:
        # ``u::a:b::t`` also splits into 7 fields; only empty odd fields prove every break was "::"
        glued = (frame[[1, 3, 5]] != "").to_numpy().any(axis=1)
        if glued.any():
            row = int(np.flatnonzero(glued)[0])
            raise LaresError(
                f"{path}: data row {row + 1} is not 'user::item::rating::timestamp' (a field contains ':'); "
                "'::' MovieLens files cannot hold ':' inside ids, convert the file to csv and use dataset.format=csv"
            )
    users = _ids(path, frame[cols[0]], "user (field 1)")
    items = _ids(path, frame[cols[1]], "item (field 2)")
    times = _times(path, frame[cols[2]], "timestamp (field 4)") if cfg.time_col is not None else None
    return RawInteractions(users, items, times)


def _read_ordered_lines(path: Path) -> RawInteractions:
    """``user item_1 ... item_n`` per line, already chronological; parsed by hand (no columns)."""
    users: list[str] = []
    items: list[str] = []
    with open(path, encoding="utf-8-sig") as fh:  # -sig: a BOM must not become part of the first user id
        for line in fh:
            tokens = line.split()
            if len(tokens) > 1:
                users.extend([tokens[0]] * (len(tokens) - 1))
                items.extend(tokens[1:])
    return RawInteractions(np.array(users, dtype=object), np.array(items, dtype=object), None)


def _read_parquet(path: Path, cfg: DatasetConfig) -> RawInteractions:
    import pyarrow.lib  # lazily: only parquet files need pyarrow, and it is slow to import
    import pyarrow.parquet as pq

    try:
        found = list(pq.read_schema(path).names)
    except pyarrow.lib.ArrowException as exc:
        raise LaresError(f"{path}: not a readable Parquet file ({exc}); check dataset.path and dataset.format") from exc
    columns = {name: name for name in found}
    wanted = [("dataset.user_col", cfg.user_col), ("dataset.item_col", cfg.item_col)]
    if cfg.time_col is not None:
        wanted.append(("dataset.time_col", cfg.time_col))
    for key, col in wanted:
        _require_column(path, columns, col, key)
    frame = pd.read_parquet(path, columns=[col for _, col in wanted], engine="pyarrow")
    users = _ids(path, frame[cfg.user_col], cfg.user_col)
    items = _ids(path, frame[cfg.item_col], cfg.item_col)
    times = _times(path, frame[cfg.time_col], cfg.time_col) if cfg.time_col is not None else None
    return RawInteractions(users, items, times)


def _ids(path: Path, column: pd.Series, name: str) -> np.ndarray:
    """Ids as str tokens; an empty or null id is a broken row, not a token."""
    missing = column.isna().to_numpy() | (column.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0]) + 1
        raise LaresError(f"{path}: column {name!r} has an empty id in data row {row}; fix or remove that row")
    return column.astype(str).to_numpy(dtype=object)


def _times(path: Path, column: pd.Series, name: str) -> np.ndarray:
    """Timestamps as int64 when every one is an integer (exact, e.g. nanoseconds), else float64.

    float64 would merge integer timestamps above 2**53 that are close (nanosecond datetimes
    < 256 ns apart) into ties. Anything non-numeric or missing is an error, never silently dropped.
    """
    if pd.api.types.is_datetime64_any_dtype(column):
        values = column.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        bad = column.isna().to_numpy()
    else:
        parsed = pd.to_numeric(column, errors="coerce")
        if parsed.dtype.kind in "iu" and (len(parsed) == 0 or parsed.max() <= np.iinfo(np.int64).max):
            values = parsed.to_numpy(dtype=np.int64)
        else:
            values = parsed.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LaresError(
            f"{path}: column {name!r} must hold numeric timestamps (e.g. Unix seconds); data row {row + 1} "
            f"has {column.iloc[row]!r} ({int(bad.sum())} bad rows). Fix the file, point dataset.time_col at "
            "a numeric column, or set dataset.time_col=null to use file order"
        )
    return values
