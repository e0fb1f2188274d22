"""The RPT episodes: which training rows start an episode, how they are batched, and the
TorchRL env that hands them out (one episode per row, G contiguous rollouts per history)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from lares_rl.core.distributed import DistContext
from lares_rl.core.errors import LaresError
from lares_rl.envs.batched_env import NextItemEnv
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.distributed import RankShareEnv


def training_row_positions(data) -> tuple[np.ndarray, np.ndarray]:
    """(user [R], flat position of the target [R]) of every training row, in ``train_rows`` order."""
    users = data.train_row_user_index()
    rows_per_user = data.lengths - 3
    first_row = np.concatenate([[0], np.cumsum(rows_per_user)[:-1]])
    t = np.arange(len(users), dtype=np.int64) - first_row[users] + 1
    return users, data.offsets[users] + t


def episode_starts(data, rows: torch.Tensor, horizon: int) -> torch.Tensor:
    """The rows of ``rows`` (indices into ``train_rows``) that can start an episode of exactly
    ``horizon`` decisions: their user has ``horizon - 1`` more training targets after them, so no
    episode reaches the held-out validation item. Equal-length episodes keep every collected batch
    one whole episode per row, which is what makes an RPT resume exact."""
    if horizon == 1:
        return rows
    users, target_pos = training_row_positions(data)
    last_train_target = data.offsets[users] + data.lengths[users] - 3
    fits = torch.from_numpy(target_pos + horizon - 1 <= last_train_target)
    return rows[fits[rows]]


def rows_env(
    data,
    rows: torch.Tensor,
    targets: torch.Tensor,
    *,
    histories: int,
    cfg: RPTConfig,
    reward_fn,
    max_len: int,
    seed: int,
    device: torch.device,
    horizon: int = 1,
    ranks: DistContext | None = None,
):
    """A :class:`NextItemEnv` with one episode per training row in ``rows`` (history -> its target,
    then ``horizon - 1`` more logged steps of the same user; pass :func:`episode_starts`),
    ``histories`` x G contiguous rows per batch, walking the rows epoch by epoch. With DDP
    ``ranks`` (W > 1) ``histories`` is the global batch and the env holds this rank's share
    (:class:`lares_rl.rpt.distributed.RankShareEnv`)."""

    users, target_pos = training_row_positions(data)
    if not np.array_equal(data.items[target_pos], targets.numpy()):
        raise RuntimeError("training_row_positions disagrees with SequenceData.train_rows; the row layout changed")
    rows_np = rows.numpy()
    world = ranks.world_size if ranks is not None else 1
    env_class, share = (NextItemEnv, {}) if world == 1 else (RankShareEnv, {"rank": ranks.rank, "world_size": world})
    return env_class(
        data.items,
        data.offsets,
        users[rows_np],
        target_pos[rows_np],
        target_pos[rows_np] + horizon,
        data.num_items,
        **share,
        batch_size=histories // world * cfg.group_size,
        max_len=max_len,
        slate_size=cfg.slate_size,
        horizon=horizon,
        reward_fn=reward_fn,
        group_size=cfg.group_size,
        sampling="epoch",
        seed=seed,
        device=device,
    )


def decisions(batch):
    """A collected ``[B, H]`` batch as ``[H * B]`` decisions, time-major: the G rows of a group stay
    contiguous at every step, which is what the group advantage needs. In a logged-replay env the
    slate never changes the next history, so each decision's own reward is its exact credit."""
    return batch.permute(1, 0).reshape(-1) if batch.batch_dims == 2 else batch.reshape(-1)


def frames_in(batch, group_size: int) -> int:
    """Histories in a collected batch (frames / G), the x-axis unit of every RPT chart."""
    return batch.numel() // group_size


def batch_plan(data, kept: torch.Tensor, cfg: RPTConfig, world_size: int = 1) -> tuple[torch.Tensor, int, int]:
    """(episode start rows, histories per batch, batches per epoch). One RPT epoch is
    ceil(episodes / histories) batches of the env's epoch walk (without replacement, reshuffled
    after each pass; the last batch of an epoch may start the next pass) unless
    ``rpt.batches_per_epoch`` sets it. Histories per batch stay a multiple of the collector
    workers and of the DDP ``world_size`` (each gets an equal share)."""
    starts = episode_starts(data, kept, cfg.horizon)
    if len(starts) == 0:
        raise LaresError(
            f"rpt.horizon={cfg.horizon}: no kept training row is followed by {cfg.horizon - 1} more training steps of its user; lower rpt.horizon"
        )
    if cfg.horizon > 1:
        print(f"[rpt] horizon {cfg.horizon}: {len(starts)} kept rows start an episode of {cfg.horizon} logged steps", flush=True)
    histories = cfg.histories_per_batch
    if histories > len(starts):
        shares = cfg.collector_workers * world_size
        histories = len(starts) - len(starts) % shares  # every worker (rank) an equal share
        print(
            f"[rpt] warning: rpt.histories_per_batch={cfg.histories_per_batch} > {len(starts)} episodes; using {histories} histories per batch"
        )
        if histories == 0:
            raise LaresError(
                f"rpt.collector_workers={cfg.collector_workers} x {world_size} process(es): only {len(starts)} rows were kept by the filter, fewer than one per worker; use fewer workers or processes"
            )
    return starts, histories, cfg.batches_per_epoch or math.ceil(len(starts) / histories)


def single_env(
    data,
    starts: torch.Tensor,
    targets: torch.Tensor,
    *,
    histories: int,
    cfg: RPTConfig,
    reward_fn,
    max_len: int,
    seed: int,
    device: torch.device,
    saved: Mapping | None,
    ranks: DistContext,
):
    """The env of an in-process collection (None with ``rpt.collector_workers > 1``: the workers
    build their own), one episode per start row, its walk restored on resume."""
    if cfg.collector_workers > 1:
        return None
    env = rows_env(
        data,
        starts,
        targets,
        histories=histories,
        cfg=cfg,
        reward_fn=reward_fn,
        max_len=max_len,
        seed=seed,
        device=device,
        horizon=cfg.horizon,
        ranks=ranks,
    )
    if saved is not None:  # before the Collector is built: its first reset draws the next unconsumed batch
        env.load_sampling_state(saved["env"])
    return env
