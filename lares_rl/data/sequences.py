"""Processed per-user item sequences and the leave-one-out views the trainers read.

Sequences are stored CSR-style (one flat ``items`` array plus ``offsets``) so every view below is
a handful of vectorised numpy gathers: building ~100k training rows costs milliseconds, and
there is no per-user Python loop to dominate start-up on large datasets.

Per user with n >= 3 items: the last item is the test target, the second last the validation
target, the first n - 2 items are the training part. Histories are LEFT-aligned in a
``[rows, max_len]`` int64 matrix (history in ``seqs[r, :length]``, padding item 0 after it) and
keep the most recent ``max_len`` items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from lares_rl.core.errors import LaresError

PAD_TOKEN = "<pad>"
# How many trailing items of each user a split holds out: its target and everything after it.
_HELD_OUT = {"valid": 2, "test": 1}


@dataclass(frozen=True, eq=False)
class SequenceData:
    """Chronological item sequences of every user, item ids remapped to 1..N (0 = padding)."""

    items: np.ndarray
    offsets: np.ndarray
    num_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: np.ndarray | None
    fingerprint: str
    source: str
    filter_log: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        """Reject inconsistent arrays (e.g. a damaged cache) before any view silently misreads them."""
        items, offsets = self.items, self.offsets
        if items.dtype != np.int64 or offsets.dtype != np.int64 or items.ndim != 1 or offsets.ndim != 1:
            raise ValueError("SequenceData.items and .offsets must be 1-D int64 arrays")
        if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(items):
            raise ValueError("SequenceData.offsets must start at 0, end at len(items) and hold >= 1 user")
        if np.diff(offsets).min() < 3:
            raise ValueError("every user needs >= 3 items for the leave-one-out split")
        if items.min() < 1 or items.max() > self.num_items:
            raise ValueError("SequenceData.items must lie in 1..num_items (0 is padding)")
        if len(self.user_ids) != len(offsets) - 1 or len(self.item_ids) != self.num_items + 1:
            raise ValueError("SequenceData.user_ids must have one id per user and item_ids num_items + 1")
        if self.item_titles is not None and len(self.item_titles) != self.num_items + 1:
            raise ValueError("SequenceData.item_titles must have num_items + 1 entries")

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]], num_items: int | None = None) -> SequenceData:
        """In-memory data from already remapped sequences (ids 1..N): for tests and examples."""
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        n = int(items.max()) if num_items is None else int(num_items)
        return cls(
            items=items,
            offsets=offsets,
            num_items=n,
            user_ids=np.array([str(u) for u in range(len(sequences))], dtype=np.str_),
            item_ids=np.array([PAD_TOKEN] + [str(i) for i in range(1, n + 1)], dtype=np.str_),
            item_titles=None,
            fingerprint="in-memory",
            source="<memory>",
        )

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Number of items of each user, int64 [U]."""
        return np.diff(self.offsets)

    def stats(self) -> dict:
        """Headline numbers: users, items, interactions, average length, sparsity."""
        nnz = len(self.items)
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": nnz,
            "avg_len": nnz / self.num_users,
            "sparsity": 1.0 - nnz / (self.num_users * self.num_items),
        }

    def train_row_user_index(self) -> np.ndarray:
        """User of each training row, int64 [R], in the row order of ``train_rows``."""
        return np.repeat(np.arange(self.num_users, dtype=np.int64), self.lengths - 3)

    def train_rows(self, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every prefix of each user's training part: (seqs [R, max_len], lengths [R], targets [R]).

        For a training part ``train`` of length m = n - 2, rows are t = 1..m-1 with history
        ``train[:t]`` (most recent ``max_len`` kept) and target ``train[t]``; ordered by user then t.
        """
        _check_max_len(max_len)
        row_user = self.train_row_user_index()
        rows_per_user = self.lengths - 3
        first_row = np.concatenate([[0], np.cumsum(rows_per_user)[:-1]])
        t = np.arange(len(row_user), dtype=np.int64) - first_row[row_user] + 1
        target_pos = self.offsets[row_user] + t
        seqs, lengths = self._windows(target_pos, self.offsets[row_user], max_len)
        return torch.from_numpy(seqs), torch.from_numpy(lengths), torch.from_numpy(self.items[target_pos])

    def train_windows(self, max_len: int, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense training windows: (seqs [W, max_len], lengths [W], targets [W, max_len]).

        Each user's training part is cut from its end into windows whose last ``stride`` targets
        are supervised (``targets[w, i]`` is the item after position i, 0 where unsupervised).
        Every training target of ``train_rows`` is supervised exactly once, with at least
        ``max_len - stride + 1`` items of context unless the user's history is shorter. With a
        causal encoder one window trains ``stride`` rows in a single pass.
        """
        _check_max_len(max_len)
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= max_len:
            raise LaresError(f"spt.dense_stride must be an integer in 1..dataset.max_len={max_len} (got {stride!r})")
        train_len = self.lengths - 2
        per_user = -(-(train_len - 1) // stride)
        window_user = np.repeat(np.arange(self.num_users, dtype=np.int64), per_user)
        first = np.concatenate([[0], np.cumsum(per_user)[:-1]])
        j = np.arange(len(window_user), dtype=np.int64) - first[window_user]
        user_start = self.offsets[window_user]
        end = user_start + train_len[window_user] - j * stride
        seqs, lengths = self._windows(end - 1, user_start, max_len)
        cols = np.arange(max_len, dtype=np.int64)
        target_pos = (end - 1 - lengths)[:, None] + 1 + cols[None, :]
        supervised = (cols[None, :] < lengths[:, None]) & (target_pos >= np.maximum(end - stride, user_start + 1)[:, None])
        targets = np.where(supervised, self.items[np.minimum(target_pos, len(self.items) - 1)], 0).astype(np.int64)
        return torch.from_numpy(seqs), torch.from_numpy(lengths), torch.from_numpy(targets)

    def eval_inputs(self, split: str, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One row per user: (seqs [U, max_len], lengths [U], targets [U]) for ``valid`` or ``test``.

        ``valid``: history = training part, target = second-last item; ``test``: history = all
        but the last item, target = last item.
        """
        _check_max_len(max_len)
        target_pos = self.offsets[1:] - _held_out(split)
        seqs, lengths = self._windows(target_pos, self.offsets[:-1], max_len)
        return torch.from_numpy(seqs), torch.from_numpy(lengths), torch.from_numpy(self.items[target_pos])

    def history_csr(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(indptr int64 [U+1], items int64): every item before the split's target, untruncated.

        Used to mask already-seen items in full-ranking evaluation, where the ``max_len`` window
        would miss older interactions.
        """
        hist_len = self.lengths - _held_out(split)
        indptr = np.concatenate([[0], np.cumsum(hist_len)]).astype(np.int64)
        within = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], hist_len)
        positions = np.repeat(self.offsets[:-1], hist_len) + within
        return torch.from_numpy(indptr), torch.from_numpy(self.items[positions])

    def encode_items(self, original_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Remapped ids (int64, order kept) of the known original ids, and the unknown ones."""
        known: list[int] = []
        unknown: list[str] = []
        for original in original_ids:
            idx = self._item_index.get(str(original))
            if idx is None:
                unknown.append(str(original))
            else:
                known.append(idx)
        return np.array(known, dtype=np.int64), unknown

    @cached_property
    def _item_index(self) -> dict[str, int]:
        return {str(original): i for i, original in enumerate(self.item_ids[1:], start=1)}

    def _windows(self, end: np.ndarray, user_start: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Left-aligned histories ``items[max(user_start, end - max_len):end]`` for each row."""
        lengths = np.minimum(end - user_start, max_len).astype(np.int64)
        cols = np.arange(max_len, dtype=np.int64)
        positions = (end - lengths)[:, None] + cols[None, :]
        valid = cols[None, :] < lengths[:, None]
        seqs = np.where(valid, self.items[np.minimum(positions, len(self.items) - 1)], 0).astype(np.int64)
        return seqs, lengths


def _check_max_len(max_len: int) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise LaresError(f"dataset.max_len must be an integer >= 1 (got {max_len!r})")


def _held_out(split: str) -> int:
    if split not in _HELD_OUT:
        raise LaresError(f"unknown split {split!r}; use one of: {', '.join(_HELD_OUT)}")
    return _HELD_OUT[split]
