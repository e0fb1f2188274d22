"""RPT: reinforcement post-training of an SPT checkpoint (DESIGN section 3), top to bottom.

Reference algorithm (GRPO-style, critic-free), one gradient step per collected batch:
    filter:     keep training rows whose target is in the SPT model's top-100 in >= 1 of 3 stochastic passes
    reference:  a frozen copy of the SPT model (eval mode)
    collect:    NextItemEnv hands out ``histories_per_batch`` histories x G contiguous rows; the actor
                rolls every row out in train mode with its own k_g, T0 noise and dropout, and
                recommends the top-K slate of the last step; the env rewards it (reward group)
    advantage:  A_g = (r_g - mean_G r) / (std_G r + 1e-4)                      (GroupAdvantage)
    loss:       mean_g mean_{j<=k_g} -[exp(lp - sg(lp)) A_g - beta (exp(rp - lp) - (rp - lp) - 1)]
                lp: the rollout replayed with grad, rp: the reference with the same k_g (GroupRelativeLoss)
    epoch:      one pass over the kept rows, then validation NDCG@10, early stopping, best checkpoint
    best:       the SPT weights are candidate epoch -1, so rpt_best.pt is never worse on validation than the start
    state:      checkpoints/rpt_last.pt at the start, after every epoch and on Ctrl-C; resume=True continues exactly
``rpt.algorithm=ppo`` swaps the loss for TorchRL's ClipPPOLoss over an item-sampling actor
(Plackett-Luce or categorical slates) with the group advantage or a learned value head;
``rpt.algorithm=latent_pg`` for a policy gradient over a Gaussian latent action
(rpt_losses.LatentPolicyGradientLoss), because the reference update does not follow the reward;
``rpt.algorithm=expected_pg`` (the project default) for the exact expected-reward gradient of the
item softmax (rpt_losses.ExpectedRewardLoss), which needs no sampling. The learner (actor, reference, loss, optimiser, one update) is built by rpt_learner.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchrl.collectors import Collector

from lares_rl.core.checkpoint import save_checkpoint
from lares_rl.core.distributed import DistContext, check_world_size
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import (
    TrainingInterrupted,
    capture_rng,
    load_training_state,
    restore_rng,
    save_training_state,
    stop_on_sigint,
    weights_digest,
)
from lares_rl.core.runtime import EarlyStopping
from lares_rl.core.tracking import NullTracker, Tracker, hparams_markdown
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.policies.actor import RolloutScores
from lares_rl.rewards.builtin import describe_reward
from lares_rl.rewards.context import ItemContext
from lares_rl.rpt.collectors import multi_process_collector, sync_weights
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.distributed import check_world, global_rows, mean_scalars, share_actor
from lares_rl.rpt.episodes import batch_plan, decisions, frames_in, single_env
from lares_rl.rpt.filter import cached_filter, top_k_filter
from lares_rl.rpt.learner import build_learner, set_dropout
from lares_rl.rpt.losses import check_item_reward_signal
from lares_rl.rpt.probe import check_learning_signal, greedy_reward, probe_metrics, probe_rows, term_grad_norms

# ----------------------------------------------------------------------------- primitives


def group_diagnostics(rows: Mapping[str, torch.Tensor], group_size: int, state: dict) -> dict[str, float]:
    """How much signal the batch's groups carried (the share with identical rewards, the advantage
    and within-group reward spread), from the batch's per-row ``reward``, ``zero_adv`` and
    ``advantage``; the zero-advantage share is also kept in ``state``. Empty with one rollout per
    history (``rpt=expected_pg``), which has no groups."""
    if group_size < 2:
        return {}
    zero_adv = rows["zero_adv"].mean().item()
    state.setdefault("zero_adv_fractions", []).append(zero_adv)
    return {
        "zero_adv_group_fraction": zero_adv,
        "advantage_std": rows["advantage"].std().item(),
        "group_reward_std": rows["reward"].reshape(-1, group_size).std(dim=1).mean().item(),
    }


# ----------------------------------------------------------------------------- the algorithm


def _rollout_generator(actor) -> torch.Generator:
    """The private generator of the actor's RolloutScores (draws k and the rollout seeds)."""

    for module in actor.modules():
        if isinstance(module, RolloutScores):
            return module.generator
    raise RuntimeError("the slate actor has no RolloutScores module")


