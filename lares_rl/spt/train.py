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
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lares_rl.catalog.sampled_softmax import SampledSoftmax
from lares_rl.core.checkpoint import load_checkpoint, save_checkpoint
from lares_rl.core.config import to_plain
from lares_rl.core.distributed import DistContext, check_world_size
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import TrainingInterrupted, capture_rng, load_training_state, restore_rng, save_training_state, stop_on_sigint
from lares_rl.core.runtime import EarlyStopping
from lares_rl.core.tracking import NullTracker, Tracker, hparams_markdown
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.spt.batches import SameTargetIndex, epoch_order, training_rows
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.distributed import SPTStep, rec_scale
from lares_rl.spt.losses import total_loss

# ----------------------------------------------------------------------------- loss primitives


# What a run saved before an ``spt`` key existed did in its place: such a run resumes only with that value.
SETTINGS_BEFORE_RECORDED = {
    "shared_anchor": False,
    "positive_gradient": True,
    "negatives": "full",
    "num_negatives": 1024,
    "negative_proposal": "popularity",
    "logq_correction": True,
    "alignment_negatives": "gathered",
}


def check_resume_settings(saved: Mapping, settings: Mapping, run_dir: Path) -> None:
    """Refuse to resume an SPT run with other settings (they would be half applied: Adam's saved
    lr and early stopping's patience win, another batch size re-cuts the saved epoch order).
    Only ``spt.epochs`` may change, to extend a run that hit its cap. States saved before the
    settings were recorded cannot be checked and resume with a warning."""
    if "settings" not in saved:
        print(f"[spt] warning: {run_dir} was saved without its settings; resuming without checking that they match", flush=True)
        return
    before = {**saved["settings"], "spt": {**SETTINGS_BEFORE_RECORDED, **saved["settings"]["spt"], "epochs": settings["spt"]["epochs"]}}
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


def reduced_terms(ctx: DistContext, terms: Mapping[str, torch.Tensor], loss: torch.Tensor) -> dict[str, float]:
    """The step's loss terms and diagnostics as floats, averaged over ranks (one all-reduce):
    with equal slices and the L_rec scaling this is the loss of the whole global batch."""
    names = list(terms)
    values = torch.stack([terms[n].detach().float().reshape(()).to(loss.device) for n in names] + [loss.detach().float()])
    reduced = ctx.mean(values.to(ctx.collective_device())).tolist()
    return dict(zip(names, reduced[:-1])) | {"loss_total": reduced[-1]}


# ----------------------------------------------------------------------------- the algorithm


def check_global_batch(cfg: SPTConfig, ctx: DistContext) -> None:
    """Under torchrun ``spt.batch_size`` is the global batch, cut into one equal slice per process;
    checked before any collective, so a bad value is one error instead of a hang."""
    if ctx.active and cfg.batch_size % ctx.world_size:
        raise LaresError(
            f"spt.batch_size={cfg.batch_size} is the global batch and must be divisible by the number of processes ({ctx.world_size}); use a multiple of {ctx.world_size}, e.g. spt.batch_size={cfg.batch_size - cfg.batch_size % ctx.world_size or ctx.world_size}"
        )


def read_spt_state(state_path: Path, settings: Mapping, ctx: DistContext, run_dir: Path) -> dict:
    """The saved SPT training state, refused when it was saved with other settings or under
    another world size (:func:`check_resume_settings`, :func:`check_world_size`)."""
    saved = load_training_state(state_path)
    check_resume_settings(saved, settings, run_dir)
    check_world_size(saved, ctx, run_dir)
    return saved


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


