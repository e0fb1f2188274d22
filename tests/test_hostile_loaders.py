"""Property-based hostile-input tests for the data loaders (``load_dataset`` on every format).

Every generated file must end in either a correct ``SequenceData`` or a ``LaresError`` whose
message names the file: never a hang, a parser/decoder exception leaking through, or a silently
wrong result. Decisions the properties pin down (also stated in the loader docstrings):

* ids are opaque string tokens, kept verbatim: ``"007"``, ``"-2"``, ``"3.5"``, ``"nan"``,
  ``str(10**30)`` or a 300-character string are all accepted as distinct items;
* duplicated rows are kept as repeated interactions (nothing is deduplicated);
* a UTF-8 byte-order mark is ignored in every text format;
* users/items below the cores and users with < 3 interactions are dropped; an empty result is a
  ``LaresError`` naming the cores.

For valid logs the result is compared with a naive pure-Python reference (k-core loop, stable
sort by time, sorted remapping).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lares_rl.core.errors import LaresError
from lares_rl.data import load_dataset
from tests.fixtures_data import tiny_cfg
from tests.hostile import report_examples, scaled

EXAMPLES: Counter = Counter()  # examples run per property, reported at module teardown
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# format -> (file name, config overrides)
FORMATS = {
    "atomic": ("log.inter", dict(format="atomic")),
    "movielens": ("u.data", dict(format="movielens")),
    "movielens_dat": ("ratings.dat", dict(format="movielens")),
    "ordered_lines": ("log.txt", dict(format="ordered_lines", time_col=None)),
    "csv": ("log.csv", dict(format="csv", user_col="uid", item_col="iid", time_col="ts")),
    "tsv": ("log.tsv", dict(format="tsv", user_col="uid", item_col="iid", time_col="ts")),
    "parquet": ("log.parquet", dict(format="parquet", user_col="uid", item_col="iid", time_col="ts")),
}
TEXT_FORMATS = [f for f in FORMATS if f != "parquet"]
# characters a token may not contain in each format (separators, quoting, line breaks)
FORBIDDEN = {
    "atomic": "\t\r\n",
    "movielens": "\t\r\n",
    "movielens_dat": ":\r\n",
    "ordered_lines": "",  # tokens never contain whitespace (checked below)
    "csv": ',"\r\n',
    "tsv": '\t"\r\n',
    "parquet": "",
}


@pytest.fixture(scope="module", autouse=True)
def _report_examples():
    yield
    report_examples("loaders", EXAMPLES)


def _tmpdir() -> tempfile.TemporaryDirectory:
    """A fresh directory per example; on tmpfs when there is one, so the cache's fsyncs cost nothing."""
    return tempfile.TemporaryDirectory(dir=SHM)


SHM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _load(path: Path, fmt: str, **overrides) -> object:
    return load_dataset(tiny_cfg(path, name="hostile", **(FORMATS[fmt][1] | overrides)), cache_dir=path.parent / "cache")


def _expect_clean_failure(exc: LaresError, path: Path) -> None:
    message = str(exc)
    assert message and (str(path) in message or path.name in message), message


def _originals(data) -> dict[str, list[str]]:
    return {
        str(data.user_ids[u]): [str(data.item_ids[i]) for i in data.items[data.offsets[u] : data.offsets[u + 1]]]
        for u in range(data.num_users)
    }


def _check_structure(data) -> None:
    """Invariants every loaded dataset must satisfy, whatever the input."""
    n = data.num_items
    assert data.items.min() >= 1 and data.items.max() <= n
    assert sorted(set(data.items.tolist())) == list(range(1, n + 1))  # ids 1..N, all used
    assert str(data.item_ids[0]) == "<pad>" and len(set(data.item_ids[1:].tolist())) == n
    assert len(set(data.user_ids.tolist())) == data.num_users
    assert (data.lengths >= 3).all()


# ------------------------------------------------------------------ valid logs vs a reference

TRICKY_TOKENS = [
    "0",
    "007",
    "7",
    "-2",
    "-0",
    "+5",
    "3.5",
    "1e3",
    "nan",
    "NaN",
    "NULL",
    "None",
    "NA",
    "#x",
    "é",
    "中文",
    "x" * 300,
    str(10**30),
    str(10**30 + 1),
    "1_000",
    "٣",
    "a:b",
    "a,b",
    'q"q',
    "a b",
]
token = st.one_of(
    st.sampled_from(TRICKY_TOKENS),
    st.integers(0, 10**30).map(str),
    st.text(st.characters(categories=("L", "N"), include_characters="-._"), min_size=1, max_size=6),
)