def weight_average(policy: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``policy``'s weights (torch's ``AveragedModel``), started
    at its current (SPT) weights, or None without ``decay``. Why: one RPT update is mostly noise
    (docs/gradient_snr.md), and averaging the iterates cancels much of it where a smaller step
    would also slow the signal (Polyak-Ruppert averaging)."""
    if decay is None:
        return None
    averaged = AveragedModel(policy, multi_avg_fn=get_ema_multi_avg_fn(decay))
    averaged.update_parameters(policy)  # the first call copies: the average starts at the SPT weights
    return averaged


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
        key = f"{reference_digest[:20]}_top{cfg.filter_top}x{cfg.filter_passes}_p{cfg.dropout}_L{max_len}_n{len(targets)}_s{seed}"
        keep = cached_filter(
            filter_cache_dir,
            key,
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
            ),
        )
        kept, seconds = keep.nonzero().squeeze(1), time.perf_counter() - start
    print(
        f"[rpt] filter top-{cfg.filter_top} x {cfg.filter_passes} passes: kept {len(kept)}/{len(targets)} training rows ({len(kept) / max(len(targets), 1):.1%})"
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
        1_000_003 * saved["progress"]["step"] if saved is not None else 0
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


class RPTRun:
    """One RPT run's moving parts and its steps: the start (or the restored state), one update
    per collected batch with its logging, the validation that ends each epoch, the saved state
    and the summary. :func:`train_rpt` builds it and drives the loop. Under DDP (``ranks``) rank 0
    alone validates, probes, decides and writes; the others follow its broadcast decisions."""

    def __init__(
        self,
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
        learner,
        item_context: ItemContext | None,
        plan: dict,
        ranks: DistContext,
    ) -> None:
        self.policy, self.policy_config, self.data, self.max_len, self.cfg = policy, policy_config, data, max_len, cfg
        self.reward_fn, self.eval_cfg, self.device, self.seed, self.config = reward_fn, eval_cfg, device, seed, config
        self.learner, self.item_context, self.ranks = learner, item_context, ranks
        self.best_path, self.state_path = run_dir / "checkpoints" / "rpt_best.pt", run_dir / "checkpoints" / "rpt_last.pt"
        self.dataset_name = str(config.get("dataset", {}).get("name", data.name))
        self.plan = plan  # kept, filter_seconds, rows, histories, batches_per_epoch, reference_digest, env, collector
        self.stopper = EarlyStopping(cfg.patience)
        self.rollout_generator = _rollout_generator(learner.actor)
        seqs, lengths, targets = plan["train_rows"]
        kept = plan["kept"]
        self.train_probe = (seqs[kept], lengths[kept], targets[kept])
        probe_index = probe_rows(kept, cfg.probe_size, seed)
        self.probe = (seqs[probe_index], lengths[probe_index], targets[probe_index])
        self.reward_name = describe_reward(reward_fn)
        self.averaged = weight_average(policy, cfg.ema_decay)
        self.state: dict = {}
        self.tracker: Tracker | NullTracker = NullTracker()
        self.last_good = "The last good checkpoint is kept"  # what a non-finite loss leaves behind, updated at each save

    # --- start
    @property
    def served(self) -> nn.Module:
        """The weights that are validated, probed and kept: the running average with
        ``rpt.ema_decay``, else the trained policy itself."""
        return self.policy if self.averaged is None else self.averaged.module

    def validate(self) -> dict[str, float]:
        return evaluate_policy(self.served, self.data, "valid", self.max_len, self.eval_cfg, self.device, context=self.item_context)

    def save_best(self, epoch: int, metrics: Mapping[str, float]) -> None:
        save_checkpoint(
            self.best_path,
            policy=self.served,
            policy_config=self.policy_config,
            data=self.data,
            max_len=self.max_len,
            dataset_name=self.dataset_name,
            phase="rpt",
            epoch=epoch,
            metrics=metrics,
            config=self.config,
            extra={"rpt": asdict(self.cfg)},
        )

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

    def start(self) -> tuple[dict, dict]:
        """A fresh run: the SPT weights are the first candidate, so rpt_best.pt never ends up worse
        on validation than the model RPT started from, and an RPT epoch counts as progress only if
        it beats it. Then the greedy training reward and the fixed probe before any update. Runs on
        rank 0; returns the state and early stopping for the other ranks."""
        cfg = self.cfg
        valid_start = self.validate()
        self.stopper.best = cfg.selection_score(valid_start, valid_start)
        self.save_best(-1, valid_start)
        print(
            f"[rpt] start (the SPT weights): valid ndcg@10 {valid_start['ndcg@10']:.4f}  recall@10 {valid_start['recall@10']:.4f}",
            flush=True,
        )
        self.state = {
            "epoch": 0,
            "next_batch": 0,
            "epoch_rewards": [],
            "histories_seen": 0,
            "step": 0,
            "finished": False,
            "reward_per_epoch": [],
            "frames": 0,
            "collect_seconds": 0.0,
            "loop_seconds": 0.0,
            "reward_before": self.greedy_train_reward(),
            "valid_start": valid_start,
            "probe_curve": [],
            "zero_adv_fractions": [],
        }
        start_probe = probe_metrics(
            self.served, self.learner.reference, self.probe, self.reward_fn, cfg.slate_size, self.device, self.eval_cfg.seed
        )
        check_learning_signal(start_probe.pop("rewards"), self.reward_name)
        self.state["probe_curve"].append({"histories": 0, **start_probe})
        print(
            f"[rpt] probe ({len(self.probe[2])} fixed training histories): reward {start_probe['reward']:.4f}  mean target rank {start_probe['target_rank']:.1f}",
            flush=True,
        )
        return self.state, self.stopper.state_dict()

    def begin(self, saved: Mapping | None, run_dir: Path) -> None:
        """The start on rank 0, broadcast (every rank then holds the same counters and early
        stopping), or the saved state restored on every rank."""
        if saved is not None:
            self.restore(saved, run_dir)
            return
        self.state, stopper_state = self.ranks.on_main(self.start)
        self.stopper.load_state_dict(stopper_state)

    def restore(self, saved: Mapping, run_dir: Path) -> None:
        """Continue from ``saved``; called after the Collector is built, so nothing it does at
        start-up shifts a restored stream."""
        learner = self.learner
        if "valid_start" not in saved["progress"]:  # states saved before the start became a candidate
            saved["progress"]["valid_start"] = self.validate()
        self.policy.load_state_dict(saved["policy_state"])
        if learner.value_head is not None:
            learner.value_head.load_state_dict(saved["value_head_state"])
        if self.averaged is not None:
            self.averaged.load_state_dict(saved["averaged_state"])
        learner.loss_module.load_state_dict(saved["loss_state"])
        learner.optimizer.load_state_dict(saved["optimizer_state"])
        self.stopper.load_state_dict(saved["stopper"])
        restore_rng(saved["rank_rng"][self.ranks.rank] if self.ranks.active else saved["rng"], self.rollout_generator)
        self.state = saved["progress"]
        if self.ranks.is_main:
            print(
                f"[rpt] resuming {run_dir} at epoch {self.state['epoch']}, batch {self.state['next_batch']}/{self.plan['batches_per_epoch']}",
                flush=True,
            )

    def open_tracker(self, run_dir: Path, progress: bool, resumed: bool) -> None:
        """Each phase has its own event directory, so a resumed RPT can purge what it logged after
        the saved state (a crash mid-epoch) without touching the SPT events. Rank 0 only."""
        if not self.ranks.is_main:
            return
        self.tracker = Tracker(run_dir / "tb" / "rpt", "rpt", progress, purge_step=self.state["histories_seen"] + 1 if resumed else None)
        if not resumed:
            self.tracker.log_text("hparams", hparams_markdown(self.config))
            kept = self.plan["kept"]
            self.tracker.log("charts", {"kept_fraction": len(kept) / max(self.plan["rows"], 1), "kept_rows": len(kept)}, 0)
            self.tracker.log("time", {"filter": self.plan["filter_seconds"]}, 0)
            self.tracker.log("probe", {n: v for n, v in self.state["probe_curve"][0].items() if n != "histories"}, 0)

    def save_state(self) -> None:
        """Rank 0 writes; every rank's RNG streams are gathered into it (their global streams
        differ; the walk and the actor's generator are the same on every rank)."""
        learner, state, env = self.learner, self.state, self.plan["env"]
        rank_rng = self.ranks.gather_objects(capture_rng(self.rollout_generator))
        self.ranks.on_main(
            lambda: save_training_state(
                self.state_path,
                {
                    "phase": "rpt",
                    "policy_state": self.policy.state_dict(),
                    "value_head_state": learner.value_head.state_dict() if learner.value_head is not None else None,
                    "averaged_state": self.averaged.state_dict() if self.averaged is not None else None,
                    "loss_state": learner.loss_module.state_dict(),
                    "optimizer_state": learner.optimizer.state_dict(),
                    "stopper": self.stopper.state_dict(),
                    # the env already drew the batch the Collector holds; save the walk from before that draw
                    "rng": capture_rng(self.rollout_generator),
                    "env": env.sampling_state(before_last_reset=True) if env is not None else None,
                    "filter": {"kept": self.plan["kept"], "rows": self.plan["rows"], "seconds": self.plan["filter_seconds"]},
                    "reference_digest": self.plan["reference_digest"],
                    "progress": state,
                    "rpt": asdict(self.cfg),
                    "world_size": self.ranks.world_size,
                    "distributed": self.ranks.active,
                    **({"rank_rng": rank_rng} if self.ranks.active else {}),
                },
            )
        )
        if state["next_batch"]:
            where = f"epoch {state['epoch']} up to batch {state['next_batch']}"
        else:
            where = f"after epoch {state['epoch'] - 1}" if state["epoch"] else "the start of RPT"
        best = (
            f" and {self.best_path} ({f'best epoch {self.stopper.best_epoch}' if self.stopper.best_epoch >= 0 else 'the SPT start'})"
            if self.best_path.is_file()
            else ""
        )
        self.last_good = f"The last good state is kept: {self.state_path} ({where}){best}"

    # --- one batch
    def collect(self, batches, epoch: int, index: int):
        """The next collected batch as decisions on the learner's device (:func:`decisions`)."""
        try:
            return decisions(next(batches)).to(self.device)  # [B, H] -> [H * B]; groups stay contiguous
        except LaresError as err:  # a reward that broke its contract mid-run
            raise LaresError(
                f"{err} (RPT epoch {epoch}, batch {index + 1}/{self.plan['batches_per_epoch']}); training stopped before this update. {self.last_good}"
            ) from None

    def update_step(self, batches, epoch: int, index: int) -> None:
        """Collect -> advantage (+ reference) -> update on one batch, then its logging."""
        cfg, learner, state, tracker = self.cfg, self.learner, self.state, self.tracker
        t0 = time.perf_counter()
        batch = self.collect(batches, epoch, index)
        t1 = time.perf_counter()
        learner.prepare(batch)
        t2 = time.perf_counter()
        probe_now = (index + 1) % cfg.probe_every == 0 and self.ranks.is_main
        log_grad_norms = (
            (
                lambda terms: tracker.log(
                    "diag",
                    term_grad_norms(terms, list(learner.loss_module.parameters())),
                    state["histories_seen"] + frames_in(batch, cfg.group_size),
                )
            )
            if probe_now
            else None
        )
        learner.steps = state["step"]
        terms, loss = learner.update(
            batch,
            where=f"epoch {epoch}, batch {index + 1}/{self.plan['batches_per_epoch']}, ",
            kept=self.last_good,
            on_first_terms=log_grad_norms,
        )
        state["step"] = learner.steps
        if self.averaged is not None:
            self.averaged.update_parameters(self.policy)
        sync_weights(self.plan["collector"], learner.actor)  # worker processes collect the next batch with these weights
        t3 = time.perf_counter()
        frames = batch.numel() * self.ranks.world_size  # the global batch's
        state["histories_seen"] += frames_in(batch, cfg.group_size) * self.ranks.world_size
        state["collect_seconds"] += t1 - t0
        state["prepare_seconds"] = state.get("prepare_seconds", 0.0) + t2 - t1
        state["update_seconds"] = state.get("update_seconds", 0.0) + t3 - t2
        state["loop_seconds"] += t3 - t0
        state["frames"] += frames
        self.log_step(batch, terms, loss, probe_now, seconds=(t1 - t0, t2 - t1, t3 - t2), frames=frames)
        state["next_batch"] = index + 1

    def log_step(
        self,
        batch,
        terms: Mapping[str, torch.Tensor],
        loss: torch.Tensor,
        probe_now: bool,
        seconds: tuple[float, float, float],
        frames: int,
    ) -> None:
        """The step's losses, diagnostics, charts and timings (x axis: histories seen). Under DDP
        the loss terms are averaged over ranks and the batch statistics are the global batch's."""
        cfg, state, tracker = self.cfg, self.state, self.tracker
        collect, prepare, update = seconds
        histories_seen = state["histories_seen"]
        grouped = {"zero_adv": batch["group_zero_adv"], "advantage": batch["advantage"]} if cfg.group_size >= 2 else {}
        rows = global_rows(self.ranks, {"reward": batch["next", "reward"], "num_steps": batch["num_steps"], **grouped})
        reward, num_steps = rows["reward"], rows["num_steps"]
        state["epoch_rewards"].append(reward.mean().item())
        logged = mean_scalars(self.ranks, terms, loss)
        tracker.log("losses", {n: v for n, v in logged.items() if n.startswith("loss_")}, histories_seen)
        tracker.log(
            "diag",
            {n: v for n, v in logged.items() if not n.startswith("loss_")} | group_diagnostics(rows, cfg.group_size, state),
            histories_seen,
        )
        if probe_now:
            point = probe_metrics(
                self.served, self.learner.reference, self.probe, self.reward_fn, cfg.slate_size, self.device, self.eval_cfg.seed
            )
            point = {"histories": histories_seen, **{n: v for n, v in point.items() if n != "rewards"}}
            state.setdefault("probe_curve", []).append(point)
            tracker.log("probe", {n: v for n, v in point.items() if n != "histories"}, histories_seen)
        tracker.log(
            "charts",
            {
                "reward_mean": reward.mean().item(),
                "reward_std": reward.std().item(),
                "k_mean": num_steps.mean().item(),
                "frames_per_sec": frames / collect,
                "loop_frames_per_sec": frames / (collect + prepare + update),
                "learning_rate": self.learner.optimizer.param_groups[0]["lr"],
            },
            histories_seen,
        )
        tracker.log("time", {"collect": collect, "reference": prepare, "update": update}, histories_seen)
        tracker.log_histogram("charts/k", num_steps, histories_seen)

    # --- end of an epoch
    def end_epoch(self, epoch: int, seconds: float) -> None:
        """Validation, early stopping, the best checkpoint, and the saved state."""
        state = self.state
        state["reward_per_epoch"].append(sum(state["epoch_rewards"]) / max(len(state["epoch_rewards"]), 1))
        stopper_state, stop = self.ranks.on_main(lambda: self.validate_epoch(epoch, seconds))  # decided once, on rank 0
        self.stopper.load_state_dict(stopper_state)
        state.update(epoch=epoch + 1, next_batch=0, epoch_rewards=[], finished=stop)
        self.save_state()

    def validate_epoch(self, epoch: int, seconds: float) -> tuple[dict, bool]:
        """Rank 0: validation, the early-stopping decision and the best checkpoint."""
        cfg, state, tracker, stopper = self.cfg, self.state, self.tracker, self.stopper
        metrics = self.validate()
        stop = stopper.step(cfg.selection_score(metrics, state["valid_start"]), epoch)
        histories_seen = state["histories_seen"]
        state.setdefault("valid_ndcg_per_epoch", []).append(metrics["ndcg@10"])
        tracker.log("eval", metrics, histories_seen)
        tracker.log("charts", {"epoch": epoch, "epoch_reward_mean": state["reward_per_epoch"][-1]}, histories_seen)
        tracker.log("time", {"epoch_seconds": seconds}, histories_seen)
        selected = "" if cfg.select_metric in ("ndcg@10", "recall@10") else f"  {cfg.select_metric} {metrics[cfg.select_metric]:.4f}"
        print(
            f"[rpt] epoch {epoch:3d}  {seconds:6.1f}s  train reward {state['reward_per_epoch'][-1]:.4f}  valid ndcg@10 {metrics['ndcg@10']:.4f}  recall@10 {metrics['recall@10']:.4f}{selected}"
            + ("  *" if stopper.improved else ""),
            flush=True,
        )
        if stopper.improved:
            self.save_best(epoch, metrics)
        return stopper.state_dict(), stop

    def summary(self) -> dict:
        """The best weights back into the policy, and what the run did (rank 0; the other ranks
        return the counters only and keep their last weights)."""
        cfg, state, stopper = self.cfg, self.state, self.stopper
        if not self.ranks.is_main:
            return {"best_epoch": stopper.best_epoch, "epochs_run": state["epoch"], "frames": state["frames"]}
        if stopper.best_epoch < 0:
            print(
                f"[rpt] no RPT epoch beat the SPT start on validation {cfg.select_metric}"
                + (f" within {cfg.select_tolerance:.0%} of its ndcg@10" if cfg.select_tolerance else "")
                + f"; {self.best_path} holds the SPT weights",
                flush=True,
            )
        best = torch.load(self.best_path, map_location=self.device, weights_only=False)
        self.policy.load_state_dict(best["policy_state"])
        histories, kept = self.plan["histories"], self.plan["kept"]
        return {
            "best_epoch": stopper.best_epoch,
            "epochs_run": state["epoch"],
            "valid": best["metrics"],
            "valid_start": state["valid_start"],
            "checkpoint": str(self.best_path),
            "kept_rows": len(kept),
            "kept_fraction": len(kept) / max(self.plan["rows"], 1),
            "histories_per_batch": histories,
            "reward_per_epoch": list(state["reward_per_epoch"]),
            "valid_ndcg_per_epoch": list(state.setdefault("valid_ndcg_per_epoch", [])),
            "valid_selection_per_epoch": list(stopper.history),
            "train_reward_greedy_before": state["reward_before"],
            "train_reward_greedy_after": self.greedy_train_reward(),
            "collect_frames_per_sec": state["frames"] / state["collect_seconds"] if state["collect_seconds"] else 0.0,
            "loop_frames_per_sec": state["frames"] / state["loop_seconds"] if state["loop_seconds"] else 0.0,
            "seconds_per_batch": {  # where the loop's time goes: collection, advantage + reference pass, gradient step(s)
                phase: state.get(f"{phase}_seconds", 0.0) / max(state["frames"] // (histories * cfg.group_size * cfg.horizon), 1)
                for phase in ("collect", "prepare", "update")
            },
            "filter_seconds": self.plan["filter_seconds"],
            "frames": state["frames"],
            "probe_curve": list(state.get("probe_curve", [])),
            "zero_adv_group_fraction": float(np.mean(state["zero_adv_fractions"])) if state.get("zero_adv_fractions") else None,
        }


def read_rpt_state(state_path: Path, ranks: DistContext, run_dir: Path) -> dict:
    """The saved RPT training state, refused when it is another phase's or was saved under
    another world size."""
    saved = load_training_state(state_path)
    if saved.get("phase") != "rpt":
        raise LaresError(f"cannot resume: {state_path} is not an RPT training state")
    check_world_size(saved, ranks, run_dir, best="rpt_best.pt")
    return saved


def train_rpt(
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
    progress: bool = True,
    resume: bool = False,
    resume_command: str | None = None,
    filter_cache_dir: Path | None = None,
    item_context: ItemContext | None = None,
    dist_ctx: DistContext | None = None,
) -> dict:
    """Post-train ``policy`` (SPT weights) with RPT; early-stop on validation NDCG@10, keep the best.
    (``rpt.select_metric`` / ``rpt.select_tolerance`` change what "best" means; ``item_context``
    adds the beyond-accuracy measures to every validation pass, so they can be selected on and
    appear under ``rpt/eval/`` in TensorBoard.)

    The full training state is saved atomically to ``checkpoints/rpt_last.pt`` when RPT starts
    (after the filter), after every epoch and on Ctrl-C (after the current batch): policy,
    optimiser (value head), early stopping, every RNG stream, the env's episode walk, the filter's
    kept rows, counters and the per-epoch history. ``resume=True`` continues from it exactly (a CPU
    run ends bit-identical to an uninterrupted one); ``policy`` must then hold the same SPT weights
    as the interrupted run, they become the frozen reference again. ``resume_command`` is the
    command line printed after Ctrl-C. ``filter_cache_dir``: keep the filter's result there, keyed
    by the SPT weights and every setting it depends on, so later RPT runs from the same checkpoint
    (another algorithm, reward or seed of the loss) skip its passes. Returns a summary (best epoch, -1 when no RPT epoch beat
    the SPT weights on validation; its validation metrics and those of the start; checkpoint
    path, kept fraction, the training reward per epoch, throughput); the policy is left holding
    the best weights.

    ``dist_ctx`` (under torchrun): DDP learners, each rank collecting and training on its share of
    every global batch of ``rpt.histories_per_batch`` histories; rank 0 alone filters, validates,
    decides early stopping and writes (:mod:`lares_rl.rpt.distributed`). Only rank 0's policy is
    left holding the best weights.
    """

    ranks = dist_ctx or DistContext()
    check_world(cfg, ranks)
    state_path = run_dir / "checkpoints" / "rpt_last.pt"
    resume_command = resume_command or f"lares-rl rpt resume={run_dir} checkpoint=<the same SPT checkpoint> <the same overrides>"
    saved = ranks.on_main(lambda: read_rpt_state(state_path, ranks, run_dir)) if resume else None  # rank 0 reads, every rank gets it
    cfg.check_compatible(num_items=data.num_items, reward_fn=reward_fn, recurrent=bool(getattr(policy, "recurrent", False)))
    if cfg.algorithm == "expected_pg":
        check_item_reward_signal(reward_fn, data.num_items, describe_reward(reward_fn))
    policy.to(device)
    set_dropout(policy, cfg.dropout)
    policy_config = {**dict(policy_config), "dropout": cfg.dropout}
    reference_digest = weights_digest(policy.state_dict())
    ranks.check_same("SPT checkpoint", {"weights_digest": reference_digest})
    if ranks.rank and saved is None:  # item sampling on the global stream: each rank its own (resume restores them)
        torch.manual_seed(seed + ranks.rank)

    # --- filter (saved, never recomputed on resume), episodes and batch size
    train_rows = data.train_rows(max_len)
    if saved is not None:
        check_resume_matches(saved, cfg, reference_digest, len(train_rows[2]), run_dir)
    kept, filter_seconds = ranks.on_main(
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
    )  # rank 0 filters, every rank gets its rows
    starts, histories, batches_per_epoch = batch_plan(data, kept, cfg, ranks.world_size)

    # --- env, then actor, frozen reference (the SPT weights), advantage, loss, optimiser, and the collector
    env = single_env(
        data,
        starts,
        train_rows[2],
        histories=histories,
        cfg=cfg,
        reward_fn=reward_fn,
        max_len=max_len,
        seed=seed,
        device=device,
        saved=saved,
        ranks=ranks,
    )
    learner = build_learner(
        policy, cfg, device=device, eval_seed=eval_cfg.seed, seed=seed, reward_fn=reward_fn, item_chunk=eval_cfg.item_chunk
    )
    learner.ranks = ranks
    share_actor(learner.actor, ranks, cfg.group_size)
    collector = build_collector(
        env,
        learner,
        data=data,
        starts=starts,
        targets=train_rows[2],
        histories=histories,
        cfg=cfg,
        reward_fn=reward_fn,
        max_len=max_len,
        seed=seed,
        device=device,
        eval_seed=eval_cfg.seed,
        saved=saved,
        item_chunk=eval_cfg.item_chunk,
    )
    batches = iter(collector)
    plan = {
        "train_rows": train_rows,
        "kept": kept,
        "rows": len(train_rows[2]),
        "filter_seconds": filter_seconds,
        "histories": histories,
        "batches_per_epoch": batches_per_epoch,
        "reference_digest": reference_digest,
        "env": env,
        "collector": collector,
    }
    run = RPTRun(
        policy=policy,
        policy_config=policy_config,
        data=data,
        max_len=max_len,
        cfg=cfg,
        reward_fn=reward_fn,
        eval_cfg=eval_cfg,
        run_dir=run_dir,
        device=device,
        seed=seed,
        config=config,
        learner=learner,
        item_context=item_context,
        plan=plan,
        ranks=ranks,
    )
    run.begin(saved, run_dir)
    sync_weights(collector, learner.actor)  # worker processes start from the weights just restored, not their copy's
    run.open_tracker(run_dir, progress, resumed=saved is not None)

    # --- loop: collect -> advantage (+ reference) -> update; validation after each epoch
    try:
        with stop_on_sigint() as stop_request:
            run.save_state()  # RPT's start (after the filter); on resume this rewrites the loaded state unchanged
            while run.state["epoch"] < cfg.epochs and not run.state["finished"]:
                epoch = run.state["epoch"]
                epoch_start = time.perf_counter()
                for index in run.tracker.bar(
                    range(run.state["next_batch"], batches_per_epoch), batches_per_epoch - run.state["next_batch"], f"rpt epoch {epoch}"
                ):
                    run.update_step(batches, epoch, index)
                    if ranks.any(stop_request.requested):  # every rank stops after the same batch
                        run.save_state()
                        raise TrainingInterrupted(
                            f"RPT interrupted at epoch {epoch}, batch {index + 1}/{batches_per_epoch}; state saved to {state_path}. Resume with: {resume_command}"
                        )
                run.end_epoch(epoch, time.perf_counter() - epoch_start)
    finally:
        collector.shutdown()
        run.tracker.close()
    return run.summary()


def train_rpt_with_test(
    *,
    policy: nn.Module,
    data,
    max_len: int,
    eval_cfg: EvalConfig,
    device: torch.device,
    item_context: ItemContext | None = None,
    **train_kwargs,
) -> dict:
    """``train_rpt`` plus the test split before and after: ``{"before", "after", "rpt"}``, each
    side ``{"valid", "test"}`` metrics. Validation comes from the RPT summary (the start and the
    kept weights, evaluated there with the fixed evaluation seed), so it is not computed twice;
    test is never looked at inside RPT, only here."""
    if not (train_kwargs.get("dist_ctx") or DistContext()).is_main:  # DDP: rank 0 alone evaluates
        return {
            "rpt": train_rpt(
                policy=policy, data=data, max_len=max_len, eval_cfg=eval_cfg, device=device, item_context=item_context, **train_kwargs
            )
        }
    test_before = evaluate_policy(policy, data, "test", max_len, eval_cfg, device, context=item_context)
    summary = train_rpt(
        policy=policy, data=data, max_len=max_len, eval_cfg=eval_cfg, device=device, item_context=item_context, **train_kwargs
    )
    test_after = evaluate_policy(policy, data, "test", max_len, eval_cfg, device, context=item_context)
    return {
        "before": {"valid": summary["valid_start"], "test": test_before},
        "after": {"valid": summary["valid"], "test": test_after},
        "rpt": summary,
    }
