"""The flat logged data the next-item env tests share: six users of 5..8 items from 1..15, each
episode starting at the user's second item and stopping before the last two (validation and test
stay hidden)."""

import numpy as np

LENGTHS = [5, 6, 7, 8, 6, 8]
OFFSETS = np.concatenate([[0], np.cumsum(LENGTHS)])
ITEMS = (np.arange(OFFSETS[-1]) * 7) % 15 + 1
USERS = np.arange(6)
STARTS, STOPS = OFFSETS[:-1] + 1, OFFSETS[1:] - 2
DATA = dict(items=ITEMS, offsets=OFFSETS, users=USERS, starts=STARTS, stops=STOPS, num_items=15)