def _token_ok(tok: str, fmt: str) -> bool:
    return bool(tok.strip()) and tok == tok.strip() and not any(c in FORBIDDEN[fmt] for c in tok) and not any(c.isspace() for c in tok)


@st.composite
def logs(draw, fmt: str):
    users = draw(st.lists(token.filter(lambda t: _token_ok(t, fmt)), min_size=1, max_size=5, unique=True))
    items = draw(st.lists(token.filter(lambda t: _token_ok(t, fmt)), min_size=1, max_size=8, unique=True))
    # ns timestamps (> 2**53) are only exact in an all-integer column, so they get a log of their own
    ns = st.integers(0, 300).map(lambda x: 1_700_000_000_000_000_000 + x)
    time = draw(
        st.sampled_from([ns, st.one_of(st.integers(-5, 5), st.integers(-(10**9), 10**9), st.integers(-20, 20).map(lambda x: x / 2))])
    )
    rows = draw(st.lists(st.tuples(st.sampled_from(users), st.sampled_from(items), time), min_size=1, max_size=40))
    return rows


def _ordered_lines_rows(rows):
    """ordered_lines has no timestamps: one line per user, and file order IS the time order.

    A user may appear on several lines (its items are concatenated); the reference time is the
    global position.
    """
    return [(u, i, float(pos)) for pos, (u, i, _) in enumerate(rows)]


