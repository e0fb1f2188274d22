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
    epoch:      one pass over the kept rows (or an interval of rpt.batches_per_epoch batches; the logs
                say which: RPTConfig.epoch_unit), then validation NDCG@10, early stopping, best checkpoint
    best:       the SPT weights are candidate epoch -1, so rpt_best.pt is never worse on validation than the start
    state:      checkpoints/rpt_last.pt at the start, after every epoch and on Ctrl-C; resume=True continues exactly
Each ``rpt.algorithm`` is one module of lares_rl/rpt/algorithms/ holding its loss and what it
computes before the loss: ``grpo`` (the reference above), ``ppo`` (TorchRL's ClipPPOLoss over an
item-sampling actor, Plackett-Luce or categorical slates, with the group advantage or a learned
value head), ``latent_pg`` (a policy gradient over a Gaussian latent action, because the reference
update does not follow the reward) and ``expected_pg`` (the project default: the exact
expected-reward gradient of the item softmax, which needs no sampling). The learner (actor,
reference, algorithm, optimiser, one update) is built by lares_rl/rpt/learner.py, everything before
the loop by lares_rl/rpt/setup.py; the run's bookkeeping (saved state, best checkpoint, early
stopping, TensorBoard, DDP decisions) is :class:`lares_rl.core.run_state.RunState`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDictBase
from torch import nn

from lares_rl.core.distributed import DistContext
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import stop_on_sigint
from lares_rl.core.run_state import RunState
from lares_rl.core.tracking import log_test_metrics, tensorboard_dir
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.rewards.context import ItemContext
from lares_rl.rpt.collectors import sync_weights
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.distributed import check_world, global_rows, mean_scalars
from lares_rl.rpt.episodes import decisions, frames_in
from lares_rl.rpt.learner import RPTLearner
from lares_rl.rpt.probe import check_learning_signal, probe_metrics, term_grad_norms
from lares_rl.rpt.setup import RPTParts, RPTProgress, build_rpt

# ----------------------------------------------------------------------------- the start


def start(run: RunState, rpt: RPTParts) -> tuple[RPTProgress, dict]:
    """A fresh run: the SPT weights are the first candidate, so rpt_best.pt never ends up worse on
    validation than the model RPT started from, and an RPT epoch counts as progress only if it
    beats it. Then the greedy training reward and the fixed probe before any update. Runs on
    rank 0; returns the progress and early stopping for the other ranks."""
    cfg = rpt.cfg
    valid_start = rpt.validate()
    run.stopper.best = cfg.selection_score(valid_start, valid_start)
    run.best.save(rpt.served, -1, valid_start)
    print(
        f"[rpt] start (the SPT weights): valid ndcg@10 {valid_start['ndcg@10']:.4f}  recall@10 {valid_start['recall@10']:.4f}"
        f"; validated again after every {rpt.epoch_unit['description']}",
        flush=True,
    )
    progress = RPTProgress(reward_before=rpt.greedy_train_reward(), valid_start=valid_start)
    start_probe = probe_metrics(rpt.served, rpt.learner.reference, rpt.probe, rpt.reward_fn, cfg.slate_size, rpt.device, rpt.eval_cfg.seed)
    check_learning_signal(start_probe.pop("rewards"), rpt.reward_name)
    progress.probe_curve.append({"histories": 0, **start_probe})
    print(
        f"[rpt] probe ({len(rpt.probe[2])} fixed training histories): reward {start_probe['reward']:.4f}  mean target rank {start_probe['target_rank']:.1f}",
        flush=True,
    )
    return progress, run.stopper.state_dict()


def begin(run: RunState, rpt: RPTParts, saved: Mapping | None) -> None:
    """The start on rank 0, broadcast (every rank then holds the same progress and early
    stopping), or the saved state restored on every rank. Called after the Collector is built, so
    nothing it does at start-up shifts a restored stream."""
    if saved is None:
        run.progress, stopper_state = run.ctx.on_main(lambda: start(run, rpt))
        run.stopper.load_state_dict(stopper_state)
        return
    if saved["progress"].valid_start is None:  # states saved before the start became a candidate
        saved["progress"].valid_start = rpt.validate()
    run.restore(saved, batches_per_epoch=rpt.batches_per_epoch)


