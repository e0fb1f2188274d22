"""Tiny deterministic interaction files in every supported format, plus pure-Python references.

The same interaction list is written in each format so the loaders can be checked against one
expected result; the references are deliberately naive loops, independent of the vectorised code.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from lares_rl.data import DatasetConfig, SequenceData

# (user, item, rating, timestamp) in file order: not sorted by user or time, with timestamp ties
# (user "2" has items "10" and "3" both at t=50: file order must win).
ROWS = [
    ("2", "10", 4, 50),
    ("1", "5", 3, 30),
    ("1", "7", 5, 10),
    ("3", "5", 1, 5),
    ("2", "3", 2, 50),
    ("1", "3", 4, 20),
    ("3", "7", 2, 6),
    ("2", "5", 5, 40),
    ("3", "10", 3, 7),
    ("1", "10", 1, 40),
    ("3", "3", 4, 8),
    ("2", "7", 3, 60),
]
# Chronological original item ids per user (stable sort by time), users in id order.
EXPECTED = {
    "1": ["7", "3", "5", "10"],
    "2": ["5", "10", "3", "7"],
    "3": ["5", "7", "10", "3"],
}


def chronological(rows: list[tuple]) -> dict[str, list[str]]:
    """Reference: per user, items stably sorted by timestamp."""
    out: dict[str, list[tuple]] = {}
    for user, item, _, ts in rows:
        out.setdefault(user, []).append((ts, item))
    return {u: [item for _, item in sorted(seq, key=lambda x: x[0])] for u, seq in out.items()}


def write_atomic(path: Path, rows: list[tuple] = ROWS) -> Path:
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_udata(path: Path, rows: list[tuple] = ROWS) -> Path:
    path.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    return path


def write_ratings_dat(path: Path, rows: list[tuple] = ROWS) -> Path:
    path.write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
    return path


def write_ordered_lines(path: Path, rows: list[tuple] = ROWS) -> Path:
    seqs = chronological(rows)
    path.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in seqs.items()))
    return path


def write_delimited(path: Path, rows: list[tuple] = ROWS, sep: str = ",", cols=("uid", "iid", "score", "ts")) -> Path:
    lines = [sep.join(cols)] + [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, rows: list[tuple] = ROWS, cols=("uid", "iid", "score", "ts")) -> Path:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(cols))
    frame[cols[0]] = frame[cols[0]].astype(int)  # integer ids must still come back as str tokens
    frame.to_parquet(path, engine="pyarrow", index=False)
    return path


def as_original(data: SequenceData) -> dict[str, list[str]]:
    """Sequences of a loaded dataset in original ids, keyed by original user id."""
    return {
        str(data.user_ids[u]): [str(data.item_ids[i]) for i in data.items[data.offsets[u] : data.offsets[u + 1]]]
        for u in range(data.num_users)
    }


def tiny_cfg(path: Path, **overrides) -> DatasetConfig:
    """Config for the tiny files: cores of 1 so nothing is filtered unless a test asks for it."""
    values = dict(name="tiny", path=str(path), user_core=1, item_core=1, max_len=3)
    values.update(overrides)
    return DatasetConfig(**values)


def random_rows(seed: int, n_users: int, n_items: int, n: int) -> list[tuple]:
    """Random interactions with skewed popularity (so k-core actually removes something)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        user = str(int(rng.paretovariate(1.2)) % n_users)
        item = str(int(rng.paretovariate(1.0) * 3) % n_items)
        rows.append((user, item, 1, rng.randint(0, 20)))
    return rows


def random_sequences(seed: int, n_users: int, n_items: int, max_n: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(rng.integers(1, n_items + 1, size=int(rng.integers(3, max_n + 1)))) for _ in range(n_users)]
