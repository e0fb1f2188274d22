"""Iterative k-core filtering on integer-coded interactions.

Dropping a user can push an item below its threshold and vice versa, so one pass is not enough:
the filter repeats until nothing changes. The result is the unique largest sub-dataset in which
every user and item meets its threshold, whatever order the drops happen in.
"""

from __future__ import annotations

import numpy as np


def kcore_mask(
    users: np.ndarray,
    items: np.ndarray,
    user_core: int,
    item_core: int,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of interactions that survive the iterative (user_core, item_core)-core.

    ``users``/``items`` are non-negative int codes; ``keep`` restricts the start to a subset.
    """
    keep = np.ones(len(users), dtype=bool) if keep is None else keep.copy()
    num_users = int(users.max()) + 1 if len(users) else 0
    num_items = int(items.max()) + 1 if len(items) else 0
    kept = int(keep.sum())
    while kept:
        user_counts = np.bincount(users[keep], minlength=num_users)
        item_counts = np.bincount(items[keep], minlength=num_items)
        keep &= (user_counts[users] >= user_core) & (item_counts[items] >= item_core)
        now = int(keep.sum())
        if now == kept:
            break
        kept = now
    return keep


def counts(users: np.ndarray, items: np.ndarray, keep: np.ndarray) -> dict[str, int]:
    """Distinct users, distinct items and interactions among the kept rows (for logs and stats)."""
    return {
        "users": int(len(np.unique(users[keep]))),
        "items": int(len(np.unique(items[keep]))),
        "interactions": int(keep.sum()),
    }