def open_tracker(run: RunState, rpt: RPTParts, show_progress: bool, resumed: bool, config: Mapping) -> None:
    """RPT's TensorBoard events (their own directory, so a resumed RPT purges what it logged after
    the saved state without touching SPT's); a fresh run logs the filter and the start's probe."""
    run.open_tracker(show_progress, resumed, config)
    if not resumed:
        kept = len(rpt.kept)
        start_probe = {n: v for n, v in run.progress.probe_curve[0].items() if n != "histories"}
        run.log(
            {
                "charts": {"kept_fraction": kept / max(rpt.rows, 1), "kept_rows": kept},
                "time": {"filter": rpt.filter_seconds},
                "probe": start_probe,
            },
            0,
        )


def last_good(run: RunState) -> str:
    """What a failure leaves behind: the last saved state and the best checkpoint."""
    epoch, next_batch = run.last_saved
    if next_batch:
        where = f"epoch {epoch} up to batch {next_batch}"
    else:
        where = f"after epoch {epoch - 1}" if epoch else "the start of RPT"
    best_epoch = run.stopper.best_epoch
    best = f" and {run.best.path} ({f'best epoch {best_epoch}' if best_epoch >= 0 else 'the SPT start'})" if run.best.path.is_file() else ""
    return f"The last good state is kept: {run.state_path} ({where}){best}"


# ----------------------------------------------------------------------------- one batch


def collect(batches: Iterator[TensorDictBase], device: torch.device, where: str, kept: str) -> TensorDictBase:
    """The next collected batch as decisions on the learner's device (:func:`decisions`)."""
    try:
        return decisions(next(batches)).to(device)  # [B, H] -> [H * B]; groups stay contiguous
    except LaresError as err:  # a reward that broke its contract mid-run
        raise LaresError(f"{err} (RPT {where}); training stopped before this update. {kept}") from None


def group_diagnostics(rows: Mapping[str, torch.Tensor], group_size: int, progress: RPTProgress) -> dict[str, float]:
    """How much signal the batch's groups carried (the share with identical rewards, the advantage
    and within-group reward spread), from the batch's per-row ``reward``, ``zero_adv`` and
    ``advantage``; the zero-advantage share is also kept in ``progress``. Empty with one rollout
    per history (``rpt=expected_pg``), which has no groups."""
    if group_size < 2:
        return {}
    zero_adv = rows["zero_adv"].mean().item()
    progress.zero_adv_fractions.append(zero_adv)
    return {
        "zero_adv_group_fraction": zero_adv,
        "advantage_std": rows["advantage"].std().item(),
        "group_reward_std": rows["reward"].reshape(-1, group_size).std(dim=1).mean().item(),
    }


def gradient_norms_into(norms: dict[str, float], learner: RPTLearner) -> Callable[[Mapping[str, torch.Tensor]], None]:
    """For a probed batch: each loss term's gradient norm (``diag/grad_norm_*``) into ``norms``, taken
    from the first gradient step's terms before its backward."""
    return lambda terms: norms.update(term_grad_norms(terms, list(learner.loss_module.parameters())))


def batch_metrics(
    run: RunState,
    rpt: RPTParts,
    batch: TensorDictBase,
    terms: Mapping[str, torch.Tensor],
    loss: torch.Tensor,
    seconds: tuple[float, float, float],
    probe_now: bool,
) -> dict[str, dict]:
    """The batch counted into the progress, and its metrics (x axis: histories seen): losses,
    diagnostics, the fixed probe (every ``rpt.probe_every`` batches), charts and timings. Under
    DDP the loss terms are averaged over ranks and the batch statistics are the global batch's."""
    cfg, progress, ranks = rpt.cfg, run.progress, run.ctx
    collect_s, prepare_s, update_s = seconds
    frames = batch.numel() * ranks.world_size  # the global batch's
    progress.histories_seen += frames_in(batch, cfg.group_size) * ranks.world_size
    progress.collect_seconds += collect_s
    progress.prepare_seconds += prepare_s
    progress.update_seconds += update_s
    progress.loop_seconds += collect_s + prepare_s + update_s
    progress.frames += frames
    grouped = {"zero_adv": batch["group_zero_adv"], "advantage": batch["advantage"]} if cfg.group_size >= 2 else {}
    rows = global_rows(ranks, {"reward": batch["next", "reward"], "num_steps": batch["num_steps"], **grouped})
    reward, num_steps = rows["reward"], rows["num_steps"]
    progress.epoch_rewards.append(reward.mean().item())
    logged = mean_scalars(ranks, terms, loss)
    metrics = {
        "losses": {n: v for n, v in logged.items() if n.startswith("loss_")},
        "diag": {n: v for n, v in logged.items() if not n.startswith("loss_")} | group_diagnostics(rows, cfg.group_size, progress),
    }
    if probe_now:
        point = probe_metrics(rpt.served, rpt.learner.reference, rpt.probe, rpt.reward_fn, cfg.slate_size, rpt.device, rpt.eval_cfg.seed)
        point = {"histories": progress.histories_seen, **{n: v for n, v in point.items() if n != "rewards"}}
        progress.probe_curve.append(point)
        metrics["probe"] = {n: v for n, v in point.items() if n != "histories"}
    metrics["charts"] = {
        "reward_mean": reward.mean().item(),
        "reward_std": reward.std().item(),
        "k_mean": num_steps.mean().item(),
        "frames_per_sec": frames / collect_s,
        "loop_frames_per_sec": frames / (collect_s + prepare_s + update_s),
        "learning_rate": rpt.learner.optimizer.param_groups[0]["lr"],
        "k": num_steps,  # a histogram
    }
    metrics["time"] = {"collect": collect_s, "reference": prepare_s, "update": update_s}
    return metrics


