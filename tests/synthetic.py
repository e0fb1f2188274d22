"""Tiny synthetic interaction logs with learnable structure, for end-to-end tests."""

from pathlib import Path

import numpy as np


def write_sequential_csv(path: Path, users: int = 60, items: int = 40, length: int = 14, seed: int = 0) -> Path:
    """Each user walks the item ring (i -> i+1 mostly), so next-item models can learn something."""
    rng = np.random.default_rng(seed)
    lines = ["uid,sku,ts"]
    for user in range(users):
        item = int(rng.integers(items))
        for t in range(length):
            lines.append(f"u{user},i{item},{1000 * user + t}")
            item = (item + (1 if rng.random() < 0.85 else int(rng.integers(items)))) % items
    path.write_text("\n".join(lines) + "\n")
    return path
