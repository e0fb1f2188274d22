"""Gymnasium next-item environment: one user at a time, the reference semantics in plain numpy.

Registered as ``lares_rl/NextItem-v0`` (see ``lares_rl.envs``). Training uses the batched
:class:`lares_rl.envs.NextItemEnv`; this env is for gymnasium tooling, debugging and
``torchrl.envs.GymWrapper``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lares_rl.core.errors import LaresError
from lares_rl.envs.episodes import ArrayLike, check_positive_ints, end_flags, episodes_from_rows, make_episodes
from lares_rl.rewards.builtin import RewardFn, check_reward_fn, make_reward, target_rank


class NextItemGymEnv(gym.Env):
    """Recommend a ranked slate of K items; the reward scores it against the user's logged next item.

    Observation: ``{"items": int64 [L] history left-aligned (zeros after), "length": int64 scalar
    in 1..L}`` with the most recent ``max_len`` items. Action: int64 ``[K]`` item ids in 1..N, best
    first. Reward: ``reward_fn(slate, target)`` (default NDCG@K). The logged item is then revealed
    (``info["target"]``, and ``info["rank"]`` its 0-based slate rank or -1, both numpy int64)
    and appended to the history.
    ``horizon=1`` is the contextual bandit of LARES RPT; ``horizon > 1`` replays the logged
    sequence. How an episode ends (see :func:`lares_rl.envs.episodes.end_flags`): a bandit
    decision ends ``terminated`` (its return is its reward, nothing to bootstrap); a replay ends
    ``truncated`` after ``horizon`` steps or at the episode's stop, because the user's stream goes
    on and logged data never ends a user's life.

    Note: the action space is ``Box(1, N, (K,), int64)``, not ``MultiDiscrete(..., start=1)``:
    torchrl 0.14's ``GymWrapper`` (like SB3 and RLlib) ignores ``MultiDiscrete.start`` and would
    send ids 0..N-1.

    Args:
        items, offsets, users, starts, stops, num_items: the logged data, see
            :mod:`lares_rl.envs.episodes`.
        max_len: history length L (default 20).
        slate_size: slate width K (default 10).
        horizon: steps per episode (default 1).
        reward_fn: ``(slate [B, K], target [B]) -> [B]``; default ``ndcg`` with ``k=slate_size``.
        render_mode: ``None`` or ``"ansi"``.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        items: ArrayLike,
        offsets: ArrayLike,
        users: ArrayLike,
        starts: ArrayLike,
        stops: ArrayLike,
        num_items: int,
        max_len: int = 20,
        slate_size: int = 10,
        horizon: int = 1,
        reward_fn: RewardFn | None = None,
        render_mode: str | None = None,
    ) -> None:
        check_positive_ints(max_len=max_len, slate_size=slate_size, horizon=horizon)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise LaresError(f"render_mode={render_mode!r}; supported: None or {self.metadata['render_modes']}")
        self.data = make_episodes(items, offsets, users, starts, stops, num_items)
        self.reward_fn = reward_fn if reward_fn is not None else make_reward("ndcg", k=slate_size)
        check_reward_fn(self.reward_fn, num_items)
        self.max_len, self.slate_size, self.horizon = int(max_len), int(slate_size), int(horizon)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Dict(
            items=gym.spaces.Box(0, num_items, (self.max_len,), np.int64),
            length=gym.spaces.Box(1, self.max_len, (), np.int64),
        )
        self.action_space = gym.spaces.Box(1, num_items, (self.slate_size,), np.int64)
        self._episode = -1
        self._cursor = -1  # flat index of the current target; -1 until reset
        self._steps = 0

    @classmethod
    def from_data(cls, data: Any, split: str = "train", **kwargs: Any) -> NextItemGymEnv:
        """One episode per user of a processed data set (``lares_rl.data.load_dataset``), under
        the leave-one-out protocol: ``train`` walks each user's training part (first target = the
        2nd item; validation and test items are never revealed), ``valid`` / ``test`` is the one
        held-out decision. ``kwargs`` go to the constructor (max_len, slate_size, horizon, ...)."""
        splits = {"train": (1, data.lengths - 2), "valid": (data.lengths - 2, data.lengths - 1), "test": (data.lengths - 1, data.lengths)}
        if split not in splits:
            raise LaresError(f"split={split!r}; choose one of {sorted(splits)}")
        first, stops = splits[split]
        users = np.arange(data.num_users, dtype=np.int64)
        starts, stops = episodes_from_rows(data.offsets, users, np.broadcast_to(first, users.shape), stops)
        return cls(data.items, data.offsets, users, starts, stops, data.num_items, **kwargs)

    def _observation(self) -> dict[str, np.ndarray]:
        begin = max(int(self.data.user_begin[self._episode]), self._cursor - self.max_len)
        history = self.data.items[begin : self._cursor]
        items = np.zeros(self.max_len, dtype=np.int64)
        items[: len(history)] = history
        return {"items": items, "length": np.array(len(history), dtype=np.int64)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode drawn uniformly, or the one given as ``options={"episode": e}``."""
        super().reset(seed=seed)
        episode = (options or {}).get("episode")
        if episode is None:
            episode = int(self.np_random.integers(len(self.data)))
        elif isinstance(episode, bool) or not isinstance(episode, (int, np.integer)) or not 0 <= episode < len(self.data):
            raise ValueError(f"options['episode']={episode!r} is not an integer in 0..{len(self.data) - 1}")
        self._episode, self._steps = int(episode), 0
        self._cursor = int(self.data.starts[self._episode])
        return self._observation(), {"episode": self._episode}

    def _validate_action(self, action: Any) -> np.ndarray:
        """Refuse anything but K integer ids in 1..N: a shifted or float slate would score silently wrong."""
        try:
            slate = np.asarray(action)
        except (ValueError, TypeError) as err:  # ragged nested lists and the like
            raise ValueError(f"action must be a slate of {self.slate_size} integer item ids, got {action!r:.80} ({err})") from err
        if slate.dtype.kind not in "iu":
            raise ValueError(f"action must be integer item ids, got dtype {slate.dtype}")
        if slate.shape != (self.slate_size,):
            raise ValueError(f"action must be a slate of shape ({self.slate_size},), got {slate.shape}")
        bad = slate[(slate < 1) | (slate > self.data.num_items)]
        if bad.size:
            raise ValueError(f"action holds ids {bad.tolist()} outside 1..{self.data.num_items} (0 is padding)")
        return slate.astype(np.int64)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._cursor < 0:
            raise RuntimeError("call reset() before step()")
        if self._steps >= self.horizon or self._cursor >= self.data.stops[self._episode]:
            raise RuntimeError("the episode is over; call reset()")
        slate = torch.from_numpy(self._validate_action(action))[None]
        target = int(self.data.items[self._cursor])
        target_t = torch.tensor([target])
        reward = float(self.reward_fn(slate, target_t)[0])
        rank = int(target_rank(slate, target_t)[0])
        self._cursor += 1
        self._steps += 1
        ended = self._steps >= self.horizon or self._cursor >= self.data.stops[self._episode]
        terminated, truncated = end_flags(bool(ended), self.horizon)
        # numpy scalars, not Python ints: torchrl's info readers expect arrays.
        info = {"target": np.int64(target), "rank": np.int64(rank)}
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._cursor < 0:
            return "no episode yet; call reset()"
        obs = self._observation()
        history = obs["items"][: obs["length"]].tolist()
        return f"episode {self._episode} step {self._steps}: history {history}, next target hidden"