# ----------------------------------------------------------------------------- the end of an epoch, of the run


def validate_epoch(run: RunState, rpt: RPTParts, epoch: int, seconds: float) -> bool:
    """Rank 0: validation, the early-stopping decision (True: stop) and the best checkpoint."""
    cfg, progress = rpt.cfg, run.progress
    metrics = rpt.validate()
    stop = run.judge(epoch, metrics, cfg.selection_score(metrics, progress.valid_start), rpt.served)
    progress.valid_ndcg_per_epoch.append(metrics["ndcg@10"])
    run.log({"charts": {"epoch": epoch, "epoch_reward_mean": progress.reward_per_epoch[-1]}, "time": {"epoch_seconds": seconds}})
    selected = "" if cfg.select_metric in ("ndcg@10", "recall@10") else f"  {cfg.select_metric} {metrics[cfg.select_metric]:.4f}"
    print(
        f"[rpt] {rpt.epoch_unit['name']} {epoch:3d}  {seconds:6.1f}s  train reward {progress.reward_per_epoch[-1]:.4f}  valid ndcg@10 {metrics['ndcg@10']:.4f}  recall@10 {metrics['recall@10']:.4f}{selected}"
        + ("  *" if run.stopper.improved else ""),
        flush=True,
    )
    return stop


