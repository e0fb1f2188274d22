"""Logged episodes for the next-item environments, validated once so both envs can trust them.

The data layout is the flat one the data pipeline produces, with no dependency on it:

- ``items``: int64 ``[T]`` item ids 1..N of all users, concatenated, each user chronological,
- ``offsets``: int64 ``[U + 1]``, user ``u`` owns ``items[offsets[u]:offsets[u + 1]]``,
- per episode ``e``: ``users[e]``, ``starts[e]`` the flat index of its first target and
  ``stops[e]`` the exclusive flat limit of its targets (items at ``stops[e]`` and after are
  never revealed, e.g. validation and test items hidden from training).

At a cursor ``t`` of user ``u`` the history is ``items[max(offsets[u], t - max_len):t]`` and the
target is ``items[t]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from lares_rl.core.errors import LaresError

ArrayLike = np.ndarray | torch.Tensor
Flag = TypeVar("Flag", bool, torch.Tensor)


def _as_int_array(value: ArrayLike | int, name: str, ndim: int = 1) -> np.ndarray:
    """An int64 numpy copy of ``value``; floats are refused rather than truncated."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise LaresError(f"{name} must hold integers, got dtype {array.dtype}; pass an int64 array")
    if array.ndim != ndim:
        raise LaresError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array.astype(np.int64)


def check_positive_ints(**values: object) -> None:
    """Raise naming the first argument that is not a positive int (bools are refused too)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise LaresError(f"{name}={value!r} must be a positive int")


@dataclass(frozen=True)
class Episodes:
    """Validated episode table: the flat items plus, per episode, the bounds the envs need."""

    items: np.ndarray  # [T] item ids 1..num_items
    user_begin: np.ndarray  # [E] offsets[users[e]], the oldest item a history may show
    starts: np.ndarray  # [E] flat index of the first target
    stops: np.ndarray  # [E] exclusive flat limit of the targets
    num_items: int

    def __len__(self) -> int:
        return len(self.starts)


def make_episodes(
    items: ArrayLike,
    offsets: ArrayLike,
    users: ArrayLike,
    starts: ArrayLike,
    stops: ArrayLike,
    num_items: int,
) -> Episodes:
    """Check the flat data and the episode bounds and return them as an :class:`Episodes`.

    Every episode must have at least one history item (``starts > offsets[u]``) and at least one
    target inside its user (``starts < stops <= offsets[u + 1]``); item ids must be in
    ``1..num_items`` (0 is the padding id).
    """
    items = _as_int_array(items, "items")
    offsets = _as_int_array(offsets, "offsets")
    users = _as_int_array(users, "users")
    starts = _as_int_array(starts, "starts")
    stops = _as_int_array(stops, "stops")
    check_positive_ints(num_items=num_items)
    if len(items) and (items.min() < 1 or items.max() > num_items):
        bad = items[(items < 1) | (items > num_items)]
        raise LaresError(
            f"items hold ids {np.unique(bad)[:5].tolist()} outside 1..num_items={num_items}; "
            "remap ids to 1..N (0 is padding) or raise num_items"
        )
    if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(items) or (np.diff(offsets) < 0).any():
        raise LaresError(
            f"offsets must be non-decreasing from 0 to len(items)={len(items)} with one entry per user plus one; "
            f"got {len(offsets)} entries from {offsets[:1].tolist()} to {offsets[-1:].tolist()}"
        )
    if not len(users) == len(starts) == len(stops):
        raise LaresError(f"users, starts and stops need one entry per episode; got {len(users)}, {len(starts)}, {len(stops)}")
    if len(users) == 0:
        raise LaresError("no episodes: users, starts and stops are empty")
    num_users = len(offsets) - 1
    if users.min() < 0 or users.max() >= num_users:
        raise LaresError(f"users must index offsets, i.e. lie in 0..{num_users - 1}; got {users.min()}..{users.max()}")
    begin, end = offsets[users], offsets[users + 1]
    for name, bad, rule in (
        ("starts", starts <= begin, "starts[e] > offsets[users[e]] (each episode needs a history item)"),
        ("stops", stops <= starts, "stops[e] > starts[e] (each episode needs a target)"),
        ("stops", stops > end, "stops[e] <= offsets[users[e] + 1] (targets stay inside the user)"),
    ):
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise LaresError(
                f"{name} breaks {rule} for {int(bad.sum())} episode(s), first e={first}: "
                f"user {users[first]}, offsets {begin[first]}..{end[first]}, start {starts[first]}, stop {stops[first]}"
            )
    return Episodes(items=items, user_begin=begin, starts=starts, stops=stops, num_items=int(num_items))


def episodes_from_rows(
    offsets: ArrayLike,
    users: ArrayLike,
    target_positions: ArrayLike,
    stops: ArrayLike | int,
) -> tuple[np.ndarray, np.ndarray]:
    """Global ``(starts, stops)`` from positions counted inside each user's sequence.

    ``target_positions[e]`` is the 0-based position of the first target in user ``users[e]``'s
    sequence and ``stops`` the exclusive position limit (one per episode, or one int for all),
    e.g. ``stops = lengths - 2`` hides the validation and test items of leave-one-out.
    """
    offsets = _as_int_array(offsets, "offsets")
    users = _as_int_array(users, "users")
    positions = _as_int_array(target_positions, "target_positions")
    local_stops = np.broadcast_to(_as_int_array(stops, "stops", ndim=np.ndim(stops)), positions.shape)
    begin = offsets[users]
    return begin + positions, begin + local_stops


def end_flags(ended: Flag, horizon: int) -> tuple[Flag, Flag]:
    """``(terminated, truncated)`` for an episode that ``ended`` this step; one rule for both envs.

    With ``horizon == 1`` (the contextual bandit of LARES RPT) each episode is one decision whose
    return is its reward, so it ends ``terminated`` and no value target bootstraps past it (this is
    also what gymnasium's env checker accepts for one-step episodes). With ``horizon > 1`` the env
    replays a window of a user's stream that goes on after it, so the end is ``truncated``.
    """
    never = ended & False
    return (ended, never) if horizon == 1 else (never, ended)