def _write(path: Path, fmt: str, rows, encoding: str = "utf-8") -> None:
    if fmt == "parquet":
        pd.DataFrame(rows, columns=["uid", "iid", "ts"]).to_parquet(path, engine="pyarrow", index=False)
        return
    if fmt == "atomic":
        lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"] + [f"{u}\t{i}\t1\t{t!r}" for u, i, t in rows]
    elif fmt == "movielens":
        lines = [f"{u}\t{i}\t1\t{t!r}" for u, i, t in rows]
    elif fmt == "movielens_dat":
        lines = [f"{u}::{i}::1::{t!r}" for u, i, t in rows]
    elif fmt == "ordered_lines":
        lines = [f"{u} {i}" for u, i, _ in rows]
    elif fmt == "csv":
        lines = ["uid,iid,rating,ts"] + [f"{u},{i},1,{t!r}" for u, i, t in rows]
    else:
        lines = ["uid\tiid\trating\tts"] + [f"{u}\t{i}\t1\t{t!r}" for u, i, t in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def reference(rows, user_core: int, item_core: int) -> dict[str, list[str]]:
    """Naive pipeline: iterative k-core, then drop users with < 3 items (re-coring), stable time sort."""
    keep = list(range(len(rows)))

    def core(keep, ucore):
        while True:
            uc = Counter(rows[r][0] for r in keep)
            ic = Counter(rows[r][1] for r in keep)
            new = [r for r in keep if uc[rows[r][0]] >= ucore and ic[rows[r][1]] >= item_core]
            if new == keep:
                return keep
            keep = new

    keep = core(core(keep, user_core), max(user_core, 3))
    out: dict[str, list] = {}
    for r in keep:  # file order, so the stable sort below keeps it on ties
        out.setdefault(rows[r][0], []).append(rows[r])
    return {u: [i for _, i, _ in sorted(seq, key=lambda x: x[2])] for u, seq in out.items()}


def _expected_item_order(tokens: list[str]) -> list[str]:
    """The documented remapping: numeric order when every id is a plain integer, else lexical."""
    if all(re.fullmatch(r"\d{1,18}", t) for t in tokens):
        return sorted(tokens, key=lambda t: (int(t), t))
    return sorted(tokens)


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(max_examples=scaled(25), **SETTINGS)
@given(data=st.data(), user_core=st.integers(1, 3), item_core=st.integers(1, 3))
def test_valid_logs_match_reference(fmt, data, user_core, item_core):
    EXAMPLES[f"valid_{fmt}"] += 1
    rows = data.draw(logs(fmt))
    if fmt == "ordered_lines":
        rows = _ordered_lines_rows(rows)
    expected = reference(rows, user_core, item_core)
    with _tmpdir() as tmp:
        path = Path(tmp) / FORMATS[fmt][0]
        _write(path, fmt, rows)
        if not expected:
            with pytest.raises(LaresError, match=r"no (interactions left|user has)") as info:
                _load(path, fmt, user_core=user_core, item_core=item_core)
            _expect_clean_failure(info.value, path.resolve())
            return
        loaded = _load(path, fmt, user_core=user_core, item_core=item_core)
    _check_structure(loaded)
    assert _originals(loaded) == expected  # same users, same chronological items, duplicates kept
    # k-core holds on the result
    user_counts = loaded.lengths
    item_counts = Counter(loaded.items.tolist())
    assert (user_counts >= max(user_core, 3)).all() and min(item_counts.values()) >= item_core
    # item ids 1..N map back to the original tokens in the documented order
    assert [str(x) for x in loaded.item_ids[1:]] == _expected_item_order(sorted({i for s in expected.values() for i in s}))
    assert loaded.filter_log["final_interactions"] == sum(len(s) for s in expected.values())


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@settings(max_examples=scaled(15), **SETTINGS)
@given(data=st.data(), encoding=st.sampled_from(["utf-8-sig", "latin-1", "utf-16", "cp1252"]))
def test_other_encodings_load_identically_or_fail_clearly(fmt, data, encoding):
    """A BOM is ignored; other encodings either happen to be valid UTF-8 (ASCII-only ids) and load
    identically, or are a LaresError (not UTF-8 / binary), never mojibake ids."""
    EXAMPLES[f"encoding_{fmt}"] += 1
    rows = data.draw(logs(fmt))
    if fmt == "ordered_lines":
        rows = _ordered_lines_rows(rows)
    expected = reference(rows, 1, 1)
    with _tmpdir() as tmp:
        path = Path(tmp) / FORMATS[fmt][0]
        try:
            _write(path, fmt, rows, encoding)
        except UnicodeEncodeError:
            assume(False)  # ids this encoding cannot represent
        raw = path.read_bytes()
        try:
            same_text = encoding == "utf-8-sig" or raw.decode("utf-8") == _decoded(raw, encoding)
        except UnicodeDecodeError:
            same_text = False
        try:
            loaded = _load(path, fmt)
        except LaresError as exc:
            _expect_clean_failure(exc, path.resolve())
            if same_text:
                assert not expected, f"valid text refused: {exc}"
            else:
                assert re.search("not UTF-8|looks binary", str(exc)), str(exc)
            return
    assert same_text, "non-UTF-8 bytes were decoded into ids"
    assert _originals(loaded) == expected


def _decoded(raw: bytes, encoding: str) -> str:
    return raw.decode(encoding)


# ------------------------------------------------------------------ hostile bytes and fields

# Pieces that break parsers: separators, quotes, line breaks, BOMs, NUL, invalid UTF-8, Parquet magic.
PIECES = [
    "\t",
    ",",
    ";",
    ":",
    "::",
    '"',
    "'",
    "\n",
    "\r",
    "\r\n",
    " ",
    "\ufeff",
    "#",
    "\\",
    "user_id:token",
    "item_id:token",
    "timestamp:float",
    "uid",
    "iid",
    "ts",
    "nan",
    "inf",
    "-inf",
    "",
    "1e400",
    "3.5",
    "-2",
    str(10**30),
    "é",
    "\u2028",
    "\x85",
    "\x0c",
]
hostile_bytes = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), min_size=1, max_size=60).map(
        lambda parts: "".join(parts).encode("utf-8", errors="surrogatepass")
    ),
    st.tuples(
        st.binary(max_size=8), st.sampled_from([b"PAR1", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x80"]), st.binary(max_size=40)
    ).map(lambda t: t[0] + t[1] + t[2]),
)


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(max_examples=scaled(60), **SETTINGS)
@given(content=hostile_bytes, time_col=st.booleans())
def test_hostile_bytes_give_data_or_lares_error(fmt, content, time_col):
    """Random bytes (a ``.parquet`` file here never holds Parquet bytes): data or a clear error."""
    EXAMPLES[f"bytes_{fmt}"] += 1
    overrides = {} if time_col or fmt == "ordered_lines" else {"time_col": None}
    with _tmpdir() as tmp:
        path = Path(tmp) / FORMATS[fmt][0]
        path.write_bytes(content)
        try:
            loaded = _load(path, fmt, **overrides)
        except LaresError as exc:
            _expect_clean_failure(exc, path.resolve())
            return
    _check_structure(loaded)
    # whatever was accepted must literally come from the file: no invented or mangled ids
    text = content.decode("utf-8")
    text = text[1:] if text.startswith("\ufeff") else text
    unquoted = text.replace('""', '"')  # CSV quoting: "a""b" is the token a"b
    for token_ in [*loaded.user_ids.tolist(), *loaded.item_ids[1:].tolist()]:
        assert token_ in text or token_ in unquoted, f"id {token_!r} does not occur in the file"


BAD_TIMES = ["nan", "NaN", "inf", "-inf", "", "abc", "1e400", "0x10", "1_0", "--1", "1,5", "None", "NULL", "3.5.1"]


@pytest.mark.parametrize("fmt", ["atomic", "movielens", "movielens_dat", "csv", "tsv", "parquet"])
@settings(max_examples=scaled(20), **SETTINGS)
@given(data=st.data(), bad=st.sampled_from(BAD_TIMES))
def test_bad_timestamps_are_refused_naming_the_row(fmt, data, bad):
    EXAMPLES[f"timestamps_{fmt}"] += 1
    rows = data.draw(logs(fmt))
    if fmt in ("csv", "tsv") and ("," in bad and fmt == "csv"):
        bad = "1;5"
    at = data.draw(st.integers(0, len(rows) - 1))
    rows = [(u, i, (bad if r == at else t)) for r, (u, i, t) in enumerate(rows)]
    with _tmpdir() as tmp:
        path = Path(tmp) / FORMATS[fmt][0]
        if fmt == "parquet":
            pd.DataFrame([(u, i, str(t)) for u, i, t in rows], columns=["uid", "iid", "ts"]).to_parquet(path, index=False)
        else:
            # write the bad value raw (no repr quoting): _write uses !r, so pre-render numbers
            _write(path, fmt, [(u, i, _Raw(t if isinstance(t, str) else repr(t))) for u, i, t in rows])
        with pytest.raises(LaresError, match=rf"timestamps.*data row {at + 1} ") as info:
            _load(path, fmt)
    _expect_clean_failure(info.value, path.resolve())


class _Raw(str):
    """A string whose repr is itself, so ``_write`` puts it into the file verbatim."""

    def __repr__(self) -> str:
        return str(self)


@pytest.mark.parametrize("fmt", ["atomic", "csv", "tsv", "movielens", "parquet"])
@settings(max_examples=scaled(15), **SETTINGS)
@given(data=st.data(), which=st.sampled_from(["user", "item"]))
def test_empty_ids_are_refused_naming_the_row(fmt, data, which):
    EXAMPLES[f"empty_id_{fmt}"] += 1
    rows = data.draw(logs(fmt))
    at = data.draw(st.integers(0, len(rows) - 1))
    blank = data.draw(st.sampled_from(["", " ", "  "])) if fmt != "movielens" else ""
    rows = [((blank, i, t) if which == "user" else (u, blank, t)) if r == at else (u, i, t) for r, (u, i, t) in enumerate(rows)]
    with _tmpdir() as tmp:
        path = Path(tmp) / FORMATS[fmt][0]
        _write(path, fmt, rows)
        with pytest.raises(LaresError, match=rf"empty id in data row {at + 1};|MovieLens rows need") as info:
            _load(path, fmt)
    _expect_clean_failure(info.value, path.resolve())


@settings(max_examples=scaled(30), **SETTINGS)
@given(rows=logs("movielens_dat"), at=st.integers(0, 1000), glitch=st.sampled_from(["1:2:3", "a:b::c", ":x", "x:"]))
def test_ratings_dat_with_single_colons_is_refused(rows, at, glitch):
    """``user::item::rating::ts`` lines whose fields contain ``:`` cannot be split unambiguously."""
    EXAMPLES["dat_colons"] += 1
    at %= len(rows)
    with _tmpdir() as tmp:
        path = Path(tmp) / "ratings.dat"
        lines = [f"{u}::{i}::1::{t!r}" for u, i, t in rows]
        u, i, t = rows[at]
        lines[at] = f"{glitch}::{i}::1::{t!r}" if at % 2 else f"{u}::{glitch}::{t!r}"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with pytest.raises(LaresError) as info:
            _load(path, "movielens_dat")
    _expect_clean_failure(info.value, path.resolve())
    assert "::" in str(info.value) or "fields" in str(info.value)