def summary(run: RunState, rpt: RPTParts) -> dict:
    """The best weights back into the policy, and what the run did (rank 0; the other ranks
    return the counters only and keep their last weights)."""
    cfg, progress, stopper = rpt.cfg, run.progress, run.stopper
    if not run.ctx.is_main:
        return {**run.summary(), "frames": progress.frames}
    if stopper.best_epoch < 0:
        print(
            f"[rpt] no RPT epoch beat the SPT start on validation {cfg.select_metric}"
            + (f" within {cfg.select_tolerance:.0%} of its ndcg@10" if cfg.select_tolerance else "")
            + f"; {run.best.path} holds the SPT weights",
            flush=True,
        )
    best = run.load_best(rpt.policy)
    batches_done = max(progress.frames // (rpt.histories * cfg.group_size * cfg.horizon), 1)
    return {
        **run.summary(),
        "valid": best["metrics"],
        "valid_start": progress.valid_start,
        "checkpoint": str(run.best.path),
        "kept_rows": len(rpt.kept),
        "epoch_unit": rpt.epoch_unit,
        "kept_fraction": len(rpt.kept) / max(rpt.rows, 1),
        "histories_per_batch": rpt.histories,
        "reward_per_epoch": list(progress.reward_per_epoch),
        "valid_ndcg_per_epoch": list(progress.valid_ndcg_per_epoch),
        "valid_selection_per_epoch": list(stopper.history),
        "train_reward_greedy_before": progress.reward_before,
        "train_reward_greedy_after": rpt.greedy_train_reward(),
        "collect_frames_per_sec": progress.frames / progress.collect_seconds if progress.collect_seconds else 0.0,
        "loop_frames_per_sec": progress.frames / progress.loop_seconds if progress.loop_seconds else 0.0,
        # where the loop's time goes: collection, advantage + reference pass, gradient step(s)
        "seconds_per_batch": {phase: getattr(progress, f"{phase}_seconds") / batches_done for phase in ("collect", "prepare", "update")},
        "filter_seconds": rpt.filter_seconds,
        "frames": progress.frames,
        "probe_curve": list(progress.probe_curve),
        "zero_adv_group_fraction": float(np.mean(progress.zero_adv_fractions)) if progress.zero_adv_fractions else None,
    }


# ----------------------------------------------------------------------------- the loop


def rpt_loop(run: RunState, rpt: RPTParts, resume_command: str) -> dict:
    """collect -> advantage (+ reference) -> update on every batch, validation after each epoch;
    the state saved at the start, after every epoch and on Ctrl-C (after the current batch)."""
    cfg, learner, ranks, progress = rpt.cfg, rpt.learner, run.ctx, run.progress
    batches = iter(rpt.collector)
    try:
        with stop_on_sigint() as stop_request:
            run.save()  # RPT's start (after the filter); on resume this rewrites the loaded state unchanged
            while run.training(cfg.epochs):
                epoch, epoch_start, kept = progress.epoch, time.perf_counter(), last_good(run)
                for index in run.batches(rpt.batches_per_epoch, f"rpt {rpt.epoch_unit['name']} {epoch}"):
                    where = f"epoch {epoch}, batch {index + 1}/{rpt.batches_per_epoch}"
                    probe_now = (index + 1) % cfg.probe_every == 0 and ranks.is_main
                    t0 = time.perf_counter()
                    batch = collect(batches, rpt.device, where, kept)  # the next batch, with its rewards
                    t1 = time.perf_counter()
                    learner.prepare(batch)  # advantage (+ reference): what the loss reads besides the rollout
                    t2 = time.perf_counter()
                    learner.steps, grad_norms = progress.step, {}
                    on_first_terms = gradient_norms_into(grad_norms, learner) if probe_now else None
                    # loss -> backward -> optimiser step, rpt.update_epochs times
                    terms, loss = learner.update(batch, where=f"{where}, ", kept=kept, on_first_terms=on_first_terms)
                    progress.step = learner.steps
                    if rpt.averaged is not None:
                        rpt.averaged.update_parameters(rpt.policy)
                    sync_weights(rpt.collector, learner.actor)  # worker processes collect the next batch with these weights
                    t3 = time.perf_counter()
                    metrics = batch_metrics(run, rpt, batch, terms, loss, (t1 - t0, t2 - t1, t3 - t2), probe_now)
                    metrics["diag"] |= grad_norms
                    run.log(metrics)
                    progress.next_batch = index + 1
                    if ranks.any(stop_request.requested):  # every rank stops after the same batch
                        run.save_and_stop(f"RPT interrupted at {where}; state saved to {run.state_path}. Resume with: {resume_command}")
                seconds = time.perf_counter() - epoch_start
                progress.reward_per_epoch.append(sum(progress.epoch_rewards) / max(len(progress.epoch_rewards), 1))
                run.end_epoch(lambda: validate_epoch(run, rpt, epoch, seconds))  # validation and early stopping on rank 0
    finally:
        rpt.collector.shutdown()
        run.tracker.close()
    return summary(run, rpt)


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
    run, rpt, saved = build_rpt(
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
        resume=resume,
        filter_cache_dir=filter_cache_dir,
        item_context=item_context,
        ranks=ranks,
    )
    begin(run, rpt, saved)
    sync_weights(rpt.collector, rpt.learner.actor)  # worker processes start from the weights just restored, not their copy's
    open_tracker(run, rpt, progress, resumed=saved is not None, config=config)
    return rpt_loop(run, rpt, resume_command or f"lares-rl rpt resume={run_dir} checkpoint=<the same SPT checkpoint> <the same overrides>")


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
    test is never looked at inside RPT, only here. The kept weights' test metrics are also logged
    as ``rpt/test/`` scalars at RPT's last x value (histories collected)."""
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
    log_test_metrics(tensorboard_dir(train_kwargs["run_dir"], "rpt"), "rpt", test_after, summary["histories_seen"])
    return {
        "before": {"valid": summary["valid_start"], "test": test_before},
        "after": {"valid": summary["valid"], "test": test_after},
        "rpt": summary,
    }
