"""Everything an RPT run sets up before its loop (lares_rl/rpt/loop.py): the saved state when
resuming, the top-100 filter, the episodes, env, learner and collector, and the run state.

Order matters for an exact resume: the env's walk is restored before the Collector is built (its
first reset draws the next batch), and the run's own state after it (nothing the Collector does at
start-up may shift a restored stream), which :func:`lares_rl.rpt.loop.train_rpt` does next.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchrl.collectors import Collector

from lares_rl.core.distributed import DistContext, check_world_size
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import weights_digest
from lares_rl.core.run_state import BestCheckpoint, Progress, RunState, read_saved_state
from lares_rl.core.runtime import EarlyStopping
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.policies.actor import RolloutScores
from lares_rl.rewards.builtin import describe_reward
from lares_rl.rewards.context import ItemContext
from lares_rl.rpt.algorithms.expected_pg import check_item_reward_signal
from lares_rl.rpt.collectors import multi_process_collector
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.distributed import share_actor
from lares_rl.rpt.episodes import batch_plan, single_env
from lares_rl.rpt.filter import cached_filter, filter_cache_key, top_k_filter
from lares_rl.rpt.learner import RPTLearner, build_learner, set_dropout
from lares_rl.rpt.probe import GREEDY_REWARD_ROWS, greedy_reward, probe_rows


@dataclass
class RPTProgress(Progress):
    """Where an RPT run stands (saved under ``progress`` in checkpoints/rpt_last.pt)."""

    histories_seen: int = 0  # of the global batch: the x-axis of every RPT chart
    frames: int = 0  # rows collected, every rank's (histories x G x horizon)
    epoch_rewards: list[float] = field(default_factory=list)  # the current epoch's batch rewards
    reward_per_epoch: list[float] = field(default_factory=list)
    valid_ndcg_per_epoch: list[float] = field(default_factory=list)
    reward_before: float = 0.0  # the greedy training reward of the SPT weights
    valid_start: dict[str, float] | None = None  # validation of the SPT weights; None in a state saved before it was kept
    probe_curve: list[dict[str, float]] = field(default_factory=list)  # the fixed probe, at the start and every rpt.probe_every batches
    zero_adv_fractions: list[float] = field(default_factory=list)  # per batch: the share of groups with identical rewards
    collect_seconds: float = 0.0
    prepare_seconds: float = 0.0  # advantage and reference pass
    update_seconds: float = 0.0
    loop_seconds: float = 0.0

    X_AXIS: ClassVar[str] = "histories_seen"
    # absent from states saved before they were kept (or before the first batch or epoch that sets them)
    OPTIONAL: ClassVar[tuple[str, ...]] = (
        "valid_start",
        "prepare_seconds",
        "update_seconds",
        "valid_ndcg_per_epoch",
        "probe_curve",
        "zero_adv_fractions",
    )

    def next_epoch(self, stop: bool) -> None:
        super().next_epoch(stop)
        self.epoch_rewards = []


# ----------------------------------------------------------------------------- resume


def read_rpt_state(state_path: Path, ranks: DistContext, run_dir: Path) -> dict:
    """The saved RPT training state (rank 0 reads it), refused when it is another phase's or was
    saved under another world size."""

    def check(saved: Mapping) -> None:
        if saved.get("phase") != "rpt":
            raise LaresError(f"cannot resume: {state_path} is not an RPT training state")
        check_world_size(saved, ranks, run_dir, best="rpt_best.pt")

    return read_saved_state(state_path, RPTProgress, check)


def check_resume_matches(saved: Mapping, cfg: RPTConfig, reference_digest: str, rows: int, run_dir: Path) -> None:
    """A saved RPT state continues only from the same SPT weights, data rows and ``rpt`` settings."""
    if saved["reference_digest"] != reference_digest:
        raise LaresError(
            f"cannot resume {run_dir}: the SPT checkpoint's weights differ from the ones this RPT run started from; pass the same checkpoint=..."
        )
    if saved["filter"]["rows"] != rows:
        raise LaresError(
            f"cannot resume {run_dir}: the data has {rows} training rows, the saved RPT state {saved['filter']['rows']}; use the same dataset settings"
        )
    saved_rpt = {**asdict(RPTConfig()), **saved["rpt"]}  # states saved before a setting existed ran with its default
    changed = sorted(key for key, value in asdict(cfg).items() if saved_rpt[key] != value)
    if changed:
        raise LaresError(
            f"cannot resume {run_dir}: rpt settings differ from the interrupted run ({', '.join('rpt.' + key for key in changed)}); pass the same overrides"
        )


# ----------------------------------------------------------------------------- the parts


def filter_rows(
    policy: nn.Module,
    train_rows: tuple,
    *,
    max_len: int,
    cfg: RPTConfig,
    saved: Mapping | None,
    reference_digest: str,
    seed: int,
    device: torch.device,
    item_chunk: int | None,
    filter_cache_dir: Path | None,
) -> tuple[torch.Tensor, float]:
    """(kept row indices, seconds the filter took): the training rows whose target the SPT model
    already ranks in its top-``filter_top``; a resumed run takes them from its saved state."""
    seqs, lengths, targets = train_rows
    if saved is not None:
        kept, seconds = saved["filter"]["kept"], saved["filter"]["seconds"]
    else:
        start = time.perf_counter()
        keep = cached_filter(
            filter_cache_dir,
            filter_cache_key(reference_digest, cfg, max_len, len(targets), seed),
            lambda: top_k_filter(
                policy,
                seqs,
                lengths,
                targets,
                top=cfg.filter_top,
                passes=cfg.filter_passes,
                device=device,
                seed=seed,
                item_chunk=item_chunk,
                order=cfg.filter_order,
            ),
        )
        kept, seconds = keep.nonzero().squeeze(1), time.perf_counter() - start
    print(
        f"[rpt] filter top-{cfg.filter_top} x {cfg.filter_passes} pass{'es' if cfg.filter_passes != 1 else ''}: kept {len(kept)}/{len(targets)} training rows ({len(kept) / max(len(targets), 1):.1%})"
        + (" (saved)" if saved else ""),
        flush=True,
    )
    if len(kept) == 0:
        raise LaresError(
            f"rpt.filter_top={cfg.filter_top}: no training row has its target in the SPT model's top-{cfg.filter_top}; raise rpt.filter_top"
        )
    return kept, seconds


def build_collector(
    env,
    learner,
    *,
    data,
    starts: torch.Tensor,
    targets: torch.Tensor,
    histories: int,
    cfg: RPTConfig,
    reward_fn,
    max_len: int,
    seed: int,
    device: torch.device,
    eval_seed: int,
    saved: Mapping | None,
    item_chunk: int | None,
):
    """The collector handing out ``histories`` x G contiguous rows per batch: a TorchRL Collector
    over ``env`` in this process, or without one the MultiSyncCollector of
    ``rpt.collector_workers`` processes (rpt_collectors)."""

    if env is not None:
        return Collector(
            env,
            learner.actor,
            frames_per_batch=env.batch_size[0] * cfg.horizon,
            total_frames=-1,
            device=device,
            auto_register_policy_transforms=False,
        )
    worker_seed = seed + (
        1_000_003 * saved["progress"].step if saved is not None else 0
    )  # a resumed run reseeds the workers' walks past the updates done
    return multi_process_collector(
        data=data,
        kept=starts,
        targets=targets,
        histories=histories,
        cfg=cfg,
        reward_fn=reward_fn,
        max_len=max_len,
        seed=worker_seed,
        actor=learner.actor,
        policy=copy.deepcopy(learner.policy).cpu(),
        eval_seed=eval_seed,
        item_chunk=item_chunk,
    )


def rollout_generator(actor) -> torch.Generator:
    """The private generator of the actor's RolloutScores (draws k and the rollout seeds)."""

    for module in actor.modules():
        if isinstance(module, RolloutScores):
            return module.generator
    raise RuntimeError("the slate actor has no RolloutScores module")


