"""A synthetic interaction log with a known sequential signal, for checks that a trainer learns.

Every item has a hidden successor (a random permutation of the catalog without fixed points).
A user starts at a popular item and then, at each step, moves to the current item's successor
with probability ``follow``, otherwise to an item drawn from a Zipf-like popularity. So the next
item is predictable from the last one alone for a ``follow`` share of the steps, which a
sequential model can learn in a few epochs, while popularity alone predicts little: a setting
that cripples learning shows up as a model stuck near most-popular, within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lares_rl.data.sequences import SequenceData


@dataclass(frozen=True)
class SuccessorLog:
    """The generated data and the structure behind it (``successor[i]`` for item i; index 0 unused)."""

    data: SequenceData
    successor: np.ndarray
    follow: float


def successor_log(
    users: int = 300, items: int = 150, min_len: int = 10, max_len: int = 30, follow: float = 0.55, zipf: float = 0.6, seed: int = 0
) -> SuccessorLog:
    """Sequences of ``users`` users over ``items`` items (ids 1..items), lengths uniform in
    [min_len, max_len]; deterministic for ``seed``. Popularity weights are 1 / rank**zipf over a
    random ranking of the items, so the popular fallback is not aligned with the successor map."""
    if not (users >= 1 and items >= 2 and 3 <= min_len <= max_len and 0.0 <= follow <= 1.0):
        raise ValueError("successor_log needs users >= 1, items >= 2, 3 <= min_len <= max_len and 0 <= follow <= 1")
    rng = np.random.default_rng(seed)
    successor = np.zeros(items + 1, dtype=np.int64)
    successor[1:] = _derangement(items, rng) + 1
    popularity = 1.0 / np.arange(1, items + 1) ** zipf
    popularity = popularity[rng.permutation(items)] / popularity.sum()
    sequences = [_walk(int(rng.integers(min_len, max_len + 1)), successor, popularity, follow, rng) for _ in range(users)]
    return SuccessorLog(SequenceData.from_sequences(sequences, num_items=items), successor, follow)


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of 0..n-1 with no fixed point (an item never succeeds itself): one random cycle."""
    order = rng.permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.roll(order, -1)
    return out


def _walk(length: int, successor: np.ndarray, popularity: np.ndarray, follow: float, rng: np.random.Generator) -> list[int]:
    popular = rng.choice(len(popularity), size=length, p=popularity) + 1
    follows = rng.random(length) < follow
    walk = [int(popular[0])]
    for t in range(1, length):
        walk.append(int(successor[walk[-1]]) if follows[t] else int(popular[t]))
    return walk
