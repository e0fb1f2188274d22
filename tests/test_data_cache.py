"""Cache: hits skip parsing, damage and stale settings force a rebuild, writes are atomic."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lares_rl.data import cache, load_dataset, pipeline
from tests.fixtures_data import EXPECTED, ROWS, as_original, tiny_cfg, write_atomic


def _only_cache_file(cache_dir):
    files = sorted(cache_dir.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz", files  # no leftover temp files
    return files[0]


def _forbid_parsing(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("raw file parsed although the cache should have been used")

    monkeypatch.setattr(pipeline, "read_interactions", boom)


def _same(a, b):
    assert np.array_equal(a.items, b.items) and np.array_equal(a.offsets, b.offsets)
    assert list(a.user_ids) == list(b.user_ids) and list(a.item_ids) == list(b.item_ids)
    assert (a.fingerprint, a.num_items, a.filter_log, a.name) == (b.fingerprint, b.num_items, b.filter_log, b.name)


def test_second_load_hits_cache(tmp_path, monkeypatch):
    cfg = tiny_cfg(write_atomic(tmp_path / "t.inter"))
    first = load_dataset(cfg, cache_dir=tmp_path / "cache")
    path = _only_cache_file(tmp_path / "cache")
    assert path.name == f"tiny-{first.fingerprint[:16]}.npz"
    _forbid_parsing(monkeypatch)
    second = load_dataset(cfg, cache_dir=tmp_path / "cache")
    _same(first, second)
    assert as_original(second) == EXPECTED
    # max_len does not change processing, so it shares the cache
    third = load_dataset(tiny_cfg(cfg.path, max_len=50), cache_dir=tmp_path / "cache")
    assert third.fingerprint == first.fingerprint


def test_titles_survive_the_cache(tmp_path, monkeypatch):
    items = tmp_path / "t.item"
    items.write_text("item_id:token\tmovie_title:token_seq\n3\tThree\n")
    cfg = tiny_cfg(write_atomic(tmp_path / "t.inter"), item_file=str(items))
    first = load_dataset(cfg, cache_dir=tmp_path / "c")
    _forbid_parsing(monkeypatch)
    assert list(load_dataset(cfg, cache_dir=tmp_path / "c").item_titles) == list(first.item_titles)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "tamper"])
def test_damaged_cache_is_rebuilt(tmp_path, caplog, monkeypatch, damage):
    cfg = tiny_cfg(write_atomic(tmp_path / "t.inter"))
    first = load_dataset(cfg, cache_dir=tmp_path / "c")
    path = _only_cache_file(tmp_path / "c")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:  # a valid npz whose payload no longer matches its checksum
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["items"] = arrays["items"][::-1].copy()
        np.savez(path, **arrays)
    with caplog.at_level(logging.WARNING, logger="lares_rl.data"):
        rebuilt = load_dataset(cfg, cache_dir=tmp_path / "c")
    assert "rebuilding" in caplog.text
    _same(first, rebuilt)
    caplog.clear()
    _forbid_parsing(monkeypatch)  # the rebuilt file is valid again
    with caplog.at_level(logging.WARNING, logger="lares_rl.data"):
        _same(first, load_dataset(cfg, cache_dir=tmp_path / "c"))
    assert caplog.text == ""


def test_cache_from_other_processing_code_is_rebuilt_and_the_fingerprint_kept(tmp_path, caplog, monkeypatch):
    """A parsing fix must not be hidden by old caches, and must not invalidate checkpoints whose
    data it leaves unchanged: the cache records the code version, the fingerprint does not."""
    cfg = tiny_cfg(write_atomic(tmp_path / "t.inter"))
    first = load_dataset(cfg, cache_dir=tmp_path / "c")
    monkeypatch.setattr(cache, "processing_code_version", lambda: "other code")
    parsed = []
    read = pipeline.read_interactions
    monkeypatch.setattr(pipeline, "read_interactions", lambda *a, **k: parsed.append(1) or read(*a, **k))
    with caplog.at_level(logging.WARNING, logger="lares_rl.data"):
        rebuilt = load_dataset(cfg, cache_dir=tmp_path / "c")
    assert parsed == [1] and "other data-processing code" in caplog.text
    _same(first, rebuilt)  # same fingerprint: checkpoints of this data still match it
    assert _only_cache_file(tmp_path / "c").name == f"tiny-{first.fingerprint[:16]}.npz"


def test_changed_content_or_settings_change_fingerprint(tmp_path):
    path = write_atomic(tmp_path / "t.inter")
    base = load_dataset(tiny_cfg(path), cache_dir=tmp_path / "c").fingerprint
    other_core = load_dataset(tiny_cfg(path, item_core=2), cache_dir=tmp_path / "c").fingerprint
    write_atomic(path, [("2", "5", 5, 70) if row[:2] == ("2", "5") else row for row in ROWS])
    changed = load_dataset(tiny_cfg(path), cache_dir=tmp_path / "c")
    assert len({base, other_core, changed.fingerprint}) == 3
    assert len(list((tmp_path / "c").glob("*.npz"))) == 3
    assert as_original(changed) == dict(EXPECTED, **{"2": ["10", "3", "7", "5"]})  # not the stale cache


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import errno

    import lares_rl.core.atomic as atomic_mod

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_mod.os, "fsync", disk_full)  # the bytes were written, then the disk filled
    data = load_dataset(tiny_cfg(write_atomic(tmp_path / "t.inter")), cache_dir=tmp_path / "c")
    assert data.num_users == 3  # a cache that cannot be written is not fatal
    assert list((tmp_path / "c").iterdir()) == []


def test_the_cache_lives_in_one_user_level_place_unless_told_otherwise(tmp_path, monkeypatch):
    """``cache_dir`` wins, then $LARES_RL_CACHE_DIR, then lares_rl/ in the user's cache directory
    ($XDG_CACHE_HOME when absolute, else ~/.cache on Linux): never the working directory."""
    monkeypatch.setattr(cache.sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LARES_RL_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache.resolve_cache_dir(None) == tmp_path / "home" / ".cache" / "lares_rl"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache.resolve_cache_dir(None) == tmp_path / "home" / ".cache" / "lares_rl"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.resolve_cache_dir(None) == tmp_path / "xdg" / "lares_rl"
    monkeypatch.setattr(cache.sys, "platform", "darwin")
    assert cache.resolve_cache_dir(None) == tmp_path / "home" / "Library" / "Caches" / "lares_rl"
    monkeypatch.setenv("LARES_RL_CACHE_DIR", str(tmp_path / "env"))
    assert cache.resolve_cache_dir(None) == tmp_path / "env"
    assert cache.resolve_cache_dir(tmp_path / "key") == tmp_path / "key"


def test_load_dataset_caches_where_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.setenv("LARES_RL_CACHE_DIR", str(tmp_path / "env_cache"))
    monkeypatch.chdir(tmp_path)
    load_dataset(tiny_cfg(write_atomic(tmp_path / "t.inter")))
    _only_cache_file(tmp_path / "env_cache")
    assert not (tmp_path / ".lares_cache").exists()
