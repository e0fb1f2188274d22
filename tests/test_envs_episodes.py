"""Validation of the logged episodes shared by both next-item envs."""

import numpy as np
import pytest
import torch

from lares_rl.core.errors import LaresError
from lares_rl.envs import episodes_from_rows, make_episodes
from lares_rl.envs.episodes import end_flags
from tests.env_logs import ITEMS, LENGTHS, OFFSETS, STARTS, STOPS, USERS


def test_valid_episodes_accept_numpy_and_torch():
    data = make_episodes(torch.as_tensor(ITEMS), OFFSETS, USERS, STARTS, STOPS, 15)
    assert len(data) == 6 and data.user_begin.tolist() == OFFSETS[:-1].tolist()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"items": ITEMS.astype(float)}, "items must hold integers"),
        ({"items": np.where(ITEMS == 3, 0, ITEMS)}, r"ids \[0\] outside 1..num_items=15"),
        ({"num_items": 10}, "outside 1..num_items=10"),
        ({"offsets": OFFSETS[:-1]}, "offsets must be non-decreasing"),
        ({"users": USERS + 1}, "users must index offsets"),
        ({"users": USERS[:5]}, "one entry per episode"),
        ({"starts": OFFSETS[:-1]}, "needs a history item"),
        ({"stops": STARTS}, "needs a target"),
        ({"stops": OFFSETS[1:] + 1}, "targets stay inside the user"),
    ],
)
def test_bad_data_raises_naming_the_argument(change, match):
    args = dict(items=ITEMS, offsets=OFFSETS, users=USERS, starts=STARTS, stops=STOPS, num_items=15) | change
    with pytest.raises(LaresError, match=match):
        make_episodes(**args)


def test_episodes_from_rows_maps_local_positions_to_flat_indices():
    starts, stops = episodes_from_rows(OFFSETS, [1, 3, 3], [1, 2, 4], np.array(LENGTHS)[[1, 3, 3]] - 2)
    assert starts.tolist() == [6, 20, 22] and stops.tolist() == [9, 24, 24]
    _, stops = episodes_from_rows(OFFSETS, [0, 2], [1, 1], 3)
    assert stops.tolist() == [3, 14]


def test_end_flags_bandit_terminates_replay_truncates():
    assert end_flags(True, horizon=1) == (True, False)
    assert end_flags(True, horizon=3) == (False, True)
    assert end_flags(False, horizon=1) == (False, False)
    terminated, truncated = end_flags(torch.tensor([True, False]), horizon=2)
    assert terminated.tolist() == [False, False] and truncated.tolist() == [True, False]