def weight_average(policy: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``policy``'s weights (torch's ``AveragedModel``), started
    at its current (SPT) weights, or None without ``decay``. Why: one RPT update is mostly noise
    (docs/results/gradient_snr.md), and averaging the iterates cancels much of it where a smaller step
    would also slow the signal (Polyak-Ruppert averaging)."""
    if decay is None:
        return None
    averaged = AveragedModel(policy, multi_avg_fn=get_ema_multi_avg_fn(decay))
    averaged.update_parameters(policy)  # the first call copies: the average starts at the SPT weights
    return averaged


@dataclass
class RPTParts:
    """What the RPT loop works with besides the run state (built by :func:`build_rpt`): the learner,
    the env and collector, the filter's kept rows, the batch plan, the fixed probes, the weight
    average, and what validation and the probes need."""

    policy: nn.Module
    cfg: RPTConfig
    learner: RPTLearner
    env: Any  # the in-process NextItemEnv, None with collector worker processes
    collector: Any  # TorchRL Collector or MultiSyncCollector
    kept: torch.Tensor  # the filter's training rows
    rows: int  # training rows before the filter
    filter_seconds: float
    histories: int  # per global batch
    batches_per_epoch: int
    reference_digest: str  # of the SPT weights RPT started from
    train_probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a fixed sample of the kept rows (greedy training reward)
    probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # the fixed probe histories
    averaged: AveragedModel | None
    reward_fn: Any
    data: Any
    max_len: int
    eval_cfg: EvalConfig
    device: torch.device
    item_context: ItemContext | None

    @property
    def served(self) -> nn.Module:
        """The weights that are validated, probed and kept: the running average with
        ``rpt.ema_decay``, else the trained policy itself."""
        return self.policy if self.averaged is None else self.averaged.module

    @property
    def epoch_unit(self) -> dict[str, str]:
        """What this run's "epoch" is (a pass over the kept rows or an interval): RPTConfig.epoch_unit."""
        return self.cfg.epoch_unit(len(self.kept))

    @property
    def reward_name(self) -> str:
        return describe_reward(self.reward_fn)

    def validate(self) -> dict[str, float]:
        return evaluate_policy(self.served, self.data, "valid", self.max_len, self.eval_cfg, self.device, context=self.item_context)

    def greedy_train_reward(self) -> float:
        return greedy_reward(
            self.served,
            *self.train_probe,
            self.reward_fn,
            self.cfg.slate_size,
            self.device,
            self.eval_cfg.seed,
            item_chunk=self.eval_cfg.item_chunk,
        )

    def saved_state(self) -> dict[str, Any]:
        """RPT's entries of every saved state, besides the run state's own."""
        return {
            "phase": "rpt",
            # the env already drew the batch the Collector holds; save the walk from before that draw
            "env": self.env.sampling_state(before_last_reset=True) if self.env is not None else None,
            "filter": {"kept": self.kept, "rows": self.rows, "seconds": self.filter_seconds},
            "reference_digest": self.reference_digest,
            "rpt": asdict(self.cfg),
        }


