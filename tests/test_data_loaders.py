"""Loaders: every format gives the same sequences; bad files and configs give clear LaresErrors."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
from omegaconf import OmegaConf

from lares_rl.core.errors import LaresError
from lares_rl.data import DatasetConfig, embedded_ml100k_path, load_dataset
from tests.fixtures_data import (
    EXPECTED,
    ROWS,
    as_original,
    chronological,
    tiny_cfg,
    write_atomic,
    write_delimited,
    write_ordered_lines,
    write_parquet,
    write_ratings_dat,
    write_udata,
)

CUSTOM = dict(user_col="uid", item_col="iid", time_col="ts")


@pytest.mark.parametrize(
    "filename, writer, overrides",
    [
        ("tiny.inter", write_atomic, {}),
        ("u.data", write_udata, {}),
        ("ratings.dat", write_ratings_dat, {}),
        ("tiny.txt", write_ordered_lines, {}),
        ("tiny.csv", write_delimited, CUSTOM),
        ("tiny.tsv", lambda p: write_delimited(p, sep="\t"), CUSTOM),
        ("tiny.parquet", write_parquet, CUSTOM),
        ("tiny.log", lambda p: write_delimited(p, sep=";"), dict(CUSTOM, format="csv", sep=";")),
    ],
)
def test_every_format_loads_the_same_sequences(tmp_path, filename, writer, overrides):
    path = writer(tmp_path / filename)
    data = load_dataset(tiny_cfg(path, **overrides), cache_dir=tmp_path / "cache")
    assert as_original(data) == EXPECTED
    assert data.num_items == 4 and data.num_users == 3
    assert data.source == str(path.resolve())


def test_ties_keep_file_order_and_null_time_col_uses_file_order(tmp_path):
    rows = [("u", str(i), 1, 0) for i in (5, 3, 9, 1)] + [("v", "3", 1, 2), ("v", "5", 1, 1), ("v", "1", 1, 1)]
    path = write_atomic(tmp_path / "ties.inter", rows)
    assert as_original(load_dataset(tiny_cfg(path), cache_dir=tmp_path / "c")) == chronological(rows)
    by_file = as_original(load_dataset(tiny_cfg(path, time_col=None), cache_dir=tmp_path / "c"))
    assert by_file == {"u": ["5", "3", "9", "1"], "v": ["3", "5", "1"]}


def test_ids_are_kept_as_string_tokens(tmp_path):
    rows = [("007", "a", 1, 1), ("007", "b", 1, 2), ("007", "01", 1, 3), ("7", "a", 1, 1), ("7", "b", 1, 2), ("7", "1", 1, 3)]
    data = load_dataset(tiny_cfg(write_atomic(tmp_path / "tok.inter", rows)), cache_dir=tmp_path / "c")
    assert as_original(data) == {"007": ["a", "b", "01"], "7": ["a", "b", "1"]}


def test_atomic_titles_from_item_file(tmp_path):
    path = write_atomic(tmp_path / "tiny.inter")
    items = tmp_path / "tiny.item"
    items.write_text('item_id:token\tmovie_title:token_seq\n3\tThree "quoted"\n10\tTen\n99\tUnused\n')
    data = load_dataset(tiny_cfg(path, item_file=str(items)), cache_dir=tmp_path / "c")
    titles = dict(zip(data.item_ids, data.item_titles))
    assert titles == {"<pad>": "<pad>", "3": 'Three "quoted"', "5": "", "7": "", "10": "Ten"}


def _error(tmp_path, cfg) -> str:
    with pytest.raises(LaresError) as info:
        load_dataset(cfg, cache_dir=tmp_path / "cache")
    return str(info.value)


def test_missing_file(tmp_path):
    msg = _error(tmp_path, tiny_cfg(tmp_path / "nope.inter"))
    assert "nope.inter" in msg and "not found" in msg and "dataset.path" in msg


def test_binary_garbage(tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 8)
    msg = _error(tmp_path, tiny_cfg(path))
    assert "garbage.csv" in msg and "binary" in msg


def test_parquet_bytes_under_a_text_extension(tmp_path):
    path = write_parquet(tmp_path / "data.parquet")
    wrong = tmp_path / "data.csv"
    wrong.write_bytes(path.read_bytes())
    assert "dataset.format=parquet" in _error(tmp_path, tiny_cfg(wrong, **CUSTOM))


def test_text_file_declared_parquet(tmp_path):
    path = write_delimited(tmp_path / "data.csv")
    msg = _error(tmp_path, tiny_cfg(path, format="parquet", **CUSTOM))
    assert "data.csv" in msg and "Parquet" in msg


@pytest.mark.parametrize("content", ["", "user_id:token\titem_id:token\ttimestamp:float\n"])
def test_empty_file_and_header_only(tmp_path, content):
    path = tmp_path / "empty.inter"
    path.write_text(content)
    msg = _error(tmp_path, tiny_cfg(path))
    assert "empty.inter" in msg and ("empty" in msg or "no interactions" in msg)


@pytest.mark.parametrize(
    "filename, writer, overrides, key, column",
    [
        ("t.csv", write_delimited, dict(CUSTOM, user_col="user"), "dataset.user_col", "user"),
        ("t.inter", write_atomic, dict(item_col="movie"), "dataset.item_col", "movie"),
        ("t.parquet", write_parquet, dict(CUSTOM, time_col="time"), "dataset.time_col", "time"),
    ],
)
def test_misnamed_column(tmp_path, filename, writer, overrides, key, column):
    msg = _error(tmp_path, tiny_cfg(writer(tmp_path / filename), **overrides))
    assert filename in msg and repr(column) in msg and key in msg and "columns found" in msg


@pytest.mark.parametrize("bad", ["yesterday", "", "nan"])
def test_non_numeric_or_nan_timestamps(tmp_path, bad):
    rows = list(ROWS)
    rows[4] = rows[4][:3] + (bad,)
    msg = _error(tmp_path, tiny_cfg(write_delimited(tmp_path / "ts.csv", rows), **CUSTOM))
    assert "ts.csv" in msg and "'ts'" in msg and "data row 5" in msg


def test_nan_timestamp_in_parquet(tmp_path):
    rows = list(ROWS)
    rows[0] = rows[0][:3] + (float("nan"),)
    msg = _error(tmp_path, tiny_cfg(write_parquet(tmp_path / "ts.parquet", rows), **CUSTOM))
    assert "ts.parquet" in msg and "'ts'" in msg


def test_movielens_with_wrong_field_count(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t2\t3\n4\t5\t6\n")
    msg = _error(tmp_path, tiny_cfg(path))
    assert "u.data" in msg and "4 fields" in msg


def test_unknown_extension(tmp_path):
    path = tmp_path / "interactions.json"
    path.write_text("{}")
    msg = _error(tmp_path, tiny_cfg(path))
    assert ".json" in msg and "dataset.format" in msg and "parquet" in msg


def test_null_path_with_other_name(tmp_path):
    assert "dataset.path" in _error(tmp_path, DatasetConfig(name="beauty"))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(max_len=0), "dataset.max_len"),
        (dict(user_core=0), "dataset.user_core"),
        (dict(item_core=-1), "dataset.item_core"),
        (dict(format="xlsx"), "dataset.format"),
        (dict(sep="::"), "dataset.sep"),
    ],
)
def test_invalid_config_values(tmp_path, overrides, key):
    cfg = tiny_cfg(write_atomic(tmp_path / "t.inter"), **overrides)
    with pytest.raises(LaresError, match=key):
        cfg.validate()
    assert key in _error(tmp_path, cfg)


def test_unknown_format_lists_valid_ones():
    with pytest.raises(LaresError) as info:
        DatasetConfig(format="xlsx").validate()
    assert all(name in str(info.value) for name in ("atomic", "movielens", "ordered_lines", "parquet"))


def test_from_mapping_and_omegaconf_node():
    node = OmegaConf.create({"name": "x", "path": "a.csv", "user_core": 2, "max_len": 50})
    cfg = DatasetConfig.from_mapping(OmegaConf.to_container(node))
    assert (cfg.name, cfg.user_core, cfg.max_len, cfg.item_core) == ("x", 2, 50, 5)
    with pytest.raises(LaresError) as info:
        DatasetConfig.from_mapping({"name": "x", "max_lenn": 3})
    assert "dataset.max_lenn" in str(info.value) and "max_len" in str(info.value) and "user_col" in str(info.value)
    with pytest.raises(LaresError, match="dataset.max_len"):
        DatasetConfig.from_mapping({"max_len": 0})


def test_embedded_ml100k(tmp_path):
    path = embedded_ml100k_path()
    assert path.name == "ml-100k.inter" and path.is_file()
    data = load_dataset(DatasetConfig(), cache_dir=tmp_path)
    stats = data.stats()
    assert stats["users"] == 943
    assert 1300 <= stats["items"] <= 1400
    assert 99_000 <= stats["interactions"] <= 100_000
    assert data.item_titles is not None and data.item_titles[data.encode_items(["1"])[0][0]] == "Toy Story"


def test_embedded_ml100k_missing_wheel(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(LaresError, match=r"pip install --no-deps recbole==1\.2\.1"):
        embedded_ml100k_path()


def test_item_ids_round_trip(tmp_path):
    data = load_dataset(tiny_cfg(write_atomic(tmp_path / "t.inter")), cache_dir=tmp_path / "c")
    assert data.item_ids[0] == "<pad>"
    assert list(data.item_ids[1:]) == ["3", "5", "7", "10"]  # numeric order, not "10" < "3"
    assert np.array_equal(data.item_ids[data.items], np.concatenate([EXPECTED[u] for u in ("1", "2", "3")]))


def test_item_file_without_title_column(tmp_path):
    items = tmp_path / "t.item"
    items.write_text("item_id:token\tname:token_seq\n3\tThree\n")
    msg = _error(tmp_path, tiny_cfg(write_atomic(tmp_path / "t.inter"), item_file=str(items)))
    assert "t.item" in msg and "dataset.title_col" in msg and "'name'" in msg