class SPTRun:
    """One SPT run's moving parts and its steps: the restored state, one gradient step per batch
    with its logging, the validation that ends each epoch, the saved state and the summary.
    :func:`train_spt` builds it and drives the loop. Under DDP (``ctx``) rank 0 alone validates,
    decides and writes; the others follow its broadcast decisions."""

    def __init__(
        self,
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
        rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        positives: SameTargetIndex,
        ctx: DistContext,
    ) -> None:
        self.policy, self.policy_config, self.data, self.max_len, self.cfg = policy, policy_config, data, max_len, cfg
        self.eval_cfg, self.device, self.seed, self.config, self.ctx = eval_cfg, device, seed, config, ctx
        self.seqs, self.lengths, self.targets = rows
        self.positives = positives
        self.samples_per_epoch = int((self.targets > 0).sum())
        self.generator = torch.Generator().manual_seed(seed)  # epoch orders and positives, the same on every rank
        # distributed: one draw of k' (and of the SLA step) per global batch, the same on every rank
        self.step_generator = torch.Generator().manual_seed(seed + 1) if ctx.active else None
        self.generators = (self.generator,) if self.step_generator is None else (self.generator, self.step_generator)
        policy.to(device)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.stopper = EarlyStopping(cfg.patience)
        self.best_path, self.state_path = run_dir / "checkpoints" / "spt_best.pt", run_dir / "checkpoints" / "spt_last.pt"
        self.state = {"epoch": 0, "next_batch": 0, "perm": None, "seen_rows": 0, "step": 0, "epoch_seconds": [], "finished": False}
        self.settings = {
            "spt": asdict(cfg),
            "policy_config": to_plain(policy_config),
            "data_fingerprint": data.fingerprint,
            "max_len": max_len,
            "seed": seed,
        }
        self.min_slice = 2 if not ctx.active or cfg.alignment_negatives == "per_rank" else 1  # InfoNCE needs a negative
        self.step: nn.Module  # the SPT step module, built by begin() after the restore
        self.tracker: Tracker | NullTracker = NullTracker()

    # --- start
    def begin(self, saved: Mapping | None, run_dir: Path, softmax: SampledSoftmax | None) -> None:
        """The saved state restored on every rank (a fresh DDP run instead seeds each rank's own
        global stream: dropout and T0 noise), then the step module."""
        if saved is not None:
            self.restore(saved, run_dir)
        elif self.ctx.active:
            torch.manual_seed(self.seed + self.ctx.rank)
        self.step = build_step(self.policy, self.cfg, self.ctx, self.device, self.step_generator, softmax)

    def restore(self, saved: Mapping, run_dir: Path) -> None:
        """Continue from ``saved``: weights, Adam, early stopping, this rank's RNG streams and the
        progress (the epoch order and the next batch, so a cut epoch goes on where it stopped)."""
        self.policy.load_state_dict(saved["policy_state"])
        self.optimizer.load_state_dict(saved["optimizer_state"])
        self.stopper.load_state_dict(saved["stopper"])
        restore_rng(saved["rank_rng"][self.ctx.rank] if self.ctx.active else saved["rng"], *self.generators)
        self.state = saved["progress"]
        if self.ctx.is_main:
            print(f"[spt] resuming {run_dir} at epoch {self.state['epoch']}, batch {self.state['next_batch']}", flush=True)

    def open_tracker(self, run_dir: Path, progress: bool, resumed: bool) -> None:
        """Rank 0 only; a resumed run purges what it logged after the saved state (a crash mid-epoch)."""
        if not self.ctx.is_main:
            return
        self.tracker = Tracker(run_dir / "tb" / "spt", "spt", progress, purge_step=self.state["seen_rows"] + 1 if resumed else None)
        if not resumed:
            self.tracker.log_text("hparams", hparams_markdown(self.config))

    def save_state(self) -> None:
        """Every rank's RNG streams are gathered (their dropout and T0 noise differ); rank 0 writes."""
        ctx = self.ctx
        rank_rng = ctx.gather_objects(capture_rng(*self.generators))
        state = {
            "policy_state": self.policy.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "stopper": self.stopper.state_dict(),
            "rng": capture_rng(*self.generators),
            "progress": self.state,
            "settings": self.settings,
            "world_size": ctx.world_size,
            "distributed": ctx.active,
        }
        ctx.on_main(lambda: save_training_state(self.state_path, {**state, "rank_rng": rank_rng} if ctx.active else state))

    # --- one epoch, one batch
    def begin_epoch(self) -> tuple[float, tuple[torch.Tensor, ...]]:
        """Train mode, the epoch's start time and its batches: consecutive ``spt.batch_size`` chunks
        of the epoch order, which is saved, so a run resumed mid-epoch walks the same order."""
        self.policy.train()
        start = time.perf_counter()
        if self.state["perm"] is None:
            self.state["perm"] = epoch_order(self.lengths, self.cfg.batch_size, self.cfg.bucket_by_length, self.generator)
        return start, self.state["perm"].split(self.cfg.batch_size)

    def update_step(self, batches: tuple[torch.Tensor, ...], index: int) -> None:
        """One gradient step on global batch ``index`` (this rank trains on its slice). A batch too
        small for in-batch negatives (an epoch's last) is skipped, on every rank alike."""
        rows = batches[index]
        local = self.ctx.shard(rows)
        if len(rows) >= 2 and len(local) >= self.min_slice:
            used = rows[: len(local) * self.ctx.world_size]  # every rank's slice together
            terms = self.loss_terms(rows, local, used)
            loss = self.checked_loss(terms)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.state["seen_rows"] += int((self.targets[used] > 0).sum())
            self.state["step"] += 1
            self.log_step(terms, loss)
        self.state["next_batch"] = index + 1

    def loss_terms(self, rows: torch.Tensor, local: torch.Tensor, used: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """The step's loss terms on this rank's ``local`` rows, their positives drawn for the whole
        global batch ``rows`` (the same draws on every rank), L_rec scaled to the global batch."""

        seqs, lengths, targets, device = self.seqs, self.lengths, self.targets, self.device
        pos_rows = self.ctx.shard(self.positives.sample(rows, self.generator))
        batch = (seqs[local].to(device), lengths[local].to(device), targets[local].to(device))
        return self.step(
            batch, (seqs[pos_rows].to(device), lengths[pos_rows].to(device)), rec_scale(targets[used], targets[local], self.ctx.world_size)
        )

    def checked_loss(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L_SPT (:func:`total_loss`). Under DDP a non-finite term on one rank stops every rank
        before the update (the others would wait in the gradient all-reduce)."""
        step = self.state["step"]
        if self.ctx.active and self.ctx.any(not all(torch.isfinite(v).all() for n, v in terms.items() if n.startswith("loss_"))):
            total_loss(terms, step)  # the rank with the bad term names it; the others stop too, not wait
            raise LaresError(
                f"another rank hit a non-finite loss at step {step}; training stopped. The last good state (checkpoints/spt_last.pt, spt_best.pt) is kept; lower spt.lr or check the data"
            )
        return total_loss(terms, step)

    def log_step(self, terms: Mapping[str, torch.Tensor], loss: torch.Tensor) -> None:
        """The global batch's loss terms and diagnostics, as one process would log them."""
        logged = reduced_terms(self.ctx, terms, loss)
        seen_rows = self.state["seen_rows"]
        self.tracker.log("losses", {n: v for n, v in logged.items() if n.startswith("loss_")}, seen_rows)
        self.tracker.log("diag", {n: v for n, v in logged.items() if not n.startswith("loss_")}, seen_rows)

    def save_interrupted(self, epoch_start: float) -> None:
        """Ctrl-C: keep the time the cut epoch has run so far (its speed stays per whole epoch),
        save the state and close the tracker."""
        self.state["epoch_partial_seconds"] = self.state.get("epoch_partial_seconds", 0.0) + time.perf_counter() - epoch_start
        self.save_state()
        self.tracker.close()

    # --- end of an epoch
    def end_epoch(self, epoch: int, epoch_start: float) -> None:
        """The epoch's time, validation and early stopping (decided once, on rank 0), the saved state."""
        state = self.state
        # an epoch cut by Ctrl-C counts the time before the cut too, so speed is per whole epoch
        seconds = time.perf_counter() - epoch_start + state.pop("epoch_partial_seconds", 0.0)
        state["epoch_seconds"].append(seconds)
        stopper_state, stop = self.ctx.on_main(lambda: self.validate_epoch(epoch, seconds))
        self.stopper.load_state_dict(stopper_state)
        state.update(epoch=epoch + 1, next_batch=0, perm=None, finished=stop)
        self.save_state()

    def validate_epoch(self, epoch: int, seconds: float) -> tuple[dict, bool]:
        """Rank 0: validation, the early-stopping decision and the best checkpoint."""
        stopper, tracker, seen_rows = self.stopper, self.tracker, self.state["seen_rows"]
        metrics = evaluate_policy(self.policy, self.data, "valid", self.max_len, self.eval_cfg, self.device)
        stop = stopper.step(metrics["ndcg@10"], epoch)
        tracker.log("eval", metrics, seen_rows)
        tracker.log(
            "charts",
            {"learning_rate": self.optimizer.param_groups[0]["lr"], "samples_per_sec": self.samples_per_epoch / seconds, "epoch": epoch},
            seen_rows,
        )
        tracker.log("time", {"epoch_seconds": seconds}, seen_rows)
        print(
            f"[spt] epoch {epoch:3d}  {seconds:6.1f}s  valid ndcg@10 {metrics['ndcg@10']:.4f}  recall@10 {metrics['recall@10']:.4f}"
            + ("  *" if stopper.improved else ""),
            flush=True,
        )
        if stopper.improved:
            save_checkpoint(
                self.best_path,
                policy=self.policy,
                policy_config=self.policy_config,
                data=self.data,
                max_len=self.max_len,
                dataset_name=str(self.config["dataset"]["name"]),
                phase="spt",
                epoch=epoch,
                metrics=metrics,
                config=self.config,
            )
        return stopper.state_dict(), stop

    def summary(self) -> dict:
        """Best epoch, epochs run, checkpoint and speed; on rank 0 also the best weights back into
        the policy and their validation metrics (the other ranks keep their last weights)."""
        epoch_seconds = self.state["epoch_seconds"]
        seconds_per_epoch = sum(epoch_seconds) / max(1, len(epoch_seconds))
        summary = {
            "best_epoch": self.stopper.best_epoch,
            "epochs_run": self.state["epoch"],
            "checkpoint": str(self.best_path),
            "seconds_per_epoch": seconds_per_epoch,
            "samples_per_sec": self.samples_per_epoch / seconds_per_epoch if seconds_per_epoch else 0.0,
        }
        if not self.ctx.is_main:
            return summary
        best = load_checkpoint(self.best_path)
        self.policy.load_state_dict(best["policy_state"])
        return {**summary, "valid": best["metrics"]}


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
) -> dict:
    """Train ``policy`` with L_SPT, early-stop on validation NDCG@10, keep the best checkpoint.

    The full training state is saved to ``checkpoints/spt_last.pt`` after every epoch and on
    Ctrl-C; ``resume=True`` continues from it exactly. ``resume_command`` is the command line
    printed after Ctrl-C (the CLI passes its own, overrides spelled out). Returns a summary with the best epoch, its
    validation metrics and the checkpoint path; the policy is left holding the best weights.

    ``dist_ctx`` (under torchrun): every rank walks the same epoch order (one data generator,
    seeded alike) and trains on its equal slice of each global batch of ``cfg.batch_size`` rows
    under DistributedDataParallel (spt_distributed); k' and the SLA step come from a generator all
    ranks share, dropout and T0 noise from each rank's own stream. Rank 0 alone validates, decides
    early stopping and writes state, checkpoints and TensorBoard; the others receive its decision.
    Only rank 0's policy is left holding the best weights.
    """
    ctx = dist_ctx or DistContext()
    check_global_batch(cfg, ctx)

    # --- data: every training prefix as one row (or dense windows); positives indexed once
    rows, positives = training_rows(policy, data, max_len, cfg)
    rec_softmax = cfg.rec_softmax(policy, rows[2])

    # --- model, optimiser, (when resuming) the saved state, the step module, logging
    run = SPTRun(
        policy=policy,
        policy_config=policy_config,
        data=data,
        max_len=max_len,
        cfg=cfg,
        eval_cfg=eval_cfg,
        run_dir=run_dir,
        device=device,
        seed=seed,
        config=config,
        rows=rows,
        positives=positives,
        ctx=ctx,
    )
    saved = (
        ctx.on_main(lambda: read_spt_state(run.state_path, run.settings, ctx, run_dir)) if resume else None
    )  # rank 0 reads, every rank gets the same state
    run.begin(saved, run_dir, rec_softmax)
    run.open_tracker(run_dir, progress, resumed=resume)
    resume_command = resume_command or f"lares-rl spt resume={run_dir} <the same overrides>"

    # --- loop: one pass over shuffled rows per epoch, then validation
    with stop_on_sigint() as stop_request:
        while run.state["epoch"] < cfg.epochs and not run.state["finished"]:
            epoch = run.state["epoch"]
            epoch_start, batches = run.begin_epoch()
            for index in run.tracker.bar(
                range(run.state["next_batch"], len(batches)), len(batches) - run.state["next_batch"], f"spt epoch {epoch}"
            ):
                run.update_step(batches, index)
                if ctx.any(stop_request.requested):  # every rank stops after the same batch
                    run.save_interrupted(epoch_start)
                    raise TrainingInterrupted(
                        f"SPT interrupted at epoch {epoch}, batch {index + 1}/{len(batches)}; state saved to {run.state_path}. Resume with: {resume_command}"
                    )
            run.end_epoch(epoch, epoch_start)
    run.tracker.close()
    return run.summary()
