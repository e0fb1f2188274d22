"""k-core, remapping, leave-one-out views: checked against naive pure-Python references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lares_rl.core.errors import LaresError
from lares_rl.data import SequenceData, format_stats, load_dataset
from lares_rl.data.filters import kcore_mask
from tests.fixtures_data import (
    EXPECTED,
    as_original,
    chronological,
    random_rows,
    random_sequences,
    tiny_cfg,
    write_atomic,
)


def brute_force_kcore(rows: list[tuple], user_core: int, item_core: int) -> list[tuple]:
    """Drop users, then items, one pass at a time, until a full pass changes nothing."""
    kept = list(rows)
    while True:
        users: dict[str, int] = {}
        for row in kept:
            users[row[0]] = users.get(row[0], 0) + 1
        after_users = [r for r in kept if users[r[0]] >= user_core]
        items: dict[str, int] = {}
        for row in after_users:
            items[row[1]] = items.get(row[1], 0) + 1
        after_items = [r for r in after_users if items[r[1]] >= item_core]
        if len(after_items) == len(kept):
            return kept
        kept = after_items


@pytest.mark.parametrize("seed", range(12))
def test_kcore_matches_brute_force(seed):
    rows = random_rows(seed, n_users=40, n_items=30, n=300)
    user_core, item_core = 2 + seed % 4, 2 + (seed // 4) % 4
    users = np.array([int(r[0]) for r in rows])
    items = np.array([int(r[1]) for r in rows])
    mask = kcore_mask(users, items, user_core, item_core)
    assert [r for r, keep in zip(rows, mask) if keep] == brute_force_kcore(rows, user_core, item_core)


@pytest.mark.parametrize("seed", range(4))
def test_loaded_dataset_equals_reference_pipeline(tmp_path, seed):
    rows = random_rows(seed, n_users=30, n_items=25, n=250)
    path = write_atomic(tmp_path / "r.inter", rows)
    data = load_dataset(tiny_cfg(path, user_core=3, item_core=2), cache_dir=tmp_path / "c")
    reference = chronological(brute_force_kcore(rows, 3, 2))
    assert as_original(data) == reference
    assert list(data.user_ids) == sorted(reference, key=int)
    assert data.filter_log["raw_interactions"] == 250
    assert data.filter_log["final_interactions"] == len(data.items)


def test_short_users_dropped_and_logged(tmp_path):
    rows = [("a", "1", 1, 1), ("a", "2", 1, 2)] + [("b", i, 1, t) for t, i in enumerate("1231")]
    data = load_dataset(tiny_cfg(write_atomic(tmp_path / "s.inter", rows)), cache_dir=tmp_path / "c")
    assert as_original(data) == {"b": ["1", "2", "3", "1"]}
    assert data.filter_log["dropped_short_users"] == 1
    assert data.filter_log["kcore_users"] == 2


def test_no_user_long_enough(tmp_path):
    rows = [("a", "1", 1, 1), ("a", "2", 1, 2), ("b", "1", 1, 1)]
    with pytest.raises(LaresError, match="leave-one-out"):
        load_dataset(tiny_cfg(write_atomic(tmp_path / "s.inter", rows)), cache_dir=tmp_path / "c")


def test_empty_after_kcore_names_counts_and_keys(tmp_path):
    with pytest.raises(LaresError) as info:
        load_dataset(tiny_cfg(write_atomic(tmp_path / "t.inter"), user_core=5), cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert "t.inter" in msg and "3 users / 4 items / 12 interactions" in msg
    assert "dataset.user_core" in msg and "dataset.item_core" in msg


def test_remapping_padding_and_ids(tmp_path):
    data = load_dataset(tiny_cfg(write_atomic(tmp_path / "t.inter")), cache_dir=tmp_path / "c")
    assert data.items.dtype == np.int64 and data.offsets.dtype == np.int64
    assert data.items.min() == 1 and data.items.max() == data.num_items == 4
    assert list(data.offsets) == [0, 4, 8, 12]
    known, unknown = data.encode_items(["10", "nope", "3", 5])
    assert list(known) == [4, 1, 2] and unknown == ["nope"]
    assert list(data.item_ids[known]) == ["10", "3", "5"]
    assert as_original(data) == EXPECTED


def reference_rows(seqs: list[list[int]], max_len: int):
    rows = []
    for user, seq in enumerate(seqs):
        train = seq[:-2]
        for t in range(1, len(train)):
            hist = train[:t][-max_len:]
            rows.append((user, hist + [0] * (max_len - len(hist)), len(hist), train[t]))
    return rows


def reference_eval(seqs: list[list[int]], split: str, max_len: int):
    cut = {"valid": 2, "test": 1}[split]
    out = []
    for seq in seqs:
        hist = seq[: len(seq) - cut][-max_len:]
        out.append((hist + [0] * (max_len - len(hist)), len(hist), seq[len(seq) - cut]))
    return out


@pytest.mark.parametrize("seed, max_len", [(0, 1), (1, 3), (2, 5), (3, 40)])
def test_train_rows_match_loop_reference(seed, max_len):
    seqs = random_sequences(seed, n_users=25, n_items=15, max_n=12)
    data = SequenceData.from_sequences(seqs, num_items=15)
    seq_t, len_t, tgt_t = data.train_rows(max_len)
    ref = reference_rows(seqs, max_len)
    assert seq_t.dtype == len_t.dtype == tgt_t.dtype == torch.int64
    assert seq_t.shape == (len(ref), max_len)
    assert seq_t.tolist() == [r[1] for r in ref]
    assert len_t.tolist() == [r[2] for r in ref]
    assert tgt_t.tolist() == [r[3] for r in ref]
    assert data.train_row_user_index().tolist() == [r[0] for r in ref]


def test_train_rows_when_every_user_has_three_items():
    data = SequenceData.from_sequences([[1, 2, 3], [3, 2, 1]])
    seqs, lengths, targets = data.train_rows(4)
    assert seqs.shape == (0, 4) and lengths.shape == targets.shape == (0,)


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("max_len", [1, 4, 30])
def test_eval_inputs_and_history_csr(split, max_len):
    seqs = random_sequences(7, n_users=20, n_items=10, max_n=10)
    data = SequenceData.from_sequences(seqs, num_items=10)
    seq_t, len_t, tgt_t = data.eval_inputs(split, max_len)
    ref = reference_eval(seqs, split, max_len)
    assert seq_t.tolist() == [r[0] for r in ref]
    assert len_t.tolist() == [r[1] for r in ref]
    assert tgt_t.tolist() == [r[2] for r in ref]
    indptr, hist = data.history_csr(split)
    cut = {"valid": 2, "test": 1}[split]
    assert indptr.dtype == hist.dtype == torch.int64
    for user, seq in enumerate(seqs):
        assert hist[indptr[user] : indptr[user + 1]].tolist() == seq[: len(seq) - cut]


def test_bad_split_and_max_len():
    data = SequenceData.from_sequences([[1, 2, 3]])
    with pytest.raises(LaresError, match="'train'"):
        data.eval_inputs("train", 5)
    with pytest.raises(LaresError, match="valid, test"):
        data.history_csr("dev")
    with pytest.raises(LaresError, match="dataset.max_len"):
        data.train_rows(0)


def test_inconsistent_arrays_rejected():
    with pytest.raises(ValueError, match=">= 3"):
        SequenceData.from_sequences([[1, 2]])
    with pytest.raises(ValueError, match="1..num_items"):
        SequenceData.from_sequences([[1, 2, 9]], num_items=5)


def test_stats_and_format_stats(tmp_path):
    data = load_dataset(tiny_cfg(write_atomic(tmp_path / "t.inter")), cache_dir=tmp_path / "c")
    stats = data.stats()
    assert stats == {"users": 3, "items": 4, "interactions": 12, "avg_len": 4.0, "sparsity": 0.0}
    text = format_stats(data)
    for fragment in ("tiny", "t.inter", "users         3", "interactions  12", "avg length    4.00", "k-core", "short users"):
        assert fragment in text


@pytest.mark.parametrize("max_len,stride", [(4, 4), (4, 2), (3, 1), (6, 3)])
def test_train_windows_supervise_every_training_target_once(max_len, stride):
    rng = np.random.default_rng(max_len * 10 + stride)
    sequences = [list(rng.integers(1, 30, size=int(rng.integers(3, 17)))) for _ in range(12)]
    data = SequenceData.from_sequences(sequences, num_items=30)
    seqs, lengths, targets = data.train_windows(max_len, stride)
    _, _, row_targets = data.train_rows(max_len)
    supervised = targets[targets > 0]
    assert len(supervised) == len(row_targets)
    assert sorted(supervised.tolist()) == sorted(row_targets.tolist())
    for w in range(len(seqs)):
        n = int(lengths[w])
        # the item after position i is the target at i; the last position is always supervised
        assert targets[w, n - 1] > 0 and (targets[w, n:] == 0).all() and (seqs[w, n:] == 0).all()
        for i in range(n - 1):
            if targets[w, i] > 0:
                assert targets[w, i] == seqs[w, i + 1]


def test_train_windows_reject_bad_stride():
    data = SequenceData.from_sequences([[1, 2, 3, 4, 5]])
    with pytest.raises(LaresError, match="spt.dense_stride"):
        data.train_windows(4, 5)
