"""SPT: self-supervised pre-training of the LARES reasoner (DESIGN section 2), top to bottom.

Per batch of training rows (history, target v*), with ``spt.shared_anchor=false`` (the reference):
    1. recommendation pass, k ~ sampler:            L_rec = CE(h @ E^T, v*)
    2. anchor pass, one k' for the batch:           h_a and every step's state h^(1..k')
    3. positive pass (same target, same k'):        h_p
    L_TLA = (l(h_a, h_p) + l(h_p, h_a)) / 2,  L_SLA = (l(h_a, h^(j)) + l(h^(j), h_a)) / 2 (j ~ U{1..k'}, skipped for k' = 1)
    L_SPT = L_rec + alpha L_TLA + gamma L_SLA,  l = in-batch InfoNCE.
With ``spt.shared_anchor=true`` (the default) passes 1 and 2 are one pass at k': the recommendation
pass keeps every step's state, and its last-position states are the anchor. k and k' come from
the same sampler, so each loss term still sees k drawn from it; what changes is that L_rec and the
alignment terms now share one k, one T0 draw and one dropout mask per batch, and a step costs two
passes instead of three (docs/spt_profile.md). With ``spt.positive_gradient=false`` the positive
pass runs without autograd: h_p is a stop-gradient target (as in MoCo/BYOL-style contrastive
learning), the anchor still receives both directions of L_TLA, and a step saves the positive
pass's backward, about a quarter of its cost.
SASRec (a policy without a core block) has one state, so it trains on L_rec alone.

The loop (:func:`train_spt`, at the bottom) reads top to bottom; the run's bookkeeping (resume,
saved state, best checkpoint, early stopping, TensorBoard, DDP decisions) is
:class:`lares_rl.core.run_state.RunState`'s, the step module and its DDP scaling are in
lares_rl/spt/distributed.py, the loss terms in lares_rl/spt/losses.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lares_rl.catalog.sampled_softmax import SampledSoftmax
from lares_rl.core.config import to_plain
from lares_rl.core.distributed import DistContext, check_world_size
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import stop_on_sigint
from lares_rl.core.run_state import BestCheckpoint, Progress, RunState, read_saved_state
from lares_rl.core.runtime import EarlyStopping
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.policies.reasoner import OPTIONS_ADDED_LATER
from lares_rl.spt.batches import SameTargetIndex, epoch_order, training_rows
from lares_rl.spt.closed_form import fit_closed_form, has_nothing_to_train
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.distributed import SPTStep, rec_scale
from lares_rl.spt.losses import total_loss

# ----------------------------------------------------------------------------- resume checks


# What a run saved before an ``spt`` key existed did in its place: such a run resumes only with that value.
SETTINGS_BEFORE_RECORDED = {
    "shared_anchor": False,
    "positive_gradient": True,
    "negatives": "full",
    "num_negatives": 1024,
    "negative_proposal": "popularity",
    "logq_correction": True,
    "alignment_negatives": "gathered",
    "catalog_loss": "auto",  # they ran the full loss: what auto runs below 2,048 items, and the fused one equals to float rounding
}


def with_later_options(saved: Mapping, current: Mapping) -> dict:
    """``saved`` policy config with the options it predates filled in as they ran
    (:data:`lares_rl.policies.reasoner.OPTIONS_ADDED_LATER`), where the current config names them."""
    return {**{key: value for key, value in OPTIONS_ADDED_LATER.items() if key in current}, **saved}


def check_resume_settings(saved: Mapping, settings: Mapping, run_dir: Path) -> None:
    """Refuse to resume an SPT run with other settings (they would be half applied: Adam's saved
    lr and early stopping's patience win, another batch size re-cuts the saved epoch order).
    Only ``spt.epochs`` may change, to extend a run that hit its cap. States saved before the
    settings were recorded cannot be checked and resume with a warning."""
    if "settings" not in saved:
        print(f"[spt] warning: {run_dir} was saved without its settings; resuming without checking that they match", flush=True)
        return
    before = {
        **saved["settings"],
        "spt": {**SETTINGS_BEFORE_RECORDED, **saved["settings"]["spt"], "epochs": settings["spt"]["epochs"]},
        "policy_config": with_later_options(saved["settings"]["policy_config"], settings["policy_config"]),
    }
    changed = [
        f"spt.{key}={before['spt'].get(key)} (not {settings['spt'][key]})"
        for key in settings["spt"]
        if before["spt"].get(key) != settings["spt"][key]
    ]
    labels = {"data_fingerprint": "the data (dataset file or settings)", "policy_config": "policy"}
    changed += [label for key, label in labels.items() if before.get(key) != settings[key]]
    changed += [
        f"{label}={before.get(key)} (not {settings[key]})"
        for key, label in {"max_len": "dataset.max_len", "seed": "seed"}.items()
        if before.get(key) != settings[key]
    ]
    if changed:
        raise LaresError(
            f"cannot resume {run_dir}: the settings differ from the interrupted run; pass the saved ones: {', '.join(changed)} (only spt.epochs may change)"
        )


def check_spt_state(saved: Mapping, settings: Mapping, ctx: DistContext, run_dir: Path) -> None:
    """A saved SPT training state is refused when it was saved with other settings or under another
    world size (:func:`check_resume_settings`, :func:`check_world_size`)."""
    check_resume_settings(saved, settings, run_dir)
    check_world_size(saved, ctx, run_dir)


# ----------------------------------------------------------------------------- progress and the learner


@dataclass
class SPTProgress(Progress):
    """Where an SPT run stands (saved under ``progress`` in checkpoints/spt_last.pt)."""

    perm: torch.Tensor | None = None  # the current epoch's row order, saved so a run cut mid-epoch walks the same order
    seen_rows: int = 0  # supervised targets trained on: the x-axis of every SPT chart
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_partial_seconds: float = 0.0  # how long the current epoch ran before a Ctrl-C (its speed stays per whole epoch)
    # the process's CPU time per epoch (all its threads): what the epoch cost in core-seconds, which
    # wall time overstates when the run shared its cores or was paused (SIGSTOP stops this clock)
    epoch_cpu_seconds: list[float] = field(default_factory=list)
    epoch_partial_cpu_seconds: float = 0.0

    X_AXIS: ClassVar[str] = "seen_rows"
    # what an older saved state may lack: the partial seconds (written only after a Ctrl-C before the
    # run-state core) and the CPU clock (added later; those epochs count at the clocked ones' median)
    OPTIONAL: ClassVar[tuple[str, ...]] = ("epoch_partial_seconds", "epoch_cpu_seconds", "epoch_partial_cpu_seconds")

    def next_epoch(self, stop: bool) -> None:
        super().next_epoch(stop)
        self.perm, self.epoch_partial_seconds, self.epoch_partial_cpu_seconds = None, 0.0, 0.0


def reduced_terms(ctx: DistContext, terms: Mapping[str, torch.Tensor], loss: torch.Tensor) -> dict[str, float]:
    """The step's loss terms and diagnostics as floats, averaged over ranks (one all-reduce):
    with equal slices and the L_rec scaling this is the loss of the whole global batch."""
    names = list(terms)
    values = torch.stack([terms[n].detach().float().reshape(()).to(loss.device) for n in names] + [loss.detach().float()])
    reduced = ctx.mean(values.to(ctx.collective_device())).tolist()
    return dict(zip(names, reduced[:-1])) | {"loss_total": reduced[-1]}


def check_global_batch(cfg: SPTConfig, ctx: DistContext) -> None:
    """Under torchrun ``spt.batch_size`` is the global batch, cut into one equal slice per process;
    checked before any collective, so a bad value is one error instead of a hang."""
    if ctx.active and cfg.batch_size % ctx.world_size:
        raise LaresError(
            f"spt.batch_size={cfg.batch_size} is the global batch and must be divisible by the number of processes ({ctx.world_size}); use a multiple of {ctx.world_size}, e.g. spt.batch_size={cfg.batch_size - cfg.batch_size % ctx.world_size or ctx.world_size}"
        )


def build_step(
    policy: nn.Module,
    cfg: SPTConfig,
    ctx: DistContext,
    device: torch.device,
    generator: torch.Generator | None,
    softmax: SampledSoftmax | None,
) -> nn.Module:
    """The SPT step as one module (:class:`lares_rl.spt.distributed.SPTStep`); under torchrun
    wrapped in DistributedDataParallel, which synchronises the gradients of all its passes."""

    step = SPTStep(policy, cfg, gathered=ctx.active and cfg.alignment_negatives == "gathered", generator=generator, softmax=softmax)
    if not ctx.active:
        return step

    return DistributedDataParallel(step, device_ids=[device] if device.type == "cuda" else None)


@dataclass
class SPTLearner:
    """What an SPT gradient step needs: the training rows, the positives' index, the data generator
    (epoch orders and positives, the same on every rank), the optimiser and the step module."""

    policy: nn.Module
    seqs: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    positives: SameTargetIndex
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    step: nn.Module  # SPTStep, wrapped in DistributedDataParallel under torchrun
    ctx: DistContext
    device: torch.device
    min_slice: int  # the smallest slice a rank trains on: InfoNCE needs a negative

    @property
    def samples_per_epoch(self) -> int:
        return int((self.targets > 0).sum())

    def epoch_batches(self, progress: SPTProgress, cfg: SPTConfig) -> tuple[torch.Tensor, ...]:
        """Train mode and the epoch's batches: consecutive ``spt.batch_size`` chunks of the epoch
        order, drawn when the epoch starts and saved, so a run resumed mid-epoch walks the same order."""
        self.policy.train()
        if progress.perm is None:
            progress.perm = epoch_order(self.lengths, cfg.batch_size, cfg.bucket_by_length, self.generator)
        return progress.perm.split(cfg.batch_size)

    def update(self, rows: torch.Tensor, progress: SPTProgress) -> dict[str, dict[str, float]] | None:
        """One gradient step on global batch ``rows``: this rank trains on its slice, the positives
        are drawn for the whole batch (the same draws on every rank), L_rec is scaled to the global
        batch. Returns the step's metrics (the global batch's, as one process would log them), or
        None for a batch too small for in-batch negatives (an epoch's last), skipped on every rank."""
        ctx, device, seqs, lengths, targets = self.ctx, self.device, self.seqs, self.lengths, self.targets
        local = ctx.shard(rows)
        if len(rows) < 2 or len(local) < self.min_slice:
            return None
        used = rows[: len(local) * ctx.world_size]  # every rank's slice together
        pos_rows = ctx.shard(self.positives.sample(rows, self.generator))
        terms = self.step(
            (seqs[local].to(device), lengths[local].to(device), targets[local].to(device)),
            (seqs[pos_rows].to(device), lengths[pos_rows].to(device)),
            rec_scale(targets[used], targets[local], ctx.world_size),
        )
        loss = checked_loss(ctx, terms, progress.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        progress.seen_rows += int((targets[used] > 0).sum())
        progress.step += 1
        logged = reduced_terms(ctx, terms, loss)
        return {
            "losses": {n: v for n, v in logged.items() if n.startswith("loss_")},
            "diag": {n: v for n, v in logged.items() if not n.startswith("loss_")},
        }


def checked_loss(ctx: DistContext, terms: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
    """L_SPT (:func:`total_loss`). Under DDP a non-finite term on one rank stops every rank before
    the update (the others would wait in the gradient all-reduce)."""
    if ctx.active and ctx.any(not all(torch.isfinite(v).all() for n, v in terms.items() if n.startswith("loss_"))):
        total_loss(terms, step)  # the rank with the bad term names it; the others stop too, not wait
        raise LaresError(
            f"another rank hit a non-finite loss at step {step}; training stopped. The last good state (checkpoints/spt_last.pt, spt_best.pt) is kept; lower spt.lr or check the data"
        )
    return total_loss(terms, step)


# ----------------------------------------------------------------------------- the run


def build_spt(
    *,
    policy: nn.Module,
    policy_config: Mapping,
    data,
    max_len: int,
    cfg: SPTConfig,
    run_dir: Path,
    device: torch.device,
    seed: int,
    config: Mapping,
    resume: bool,
    ctx: DistContext,
    tb_dir: Path | None = None,
) -> tuple[RunState, SPTLearner]:
    """The run state and the learner: every training prefix as one row (or dense windows) and the
    positives' index, the random streams, Adam, then (when resuming) the saved state, read on rank 0
    and restored on every rank (a fresh DDP run instead seeds each rank's own global stream: dropout
    and T0 noise), then the step module."""
    (seqs, lengths, targets), positives = training_rows(policy, data, max_len, cfg)
    rec_softmax = cfg.rec_softmax(policy, targets)
    generator = torch.Generator().manual_seed(seed)
    # distributed: one draw of k' (and of the SLA step) per global batch, the same on every rank
    step_generator = torch.Generator().manual_seed(seed + 1) if ctx.active else None
    policy.to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    settings = {
        "spt": asdict(cfg),
        "policy_config": to_plain(policy_config),
        "data_fingerprint": data.fingerprint,
        "max_len": max_len,
        "seed": seed,
    }
    dataset_name = str(config.get("dataset", {}).get("name", data.name))
    run = RunState(
        phase="spt",
        run_dir=run_dir,
        ctx=ctx,
        progress=SPTProgress(),
        stopper=EarlyStopping(cfg.patience),
        best=BestCheckpoint(run_dir / "checkpoints" / "spt_best.pt", "spt", policy_config, data, max_len, dataset_name, config),
        stateful={"policy_state": policy, "optimizer_state": optimizer},
        generators=(generator,) if step_generator is None else (generator, step_generator),
        extra_state=lambda: {"settings": settings},
        tb_dir=tb_dir,
    )
    if resume:
        check = partial(check_spt_state, settings=settings, ctx=ctx, run_dir=run_dir)
        run.restore(ctx.on_main(lambda: read_saved_state(run.state_path, SPTProgress, check)))  # rank 0 reads, every rank restores
    elif ctx.active:
        torch.manual_seed(seed + ctx.rank)
    step = build_step(policy, cfg, ctx, device, step_generator, rec_softmax)
    min_slice = 2 if not ctx.active or cfg.alignment_negatives == "per_rank" else 1
    return run, SPTLearner(policy, seqs, lengths, targets, positives, generator, optimizer, step, ctx, device, min_slice)


def validate_epoch(run: RunState, learner: SPTLearner, data, max_len: int, eval_cfg: EvalConfig, epoch: int, seconds: float) -> bool:
    """Rank 0: validation, the early-stopping decision (True: stop) and the best checkpoint."""
    metrics = evaluate_policy(learner.policy, data, "valid", max_len, eval_cfg, learner.device)
    stop = run.judge(epoch, metrics, metrics["ndcg@10"], learner.policy)
    run.log(
        {
            "charts": {
                "learning_rate": learner.optimizer.param_groups[0]["lr"],
                "samples_per_sec": learner.samples_per_epoch / seconds,
                "epoch": epoch,
            },
            "time": {"epoch_seconds": seconds},
        }
    )
    print(
        f"[spt] epoch {epoch:3d}  {seconds:6.1f}s  valid ndcg@10 {metrics['ndcg@10']:.4f}  recall@10 {metrics['recall@10']:.4f}"
        + ("  *" if run.stopper.improved else ""),
        flush=True,
    )
    return stop


def summary(run: RunState, learner: SPTLearner) -> dict:
    """Best epoch, epochs run, checkpoint and speed; on rank 0 also the best weights back into the
    policy and their validation metrics (the other ranks keep their last weights)."""
    epoch_seconds, epoch_cpu = run.progress.epoch_seconds, run.progress.epoch_cpu_seconds
    seconds_per_epoch = sum(epoch_seconds) / max(1, len(epoch_seconds))
    result = {
        **run.summary(),
        "checkpoint": str(run.best.path),
        "seconds_per_epoch": seconds_per_epoch,
        # the median epoch with a CPU clock: states saved before it existed have none for their epochs
        # (an epoch cut before the clock and resumed after it is not counted: its clock saw a part)
        "cpu_seconds_per_epoch": statistics.median(epoch_cpu) if epoch_cpu else None,
        "samples_per_sec": learner.samples_per_epoch / seconds_per_epoch if seconds_per_epoch else 0.0,
    }
    if not run.ctx.is_main:
        return result
    return {**result, "valid": run.load_best(learner.policy)["metrics"]}


def train_spt(
    *,
    policy: nn.Module,
    policy_config: Mapping,
    data,
    max_len: int,
    cfg: SPTConfig,
    eval_cfg: EvalConfig,
    run_dir: Path,
    device: torch.device,
    seed: int,
    config: Mapping,
    progress: bool = True,
    resume: bool = False,
    resume_command: str | None = None,
    dist_ctx: DistContext | None = None,
    tb_dir: Path | None = None,
) -> dict:
    """Train ``policy`` with L_SPT, early-stop on validation NDCG@10, keep the best checkpoint.

    The full training state is saved to ``checkpoints/spt_last.pt`` after every epoch and on
    Ctrl-C; ``resume=True`` continues from it exactly. ``resume_command`` is the command line
    printed after Ctrl-C (the CLI passes its own, overrides spelled out). Returns a summary with the best epoch, its
    validation metrics and the checkpoint path; the policy is left holding the best weights.
    TensorBoard events go to ``tb_dir`` (default ``<run_dir>/tb/spt``).

    ``dist_ctx`` (under torchrun): every rank walks the same epoch order (one data generator,
    seeded alike) and trains on its equal slice of each global batch of ``cfg.batch_size`` rows
    under DistributedDataParallel (spt_distributed); k' and the SLA step come from a generator all
    ranks share, dropout and T0 noise from each rank's own stream. Rank 0 alone validates, decides
    early stopping and writes state, checkpoints and TensorBoard; the others receive its decision.
    Only rank 0's policy is left holding the best weights.
    """
    ctx = dist_ctx or DistContext()
    check_global_batch(cfg, ctx)
    if has_nothing_to_train(policy):
        closed_form = dict(policy_config=policy_config, data=data, max_len=max_len, eval_cfg=eval_cfg, run_dir=run_dir, device=device)
        return fit_closed_form(policy=policy, config=config, ctx=ctx, **closed_form)
    run, learner = build_spt(
        policy=policy,
        policy_config=policy_config,
        data=data,
        max_len=max_len,
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        seed=seed,
        config=config,
        resume=resume,
        ctx=ctx,
        tb_dir=tb_dir,
    )
    run.open_tracker(progress, resumed=resume, config=config)
    resume_command = resume_command or f"lares-rl spt resume={run_dir} <the same overrides>"

    # --- loop: one pass over the epoch order per epoch, a gradient step per global batch, then validation
    try:
        with stop_on_sigint() as stop_request:
            while run.training(cfg.epochs):
                epoch, epoch_start, epoch_cpu_start = run.progress.epoch, time.perf_counter(), time.process_time()
                batches = learner.epoch_batches(run.progress, cfg)
                for index in run.batches(len(batches), f"spt epoch {epoch}"):
                    metrics = learner.update(batches[index], run.progress)
                    if metrics is not None:
                        run.log(metrics)
                    run.progress.next_batch = index + 1
                    if ctx.any(stop_request.requested):  # every rank stops after the same batch
                        run.progress.epoch_partial_seconds += time.perf_counter() - epoch_start
                        run.progress.epoch_partial_cpu_seconds += time.process_time() - epoch_cpu_start
                        run.save_and_stop(
                            f"SPT interrupted at epoch {epoch}, batch {index + 1}/{len(batches)}; state saved to {run.state_path}. Resume with: {resume_command}"
                        )
                # a cut epoch counts its time before the cut too, so speed is per whole epoch
                seconds = time.perf_counter() - epoch_start + run.progress.epoch_partial_seconds
                run.progress.epoch_seconds.append(seconds)
                if not (run.progress.epoch_partial_seconds and not run.progress.epoch_partial_cpu_seconds):  # else cut before the clock
                    run.progress.epoch_cpu_seconds.append(time.process_time() - epoch_cpu_start + run.progress.epoch_partial_cpu_seconds)
                run.end_epoch(lambda: validate_epoch(run, learner, data, max_len, eval_cfg, epoch, seconds))
    finally:
        run.tracker.close()
    return summary(run, learner)
