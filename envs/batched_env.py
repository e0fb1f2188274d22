"""Batched TorchRL next-item environment: the tensor-only training path of RPT (DESIGN section 3).

Same semantics as :class:`lares_rl.envs.NextItemGymEnv`, for thousands of histories per step
with no Python loop over users. Rows come in contiguous groups of ``group_size`` that share one
episode, which is how GRPO keeps its G rollouts of a history together.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from lares_rl.core.errors import LaresError
from lares_rl.envs.episodes import ArrayLike, check_positive_ints, end_flags, make_episodes
from lares_rl.rewards.builtin import RewardFn, check_reward_fn, check_reward_output, make_reward

SAMPLING = ("epoch", "uniform")


class NextItemEnv(EnvBase):
    """Recommend a slate per row; reward it against the logged next item, then reveal that item.

    Keys (B = ``batch_size``, L = ``max_len``, K = ``slate_size``, N = ``num_items``):

    - ``("history", "items")`` int64 [B, L]: left-aligned history, zeros after ``length``;
      ``("history", "length")`` int64 [B] in 1..L.
    - ``"group_id"`` int64 [B]: index of the row's episode in the data; the G rows of a group
      share it. Under ``sampling="uniform"`` two groups of one batch may draw the same episode,
      so group statistics (GRPO's advantage) should use contiguity, ``reward.view(-1, G)``.
    - ``"target"`` int64 [B]: the item revealed by the last step, 0 right after a reset. It is
      read in the next tensordict, ``("next", "target")``; the root value is never the answer.
    - ``"cursor"`` int64 [B]: the env's state, the flat index of the item the current step must
      predict. It is declared as an observation because ``step_mdp`` carries only observation
      keys from ``"next"`` to the root, and ``_step`` reads all it needs from its input.
    - ``"action"`` int64 [B, K]: item ids 1..N, best first. ``"reward"`` float32 [B, 1].
    - ``"done"`` bool [B, 1]: after ``horizon`` steps or at the episode's stop. With
      ``horizon == 1`` it comes as ``"terminated"`` (a bandit decision, nothing to bootstrap),
      with ``horizon > 1`` as ``"truncated"`` (the user's stream goes on); see
      :func:`lares_rl.envs.episodes.end_flags`.

    Args:
        items, offsets, users, starts, stops, num_items: the logged data, see
            :mod:`lares_rl.envs.episodes`.
        batch_size: rows per step B.
        max_len: history length L (default 20).
        slate_size: slate width K (default 10).
        horizon: steps per episode (default 1, the contextual bandit of LARES RPT).
        reward_fn: ``(slate [B, K], target [B]) -> [B]``; default ``ndcg`` with ``k=slate_size``.
        group_size: rows per episode G (default 1); must divide ``batch_size``.
        sampling: ``"epoch"`` walks a shuffled permutation of the episodes without replacement
            (reshuffled when exhausted; see :attr:`epoch`), ``"uniform"`` draws iid.
        seed: seed of the private generator (``None``: nondeterministic).
        device: where the data and the output tensors live.

    Notes:
        A partial reset (``"_reset"`` mask) must cover whole groups; done flags always do,
        because the rows of a group share their episode and cursor.

    Specs (``batch_size=4, max_len=3, slate_size=2``, 15 items, 6 episodes, 40 logged items).
    The printout hides the bounds: history items 0..N, length 1..L, group_id 0..E-1, target
    0..N, cursor 0..T (logged items), action 1..N.

        >>> env.specs  # doctest: +SKIP
        Composite(
            output_spec: Composite(
                full_observation_spec: Composite(
                    history: Composite(
                        items: BoundedDiscrete(
                            shape=torch.Size([4, 3]),
                            space=ContinuousBox(
                                low=Tensor(shape=torch.Size([4, 3]), device=cpu, dtype=torch.int64, contiguous=True),
                                high=Tensor(shape=torch.Size([4, 3]), device=cpu, dtype=torch.int64, contiguous=True)),
                            device=cpu,
                            dtype=torch.int64,
                            domain=discrete),
                        length: BoundedDiscrete(
                            shape=torch.Size([4]),
                            space=ContinuousBox(
                                low=Tensor(shape=torch.Size([4]), device=cpu, dtype=torch.int64, contiguous=True),
                                high=Tensor(shape=torch.Size([4]), device=cpu, dtype=torch.int64, contiguous=True)),
                            device=cpu,
                            dtype=torch.int64,
                            domain=discrete),
                        device=cpu,
                        shape=torch.Size([4]),
                        data_cls=None),
                    group_id: BoundedDiscrete(
                        shape=torch.Size([4]),
                        space=ContinuousBox(
                            low=Tensor(shape=torch.Size([4]), device=cpu, dtype=torch.int64, contiguous=True),
                            high=Tensor(shape=torch.Size([4]), device=cpu, dtype=torch.int64, contiguous=True)),
                        device=cpu,
                        dtype=torch.int64,
                        domain=discrete),
                    target: BoundedDiscrete(
                        shape=torch.Size([4]),
                        space=ContinuousBox(
                            low=Tensor(shape=torch.Size([4]), device=cpu, dtype=torch.int64, contiguous=True),
                            high=Tensor(shape=torch.Size([4]), device=cpu, dtype=torch.int64, contiguous=True)),
                        device=cpu,
                        dtype=torch.int64,
                        domain=discrete),
                    cursor: BoundedDiscrete(
                        shape=torch.Size([4]),
                        space=ContinuousBox(
                            low=Tensor(shape=torch.Size([4]), device=cpu, dtype=torch.int64, contiguous=True),
                            high=Tensor(shape=torch.Size([4]), device=cpu, dtype=torch.int64, contiguous=True)),
                        device=cpu,
                        dtype=torch.int64,
                        domain=discrete),
                    device=cpu,
                    shape=torch.Size([4]),
                    data_cls=None),
                full_reward_spec: Composite(
                    reward: UnboundedContinuous(
                        shape=torch.Size([4, 1]),
                        space=ContinuousBox(
                            low=Tensor(shape=torch.Size([4, 1]), device=cpu, dtype=torch.float32, contiguous=True),
                            high=Tensor(shape=torch.Size([4, 1]), device=cpu, dtype=torch.float32, contiguous=True)),
                        device=cpu,
                        dtype=torch.float32,
                        domain=continuous),
                    device=cpu,
                    shape=torch.Size([4]),
                    data_cls=None),
                full_done_spec: Composite(
                    done: Categorical(
                        shape=torch.Size([4, 1]),
                        space=CategoricalBox(n=2),
                        device=cpu,
                        dtype=torch.bool,
                        domain=discrete),
                    terminated: Categorical(
                        shape=torch.Size([4, 1]),
                        space=CategoricalBox(n=2),
                        device=cpu,
                        dtype=torch.bool,
                        domain=discrete),
                    truncated: Categorical(
                        shape=torch.Size([4, 1]),
                        space=CategoricalBox(n=2),
                        device=cpu,
                        dtype=torch.bool,
                        domain=discrete),
                    device=cpu,
                    shape=torch.Size([4]),
                    data_cls=None),
                device=cpu,
                shape=torch.Size([4]),
                data_cls=None),
            input_spec: Composite(
                full_state_spec: Composite(device=cpu, shape=torch.Size([4]), data_cls=None),
                full_action_spec: Composite(
                    action: BoundedDiscrete(
                        shape=torch.Size([4, 2]),
                        space=ContinuousBox(
                            low=Tensor(shape=torch.Size([4, 2]), device=cpu, dtype=torch.int64, contiguous=True),
                            high=Tensor(shape=torch.Size([4, 2]), device=cpu, dtype=torch.int64, contiguous=True)),
                        device=cpu,
                        dtype=torch.int64,
                        domain=discrete),
                    device=cpu,
                    shape=torch.Size([4]),
                    data_cls=None),
                device=cpu,
                shape=torch.Size([4]),
                data_cls=None),
            device=None,
            shape=torch.Size([4]),
            data_cls=None)
    """

    batch_locked = True

    def __init__(
        self,
        items: ArrayLike,
        offsets: ArrayLike,
        users: ArrayLike,
        starts: ArrayLike,
        stops: ArrayLike,
        num_items: int,
        batch_size: int,
        max_len: int = 20,
        slate_size: int = 10,
        horizon: int = 1,
        reward_fn: RewardFn | None = None,
        group_size: int = 1,
        sampling: str = "epoch",
        seed: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        check_positive_ints(batch_size=batch_size, max_len=max_len, slate_size=slate_size, horizon=horizon, group_size=group_size)
        if batch_size % group_size:
            raise LaresError(
                f"batch_size={batch_size} is not divisible by group_size={group_size}; use batch_size = histories per batch * group_size"
            )
        if sampling not in SAMPLING:
            raise LaresError(f"sampling={sampling!r}; choose one of {SAMPLING}")
        data = make_episodes(items, offsets, users, starts, stops, num_items)
        reward_fn = reward_fn if reward_fn is not None else make_reward("ndcg", k=slate_size)
        check_reward_fn(reward_fn, num_items)
        super().__init__(device=device, batch_size=torch.Size([batch_size]))
        self.reward_fn = reward_fn
        self.num_items, self.max_len, self.slate_size = data.num_items, max_len, slate_size
        self.horizon, self.group_size, self.sampling = horizon, group_size, sampling
        self.num_groups = batch_size // group_size
        self._items = torch.as_tensor(data.items, device=self.device)
        self._user_begin = torch.as_tensor(data.user_begin, device=self.device)
        self._starts = torch.as_tensor(data.starts, device=self.device)
        self._stops = torch.as_tensor(data.stops, device=self.device)
        self._positions = torch.arange(max_len, device=self.device)
        self._make_spec()
        self.set_seed(seed)

    def _make_spec(self) -> None:
        batch, device = self.batch_size, self.device

        def ids(low: int, high: int, shape: tuple[int, ...]) -> Bounded:
            return Bounded(low, high, shape=shape, device=device, dtype=torch.int64)

        self.observation_spec = Composite(
            history=Composite(
                items=ids(0, self.num_items, (*batch, self.max_len)),
                length=ids(1, self.max_len, batch),
                shape=batch,
            ),
            group_id=ids(0, self.episodes_per_epoch - 1, batch),
            target=ids(0, self.num_items, batch),
            cursor=ids(0, len(self._items), batch),
            shape=batch,
        )
        self.action_spec = ids(1, self.num_items, (*batch, self.slate_size))
        self.reward_spec = Unbounded(shape=(*batch, 1), device=device, dtype=torch.float32)
        flag = Categorical(2, shape=(*batch, 1), device=device, dtype=torch.bool)
        self.done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=batch)

    @property
    def episodes_per_epoch(self) -> int:
        """Number of episodes in the data; one epoch of ``sampling="epoch"`` draws each once."""
        return len(self._starts)

    def _set_seed(self, seed: int | None) -> None:
        """Seed the private generator and restart the epoch walk, so a seed fixes every draw."""
        self.rng = torch.Generator()
        if seed is None:
            self.rng.seed()
        else:
            self.rng.manual_seed(seed)
        self.epoch = 0  # completed passes over the episodes under sampling="epoch"
        self._perm = torch.randperm(self.episodes_per_epoch, generator=self.rng)
        self._perm_pos = 0
        self._before_last_reset: dict | None = None

    def sampling_state(self, before_last_reset: bool = False) -> dict:
        """The episode sampler's state: private generator, permutation, position in it, passes done.

        ``before_last_reset=True`` gives the state from just before the most recent reset drew its
        episodes (the current state when there was none). A consumer that used every batch but the
        one already reset saves that: a TorchRL Collector resets a finished batch's rows at once,
        so after handing out batch n it holds the episodes of batch n + 1. Loading this state into
        the env before a fresh Collector is built makes the Collector's first reset draw exactly
        those episodes again, which is what an exact resume needs.
        """
        if before_last_reset and self._before_last_reset is not None:
            return dict(self._before_last_reset)
        return {
            "sampling": self.sampling,
            "episodes": self.episodes_per_epoch,
            "rng": self.rng.get_state(),
            "perm": self._perm,
            "perm_pos": self._perm_pos,
            "epoch": self.epoch,
        }

    def load_sampling_state(self, state: dict) -> None:
        """Continue the episode walk from a :meth:`sampling_state` of an env over the same episodes."""
        if state.get("sampling") != self.sampling or state.get("episodes") != self.episodes_per_epoch:
            raise LaresError(
                f"sampling state of a {state.get('sampling')!r} walk over {state.get('episodes')} episodes cannot be "
                f"loaded into a {self.sampling!r} env over {self.episodes_per_epoch}; use the same data and sampling"
            )
        self.rng.set_state(state["rng"])
        self._perm, self._perm_pos, self.epoch = state["perm"].clone(), int(state["perm_pos"]), int(state["epoch"])
        self._before_last_reset = None

    def get_extra_state(self) -> dict:
        """``env.state_dict()`` carries the sampler's current state (nn.Module's extra-state hook)."""
        return self.sampling_state()

    def set_extra_state(self, state: dict) -> None:
        self.load_sampling_state(state)

    def _draw_episodes(self, count: int) -> torch.Tensor:
        """``count`` episode indices (CPU int64) from the private generator."""
        if self.sampling == "uniform":
            return torch.randint(self.episodes_per_epoch, (count,), generator=self.rng)
        parts = []
        while count > 0:
            take = min(count, self.episodes_per_epoch - self._perm_pos)
            parts.append(self._perm[self._perm_pos : self._perm_pos + take])
            self._perm_pos += take
            count -= take
            if self._perm_pos == self.episodes_per_epoch:
                self.epoch += 1
                self._perm = torch.randperm(self.episodes_per_epoch, generator=self.rng)
                self._perm_pos = 0
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    def _history(self, cursor: torch.Tensor, begin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-aligned ``items[max(begin, cursor - L):cursor]`` per row, and its length."""
        length = (cursor - begin).clamp(max=self.max_len)
        valid = self._positions < length[:, None]
        flat = torch.where(valid, (cursor - length)[:, None] + self._positions, 0)
        return torch.where(valid, self._items[flat], 0), length

    def _observe(self, episode: torch.Tensor, cursor: torch.Tensor, target: torch.Tensor) -> dict:
        items, length = self._history(cursor, self._user_begin[episode])
        return {"history": {"items": items, "length": length}, "group_id": episode, "target": target}

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        """Draw one episode per (reset) group and repeat it over the group's contiguous rows.

        Rows outside a partial ``"_reset"`` mask get episode 0 here; ``EnvBase.reset`` keeps the
        caller's values for them, and no episode of the epoch walk is spent on them.
        """
        reset = tensordict.get("_reset", None) if tensordict is not None else None
        if reset is None:
            groups = torch.ones(self.num_groups, dtype=torch.bool, device=self.device)
        else:
            rows = reset.reshape(self.num_groups, self.group_size)
            groups = rows.all(dim=1)
            if (groups != rows.any(dim=1)).any():
                raise LaresError(
                    f"'_reset' splits a group: rows g*{self.group_size}..g*{self.group_size}+"
                    f"{self.group_size - 1} share one episode and must be reset together"
                )
        # rng.get_state() copies; the permutation is replaced on reshuffle, never changed in place
        self._before_last_reset = self.sampling_state()
        group_episode = torch.zeros(self.num_groups, dtype=torch.int64, device=self.device)
        group_episode[groups] = self._draw_episodes(int(groups.sum())).to(self.device)
        episode = group_episode.repeat_interleave(self.group_size)
        cursor = self._starts[episode]
        false = torch.zeros((*self.batch_size, 1), dtype=torch.bool, device=self.device)
        return TensorDict(
            {
                **self._observe(episode, cursor, torch.zeros_like(cursor)),
                "cursor": cursor,
                "done": false,
                "terminated": false.clone(),
                "truncated": false.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _check_action(self, action: object) -> torch.Tensor:
        """The slate as int64, refusing anything that would score silently wrong or crash deeper.

        Float or bool ids, the padding id 0, ids > N, wrong shapes, non-tensors and sparse
        tensors are ``ValueError``s naming the action. Every integer dtype is accepted: the range
        check runs on the int64 copy, where unsigned ids >= 2**63 wrap to negatives and fail it.
        """
        if not isinstance(action, torch.Tensor):
            raise ValueError(f"action must be a tensor of item ids, got {type(action).__name__}: {action!r:.80}")
        if action.layout != torch.strided:
            raise ValueError(f"action must be a dense tensor, got layout {action.layout}")
        if action.shape != (*self.batch_size, self.slate_size):
            raise ValueError(f"action must have shape {(*self.batch_size, self.slate_size)}, got {tuple(action.shape)}")
        if action.is_floating_point() or action.dtype == torch.bool or action.is_complex():
            raise ValueError(f"action must hold integer item ids, got dtype {action.dtype}")
        ids = action.to(torch.int64)
        if ((ids < 1) | (ids > self.num_items)).any():
            raise ValueError(f"action holds ids outside 1..{self.num_items} (0 is padding)")
        return ids

    def _ended(self, cursor: torch.Tensor, episode: torch.Tensor) -> torch.Tensor:
        """Rows whose episode is over at ``cursor``: ``horizon`` steps taken or the stop reached."""
        return (cursor - self._starts[episode] >= self.horizon) | (cursor >= self._stops[episode])

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Score the slate against ``items[cursor]``, reveal it and move the cursor; input untouched."""
        if "action" not in tensordict.keys():
            raise ValueError("the input tensordict has no 'action' entry; set td['action'] to int64 item ids [B, K]")
        action = self._check_action(tensordict.get("action"))
        cursor, episode = tensordict["cursor"], tensordict["group_id"]
        if self._ended(cursor, episode).any():
            # Stepping on would reveal items past the stop, e.g. the hidden validation item.
            raise RuntimeError("some rows' episodes are over; reset them first (rollout and collectors do)")
        target = self._items[cursor]
        reward = check_reward_output(self.reward_fn, self.reward_fn(action, target), len(target)).to(torch.float32)
        next_cursor = cursor + 1
        done = self._ended(next_cursor, episode)[:, None]
        terminated, truncated = end_flags(done, self.horizon)
        return TensorDict(
            {
                **self._observe(episode, next_cursor, target),
                "cursor": next_cursor,
                "reward": reward[:, None],
                "done": done.clone(),
                "terminated": terminated,
                "truncated": truncated,
            },
            batch_size=self.batch_size,
            device=self.device,
        )