def prepare_policy(
    policy: nn.Module, cfg: RPTConfig, data, reward_fn, device: torch.device, seed: int, ranks: DistContext, resumed: bool
) -> str:
    """The checks of ``rpt`` against the reward and the policy, RPT's dropout on the policy, and the
    digest of its (SPT) weights, which every rank must share and a resumed run must match."""
    cfg.check_compatible(num_items=data.num_items, reward_fn=reward_fn, recurrent=bool(getattr(policy, "recurrent", False)))
    if cfg.algorithm == "expected_pg":
        check_item_reward_signal(reward_fn, data.num_items, describe_reward(reward_fn))
    policy.to(device)
    set_dropout(policy, cfg.dropout)
    reference_digest = weights_digest(policy.state_dict())
    ranks.check_same("SPT checkpoint", {"weights_digest": reference_digest})
    if ranks.rank and not resumed:  # item sampling on the global stream: each rank its own (resume restores them)
        torch.manual_seed(seed + ranks.rank)
    return reference_digest


def build_rpt(
    *,
    policy: nn.Module,
    policy_config: Mapping,
    data,
    max_len: int,
    cfg: RPTConfig,
    reward_fn,
    eval_cfg: EvalConfig,
    run_dir: Path,
    device: torch.device,
    seed: int,
    config: Mapping,
    resume: bool,
    filter_cache_dir: Path | None,
    item_context: ItemContext | None,
    ranks: DistContext,
) -> tuple[RunState, RPTParts, dict | None]:
    """The run state, the parts and (when resuming) the saved state, which rank 0 reads and every
    rank gets: ``policy`` (the SPT weights, checked against the saved state's) with RPT's dropout,
    the filter (saved, never recomputed on resume), episodes and batch size, then the env (its walk
    restored), actor, frozen reference, algorithm, optimiser and collector."""
    state_path = run_dir / "checkpoints" / "rpt_last.pt"
    saved = ranks.on_main(lambda: read_rpt_state(state_path, ranks, run_dir)) if resume else None
    reference_digest = prepare_policy(policy, cfg, data, reward_fn, device, seed, ranks, resumed=saved is not None)
    train_rows = data.train_rows(max_len)
    if saved is not None:
        check_resume_matches(saved, cfg, reference_digest, len(train_rows[2]), run_dir)
    kept, filter_seconds = ranks.on_main(  # rank 0 filters, every rank gets its rows
        lambda: filter_rows(
            policy,
            train_rows,
            max_len=max_len,
            cfg=cfg,
            saved=saved,
            reference_digest=reference_digest,
            seed=seed,
            device=device,
            item_chunk=eval_cfg.item_chunk,
            filter_cache_dir=filter_cache_dir,
        )
    )
    starts, histories, batches_per_epoch = batch_plan(data, kept, cfg, ranks.world_size)

    episodes = dict(histories=histories, cfg=cfg, reward_fn=reward_fn, max_len=max_len, seed=seed, device=device, saved=saved)
    env = single_env(data, starts, train_rows[2], ranks=ranks, **episodes)
    learner = build_learner(
        policy, cfg, device=device, eval_seed=eval_cfg.seed, seed=seed, reward_fn=reward_fn, item_chunk=eval_cfg.item_chunk
    )
    learner.ranks = ranks
    share_actor(learner.actor, ranks, cfg.group_size)
    collector = build_collector(
        env, learner, data=data, starts=starts, targets=train_rows[2], eval_seed=eval_cfg.seed, item_chunk=eval_cfg.item_chunk, **episodes
    )
    seqs, lengths, targets = train_rows
    probe_index = probe_rows(kept, cfg.probe_size, seed)
    greedy_index = probe_rows(kept, GREEDY_REWARD_ROWS, seed)
    parts = RPTParts(
        policy=policy,
        cfg=cfg,
        learner=learner,
        env=env,
        collector=collector,
        kept=kept,
        rows=len(targets),
        filter_seconds=filter_seconds,
        histories=histories,
        batches_per_epoch=batches_per_epoch,
        reference_digest=reference_digest,
        train_probe=(seqs[greedy_index], lengths[greedy_index], targets[greedy_index]),
        probe=(seqs[probe_index], lengths[probe_index], targets[probe_index]),
        averaged=weight_average(policy, cfg.ema_decay),
        reward_fn=reward_fn,
        data=data,
        max_len=max_len,
        eval_cfg=eval_cfg,
        device=device,
        item_context=item_context,
    )
    return rpt_run_state(parts, policy_config, config, run_dir, ranks), parts, saved


