"""RPT collection on several processes with TorchRL's MultiSyncCollector (``rpt.collector_workers``).

Each worker process holds its own NextItemEnv over a disjoint share of the kept training rows
(worker i gets rows i, i + N, ...) and its own copy of the slate actor, seeded apart so the
workers draw different depths and rollout seeds. Every batch is the concatenation of one
equal-sized batch per worker (``histories_per_batch / N`` histories x G rows each, so groups stay
contiguous); after each learner update the new weights go to every worker
(``MultiProcessWeightSyncScheme``) before the next batch is collected, so collection is on-policy
exactly as with the single in-process Collector.

Resume: the workers' episode walks live in their processes, so a resumed run restarts them with
seeds derived from the number of updates done (weights, optimiser, early stopping and counters
are restored exactly; the order in which rows come back is not bit-identical to an uninterrupted
run). With one worker (the default) nothing here is used and resume stays exact.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.multiprocessing
from tensordict import TensorDict
from torch import nn
from torchrl.collectors import MultiSyncCollector
from torchrl.weight_update import MultiProcessWeightSyncScheme

from lares_rl.policies.actor import make_slate_actor
from lares_rl.rpt.episodes import rows_env
from lares_rl.rpt.learner import rollout_halting


def worker_env(data, rows: torch.Tensor, targets: torch.Tensor, histories: int, cfg, reward_fn, max_len: int, seed: int):
    """Runs inside a worker: the horizon-1 env over this worker's rows (see ``rpt.rows_env``)."""

    return rows_env(
        data, rows, targets, histories=histories, cfg=cfg, reward_fn=reward_fn, max_len=max_len, seed=seed, device=torch.device("cpu")
    )


def worker_actor(policy: nn.Module, cfg, eval_seed: int, seed: int, item_chunk: int | None = None):
    """Runs inside a worker: the same slate actor as the learner's (chunked top-K slates with
    ``item_chunk``), with the worker's own seed."""

    return make_slate_actor(
        policy,
        cfg.slate_size,
        cfg.exploration,
        latent_noise=cfg.latent_noise,
        eval_seed=eval_seed,
        seed=seed,
        latent_sigma=cfg.latent_sigma,
        antithetic=cfg.antithetic,
        halting=rollout_halting(cfg, policy),
        item_chunk=item_chunk,
    )


def multi_process_collector(
    *,
    data,
    kept: torch.Tensor,
    targets: torch.Tensor,
    histories: int,
    cfg,
    reward_fn,
    max_len: int,
    seed: int,
    actor: nn.Module,
    policy: nn.Module,
    eval_seed: int,
    item_chunk: int | None = None,
):
    """A MultiSyncCollector with ``cfg.collector_workers`` processes yielding ``histories`` x G
    rows per batch. ``seed`` should differ between a run and its resumption (module docstring)."""

    # tensors reach the workers through shared memory; the default file-descriptor strategy fails
    # in sandboxes that forbid resizing memfds ("unable to resize file"), file_system works everywhere
    torch.multiprocessing.set_sharing_strategy("file_system")
    workers = cfg.collector_workers
    per_worker = histories // workers
    envs = [partial(worker_env, data, kept[i::workers], targets, per_worker, cfg, reward_fn, max_len, seed + i) for i in range(workers)]
    actors = [partial(worker_actor, policy, cfg, eval_seed, seed + 7919 * (i + 1), item_chunk) for i in range(workers)]
    return MultiSyncCollector(
        envs,
        policy=actor,
        policy_factory=actors,
        weight_sync_schemes={"policy": MultiProcessWeightSyncScheme()},
        frames_per_batch=per_worker * workers * cfg.group_size,
        total_frames=-1,
        device="cpu",
        cat_results=0,
    )


def sync_weights(collector, actor: nn.Module) -> None:
    """Send the learner's current actor weights to every worker (a no-op for one process)."""

    if isinstance(collector, MultiSyncCollector):
        collector.update_policy_weights_(TensorDict.from_module(actor))