def rpt_run_state(parts: RPTParts, policy_config: Mapping, config: Mapping, run_dir: Path, ranks: DistContext) -> RunState:
    """RPT's run bookkeeping: each save holds the policy, value head, weight average, loss and
    optimiser, early stopping, the actor's RNG stream and :meth:`RPTParts.saved_state`; the best
    checkpoint records the policy config with RPT's dropout and the ``rpt`` settings."""
    cfg, data, learner = parts.cfg, parts.data, parts.learner
    dataset_name = str(config.get("dataset", {}).get("name", data.name))
    policy_config = {**dict(policy_config), "dropout": cfg.dropout}
    return RunState(
        phase="rpt",
        run_dir=run_dir,
        ctx=ranks,
        progress=RPTProgress(),
        stopper=EarlyStopping(cfg.patience),
        best=BestCheckpoint(
            run_dir / "checkpoints" / "rpt_best.pt", "rpt", policy_config, data, parts.max_len, dataset_name, config, {"rpt": asdict(cfg)}
        ),
        stateful={
            "policy_state": parts.policy,
            "value_head_state": learner.value_head,
            "averaged_state": parts.averaged,
            "loss_state": learner.loss_module,
            "optimizer_state": learner.optimizer,
        },
        generators=(rollout_generator(learner.actor),),
        extra_state=parts.saved_state,
    )
