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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .catalog_topk import item_scorer
from .checkpoint import load_checkpoint, save_checkpoint
from .config import require, to_plain
from .distributed import DistContext, check_world_size
from .errors import LaresError
from .evaluation import EvalConfig, evaluate_policy
from .resume import TrainingInterrupted, capture_rng, load_training_state, restore_rng, save_training_state, stop_on_sigint
from .runtime import EarlyStopping
from .sampled_softmax import NEGATIVES, PROPOSALS, SampledSoftmax
from .tracking import NullTracker, Tracker, hparams_markdown


@dataclass
class SPTConfig:
    """``spt`` section; defaults are the reference's except ``shared_anchor`` (a speed-up, see the module docstring).
    configs/spt/default.yaml departs further (cosine similarity, ``positive_gradient: false``)."""

    epochs: int = 200
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    alpha: float = 0.1          # weight of trajectory-level alignment (0 = "no TLA" ablation)
    gamma: float = 0.5          # weight of step-level alignment (0 = "no SLA" ablation)
    similarity: str = "dot"     # dot | cosine
    temperature: float | None = None  # null = DESIGN's value for the similarity: 1.0 for dot, 0.07 for cosine
    patience: int = 10          # epochs without validation NDCG@10 gain before stopping
    mode: str = "rows"          # rows: one row per prefix (reference); dense: every position of a window
    dense_stride: int | None = None  # dense: supervised targets per window; null = max_len // 2
    bucket_by_length: bool = False   # batch rows of similar length together (less padding work on short-history data)
    shared_anchor: bool = True       # the recommendation pass is also the alignment anchor (2 passes a step); false = the reference's 3
    positive_gradient: bool = True   # false: the TLA positive pass runs without autograd (a stop-gradient target, no backward through it)
    negatives: str = "full"          # L_rec over: full (every item) | sampled | in_batch (lares_rl/sampled_softmax.py)
    num_negatives: int = 1024        # sampled: negatives drawn per batch
    negative_proposal: str = "popularity"  # sampled: uniform | popularity (share of the training targets)
    logq_correction: bool = True     # sampled / in_batch: subtract log Q from every candidate's logit
    alignment_negatives: str = "gathered"  # torchrun: TLA/SLA negatives from the whole global batch (gathered) or this rank's rows only (per_rank)

    def __post_init__(self) -> None:
        if self.temperature is None:
            self.temperature = 0.07 if self.similarity == "cosine" else 1.0

    def validate(self) -> None:
        require(self.epochs >= 1, "spt.epochs", f"must be >= 1, got {self.epochs}")
        require(self.batch_size >= 2, "spt.batch_size", f"must be >= 2 (in-batch negatives), got {self.batch_size}")
        require(self.lr > 0, "spt.lr", f"must be > 0, got {self.lr}")
        require(self.alpha >= 0 and self.gamma >= 0, "spt.alpha/spt.gamma", "must be >= 0")
        require(self.similarity in ("dot", "cosine"), "spt.similarity", f"must be dot or cosine, got {self.similarity!r}")
        require(self.temperature > 0, "spt.temperature", f"must be > 0, got {self.temperature}")
        require(self.patience >= 1, "spt.patience", f"must be >= 1, got {self.patience}")
        require(self.mode in ("rows", "dense"), "spt.mode", f"must be rows or dense, got {self.mode!r}")
        require(isinstance(self.bucket_by_length, bool), "spt.bucket_by_length", f"must be true or false, got {self.bucket_by_length!r}")
        require(isinstance(self.shared_anchor, bool), "spt.shared_anchor", f"must be true or false, got {self.shared_anchor!r}")
        require(isinstance(self.positive_gradient, bool), "spt.positive_gradient", f"must be true or false, got {self.positive_gradient!r}")
        require(self.negatives in NEGATIVES, "spt.negatives", f"must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        require(self.num_negatives >= 1, "spt.num_negatives", f"must be >= 1, got {self.num_negatives}")
        require(self.negative_proposal in PROPOSALS, "spt.negative_proposal", f"must be one of {', '.join(PROPOSALS)}, got {self.negative_proposal!r}")
        require(isinstance(self.logq_correction, bool), "spt.logq_correction", f"must be true or false, got {self.logq_correction!r}")

        require(self.alignment_negatives in ("gathered", "per_rank"), "spt.alignment_negatives", f"must be gathered or per_rank, got {self.alignment_negatives!r}")

    def rec_softmax(self, policy: nn.Module, train_targets: torch.Tensor) -> SampledSoftmax | None:
        """The sampled / in-batch L_rec for ``policy`` (None: the full softmax). ``train_targets``:
        every supervised target of an epoch, whose counts are the popularity proposal."""
        if self.negatives == "full":
            return None
        item_scorer(policy, "spt.negatives")
        num_items = int(policy.num_items)
        require(self.negatives != "sampled" or self.num_negatives < num_items, "spt.num_negatives",
                f"must be below the catalog size ({num_items} items), got {self.num_negatives}; lower it, or use spt.negatives=full on a catalog this small")
        counts = torch.bincount(train_targets[train_targets > 0], minlength=num_items + 1)
        return SampledSoftmax(self.negatives, counts, self.num_negatives, self.negative_proposal, self.logq_correction)


# ----------------------------------------------------------------------------- loss primitives


class SameTargetIndex:
    """Built once per data set: for a training row, draws another row with the same target
    uniformly (the row itself when it is the only one), fully vectorised."""

    def __init__(self, targets: torch.Tensor) -> None:
        self.order = torch.argsort(targets, stable=True)
        _, counts = torch.unique_consecutive(targets[self.order], return_counts=True)
        group_starts = torch.cumsum(counts, 0) - counts
        group_of_sorted = torch.repeat_interleave(torch.arange(len(counts)), counts)
        self.group_start = torch.empty_like(targets)
        self.group_count = torch.empty_like(targets)
        self.rank_in_group = torch.empty_like(targets)
        self.group_start[self.order] = group_starts[group_of_sorted]
        self.group_count[self.order] = counts[group_of_sorted]
        self.rank_in_group[self.order] = torch.arange(len(targets)) - group_starts[group_of_sorted]

    def sample(self, rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        count = self.group_count[rows]
        other = (torch.rand(len(rows), generator=generator) * (count - 1)).long()
        other = other + (other >= self.rank_in_group[rows]).long()
        positives = self.order[(self.group_start[rows] + other).clamp(max=len(self.order) - 1)]
        return torch.where(count > 1, positives, rows)


def epoch_order(lengths: torch.Tensor, batch_size: int, bucket_by_length: bool, generator: torch.Generator, pool_batches: int = 64) -> torch.Tensor:
    """The row order of one epoch; consecutive ``batch_size`` chunks are the batches.

    Plain: a uniform permutation (the reference). Bucketed: shuffle, sort each pool of
    ``pool_batches`` batches by history length, cut it into batches and shuffle the batches. Every
    row is still seen once per epoch and every batch is a random draw from its length band, but the
    encoder only runs over the longest history of each batch (``encode`` trims padding columns),
    which on short-history data (Amazon Beauty: mean 8.9 items, max_len 20) removes most of the work.
    """
    perm = torch.randperm(len(lengths), generator=generator)
    if not bucket_by_length:
        return perm
    pools = perm.split(batch_size * pool_batches)
    by_length = torch.cat([pool[torch.argsort(lengths[pool], stable=True)] for pool in pools])
    batches = by_length.split(batch_size)
    return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()])


def info_nce(x: torch.Tensor, y: torch.Tensor, similarity: str, temperature: float) -> torch.Tensor:
    """l(x, y) = CE((sim(x_i, y_j) / tau)_j, i): row i's positive is y_i, the batch is the negatives."""
    if similarity == "cosine":
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = x @ y.T / temperature
    return F.cross_entropy(logits, torch.arange(len(x), device=x.device))


def symmetric_info_nce(x: torch.Tensor, y: torch.Tensor, similarity: str, temperature: float) -> torch.Tensor:
    return (info_nce(x, y, similarity, temperature) + info_nce(y, x, similarity, temperature)) / 2


def rec_cross_entropy(policy: nn.Module, states: torch.Tensor, targets: torch.Tensor, softmax: SampledSoftmax | None) -> torch.Tensor:
    """CE of ``states`` [n, d] for ``targets`` [n]: over the whole catalog, or ``softmax``'s candidates."""
    if softmax is None:
        return F.cross_entropy(policy.scores(states), targets)
    return softmax.loss(states, targets, policy.item_scores)


def recommendation_loss(policy: nn.Module, seq: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, k: int | None = None,
                        softmax: SampledSoftmax | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L_rec and every step's state at each row's last position, [B, k, d] (k = None: sampled).
    ``softmax``: sampled / in-batch negatives instead of the full catalog (None).

    ``targets`` [B]: one row per prefix, scored at the last position. ``targets`` [B, L] (dense
    windows): every position with a non-zero target is scored in the same pass, which is exact for
    causal encoders because position i only sees items up to i; the returned states are then those
    of the window's last target, which is what the alignment terms use as the anchor."""
    if targets.dim() == 1:
        states = policy.encode(seq, lengths, k=k)
        return rec_cross_entropy(policy, states[:, -1], targets, softmax), states
    states = policy.encode(seq, lengths, k=k, all_positions=True)
    width_targets = targets[:, : states.shape[2]]
    supervised = width_targets > 0
    loss = rec_cross_entropy(policy, states[:, -1][supervised], width_targets[supervised], softmax)
    last = (lengths - 1).clamp(min=0).view(-1, 1, 1, 1).expand(-1, states.shape[1], 1, states.shape[-1])
    return loss, states.gather(2, last).squeeze(2)


def anchor_and_rec(policy: nn.Module, batch: tuple[torch.Tensor, ...], shared: bool, softmax: SampledSoftmax | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(L_rec, its k, the anchor's per-step states [B, k', d]). Shared: one pass at k' serves both;
    otherwise the reference's order (recommendation pass at its own k, then the anchor pass at k')
    so that ``shared_anchor=false`` replays the reference's random draws. ``generator`` draws the
    depths (a distributed run passes one shared by all ranks, so the global batch has one k');
    None: the global stream, as a single-process run always did."""
    seq, lengths, targets = batch
    if shared:
        k_prime = policy.sample_steps(generator)
        loss_rec, anchor_steps = recommendation_loss(policy, seq, lengths, targets, k=k_prime, softmax=softmax)
        return loss_rec, k_prime, anchor_steps
    loss_rec, rec_steps = recommendation_loss(policy, seq, lengths, targets, k=None if generator is None else policy.sample_steps(generator), softmax=softmax)
    return loss_rec, rec_steps.shape[1], policy.encode(seq, lengths, k=policy.sample_steps(generator))


def spt_loss(policy: nn.Module, batch: tuple[torch.Tensor, ...], positive: tuple[torch.Tensor, torch.Tensor], cfg: SPTConfig,
             softmax: SampledSoftmax | None = None, contrast: Callable[..., torch.Tensor] = symmetric_info_nce,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The passes of one SPT step (two with ``cfg.shared_anchor``, else three). ``loss_*`` entries
    sum to L_SPT (weights applied); ``k``, ``k_prime``, ``tla``, ``sla`` are detached diagnostics.
    The alignment terms always use each row's last position (in dense mode: the window's last
    target). The positive pass runs over its own batch, so ``encode`` trims it to the longest
    positive, not the anchor's width, and without autograd when ``cfg.positive_gradient`` is false.
    ``softmax``: L_rec over sampled / in-batch negatives (None: full).
    ``contrast`` is the symmetric InfoNCE (a distributed run swaps in one whose negatives come from
    every rank); ``generator`` draws k' and the SLA step."""
    if not policy.recurrent or (cfg.alpha == 0 and cfg.gamma == 0):
        loss_rec, states = recommendation_loss(policy, *batch, softmax=softmax)
        return {"loss_rec": loss_rec, "k": torch.tensor(float(states.shape[1]))}
    loss_rec, k, anchor_steps = anchor_and_rec(policy, batch, cfg.shared_anchor, softmax, generator)
    k_prime = anchor_steps.shape[1]
    anchor = anchor_steps[:, -1]
    out = {"loss_rec": loss_rec, "k": torch.tensor(float(k)), "k_prime": torch.tensor(float(k_prime))}
    if cfg.alpha > 0:
        pos_seq, pos_lengths = positive
        with torch.set_grad_enabled(cfg.positive_gradient and torch.is_grad_enabled()):
            positive_state = policy.encode(pos_seq, pos_lengths, k=k_prime)[:, -1]
        tla = contrast(anchor, positive_state, cfg.similarity, cfg.temperature)
        out["loss_tla"], out["tla"] = cfg.alpha * tla, tla.detach()
    if cfg.gamma > 0 and k_prime > 1:
        j = int(torch.randint(1, k_prime + 1, (), generator=generator).item())
        sla = contrast(anchor, anchor_steps[:, j - 1], cfg.similarity, cfg.temperature)
        out["loss_sla"], out["sla"] = cfg.gamma * sla, sla.detach()
    return out


# What a run saved before an ``spt`` key existed did in its place: such a run resumes only with that value.
SETTINGS_BEFORE_RECORDED = {"shared_anchor": False, "positive_gradient": True, "negatives": "full", "num_negatives": 1024, "negative_proposal": "popularity", "logq_correction": True, "alignment_negatives": "gathered"}


def check_resume_settings(saved: Mapping, settings: Mapping, run_dir: Path) -> None:
    """Refuse to resume an SPT run with other settings (they would be half applied: Adam's saved
    lr and early stopping's patience win, another batch size re-cuts the saved epoch order).
    Only ``spt.epochs`` may change, to extend a run that hit its cap. States saved before the
    settings were recorded cannot be checked and resume with a warning."""
    if "settings" not in saved:
        print(f"[spt] warning: {run_dir} was saved without its settings; resuming without checking that they match", flush=True)
        return
    before = {**saved["settings"], "spt": {**SETTINGS_BEFORE_RECORDED, **saved["settings"]["spt"], "epochs": settings["spt"]["epochs"]}}
    changed = [f"spt.{key}={before['spt'].get(key)} (not {settings['spt'][key]})" for key in settings["spt"] if before["spt"].get(key) != settings["spt"][key]]
    labels = {"data_fingerprint": "the data (dataset file or settings)", "policy_config": "policy"}
    changed += [label for key, label in labels.items() if before.get(key) != settings[key]]
    changed += [f"{label}={before.get(key)} (not {settings[key]})" for key, label in {"max_len": "dataset.max_len", "seed": "seed"}.items() if before.get(key) != settings[key]]
    if changed:
        raise LaresError(f"cannot resume {run_dir}: the settings differ from the interrupted run; pass the saved ones: {', '.join(changed)} (only spt.epochs may change)")


def total_loss(terms: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
    """Sum of the ``loss_*`` entries; a NaN/inf term stops training naming the term and step."""
    for name, value in terms.items():
        if name.startswith("loss_") and not torch.isfinite(value):
            raise LaresError(f"non-finite {name} ({value.item()}) at step {step}; training stopped. The last good state (checkpoints/spt_last.pt, spt_best.pt) is kept; lower spt.lr or check the data")
    return sum(v for name, v in terms.items() if name.startswith("loss_"))


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
        raise LaresError(f"spt.batch_size={cfg.batch_size} is the global batch and must be divisible by the number of processes ({ctx.world_size}); use a multiple of {ctx.world_size}, e.g. spt.batch_size={cfg.batch_size - cfg.batch_size % ctx.world_size or ctx.world_size}")


def training_rows(policy: nn.Module, data, max_len: int, cfg: SPTConfig) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], SameTargetIndex]:
    """(seqs, lengths, targets) of every training prefix as one row, or with ``spt.mode=dense`` of
    the windows (targets [R, L]), and the index that draws each row's positive (another row with the
    same last target), built once for the whole run."""
    if cfg.mode == "dense":
        if not policy.causal:
            raise LaresError(f"spt.mode=dense needs a causal backbone, and {type(policy).__name__}'s blocks are not (fmlp/bsarec filters mix future positions; a custom block says it is causal with a class attribute `causal = True`); use spt.mode=rows")
        seqs, lengths, targets = data.train_windows(max_len, cfg.dense_stride or max(1, max_len // 2))
        last_targets = targets[torch.arange(len(targets)), lengths - 1]
    else:
        seqs, lengths, targets = data.train_rows(max_len)
        last_targets = targets
    return (seqs, lengths, targets), SameTargetIndex(last_targets)


def read_spt_state(state_path: Path, settings: Mapping, ctx: DistContext, run_dir: Path) -> dict:
    """The saved SPT training state, refused when it was saved with other settings or under
    another world size (:func:`check_resume_settings`, :func:`check_world_size`)."""
    saved = load_training_state(state_path)
    check_resume_settings(saved, settings, run_dir)
    check_world_size(saved, ctx, run_dir)
    return saved


def build_step(policy: nn.Module, cfg: SPTConfig, ctx: DistContext, device: torch.device, generator: torch.Generator | None, softmax: SampledSoftmax | None) -> nn.Module:
    """The SPT step as one module (:class:`lares_rl.spt_distributed.SPTStep`); under torchrun
    wrapped in DistributedDataParallel, which synchronises the gradients of all its passes."""
    from .spt_distributed import SPTStep

    step = SPTStep(policy, cfg, gathered=ctx.active and cfg.alignment_negatives == "gathered", generator=generator, softmax=softmax)
    if not ctx.active:
        return step
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(step, device_ids=[device] if device.type == "cuda" else None)


class SPTRun:
    """One SPT run's moving parts and its steps: the restored state, one gradient step per batch
    with its logging, the validation that ends each epoch, the saved state and the summary.
    :func:`train_spt` builds it and drives the loop. Under DDP (``ctx``) rank 0 alone validates,
    decides and writes; the others follow its broadcast decisions."""

    def __init__(self, *, policy: nn.Module, policy_config: Mapping, data, max_len: int, cfg: SPTConfig, eval_cfg: EvalConfig, run_dir: Path, device: torch.device,
                 seed: int, config: Mapping, rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor], positives: SameTargetIndex, ctx: DistContext) -> None:
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
        self.settings = {"spt": asdict(cfg), "policy_config": to_plain(policy_config), "data_fingerprint": data.fingerprint, "max_len": max_len, "seed": seed}
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
            "policy_state": self.policy.state_dict(), "optimizer_state": self.optimizer.state_dict(), "stopper": self.stopper.state_dict(),
            "rng": capture_rng(*self.generators), "progress": self.state, "settings": self.settings, "world_size": ctx.world_size, "distributed": ctx.active,
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
        from .spt_distributed import rec_scale

        seqs, lengths, targets, device = self.seqs, self.lengths, self.targets, self.device
        pos_rows = self.ctx.shard(self.positives.sample(rows, self.generator))
        batch = (seqs[local].to(device), lengths[local].to(device), targets[local].to(device))
        return self.step(batch, (seqs[pos_rows].to(device), lengths[pos_rows].to(device)), rec_scale(targets[used], targets[local], self.ctx.world_size))

    def checked_loss(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L_SPT (:func:`total_loss`). Under DDP a non-finite term on one rank stops every rank
        before the update (the others would wait in the gradient all-reduce)."""
        step = self.state["step"]
        if self.ctx.active and self.ctx.any(not all(torch.isfinite(v).all() for n, v in terms.items() if n.startswith("loss_"))):
            total_loss(terms, step)  # the rank with the bad term names it; the others stop too, not wait
            raise LaresError(f"another rank hit a non-finite loss at step {step}; training stopped. The last good state (checkpoints/spt_last.pt, spt_best.pt) is kept; lower spt.lr or check the data")
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
        tracker.log("charts", {"learning_rate": self.optimizer.param_groups[0]["lr"], "samples_per_sec": self.samples_per_epoch / seconds, "epoch": epoch}, seen_rows)
        tracker.log("time", {"epoch_seconds": seconds}, seen_rows)
        print(f"[spt] epoch {epoch:3d}  {seconds:6.1f}s  valid ndcg@10 {metrics['ndcg@10']:.4f}  recall@10 {metrics['recall@10']:.4f}" + ("  *" if stopper.improved else ""), flush=True)
        if stopper.improved:
            save_checkpoint(self.best_path, policy=self.policy, policy_config=self.policy_config, data=self.data, max_len=self.max_len,
                            dataset_name=str(self.config["dataset"]["name"]), phase="spt", epoch=epoch, metrics=metrics, config=self.config)
        return stopper.state_dict(), stop

    def summary(self) -> dict:
        """Best epoch, epochs run, checkpoint and speed; on rank 0 also the best weights back into
        the policy and their validation metrics (the other ranks keep their last weights)."""
        epoch_seconds = self.state["epoch_seconds"]
        seconds_per_epoch = sum(epoch_seconds) / max(1, len(epoch_seconds))
        summary = {
            "best_epoch": self.stopper.best_epoch, "epochs_run": self.state["epoch"], "checkpoint": str(self.best_path),
            "seconds_per_epoch": seconds_per_epoch, "samples_per_sec": self.samples_per_epoch / seconds_per_epoch if seconds_per_epoch else 0.0,
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
    run = SPTRun(policy=policy, policy_config=policy_config, data=data, max_len=max_len, cfg=cfg, eval_cfg=eval_cfg, run_dir=run_dir, device=device,
                 seed=seed, config=config, rows=rows, positives=positives, ctx=ctx)
    saved = ctx.on_main(lambda: read_spt_state(run.state_path, run.settings, ctx, run_dir)) if resume else None  # rank 0 reads, every rank gets the same state
    run.begin(saved, run_dir, rec_softmax)
    run.open_tracker(run_dir, progress, resumed=resume)
    resume_command = resume_command or f"lares-rl spt resume={run_dir} <the same overrides>"

    # --- loop: one pass over shuffled rows per epoch, then validation
    with stop_on_sigint() as stop_request:
        while run.state["epoch"] < cfg.epochs and not run.state["finished"]:
            epoch = run.state["epoch"]
            epoch_start, batches = run.begin_epoch()
            for index in run.tracker.bar(range(run.state["next_batch"], len(batches)), len(batches) - run.state["next_batch"], f"spt epoch {epoch}"):
                run.update_step(batches, index)
                if ctx.any(stop_request.requested):  # every rank stops after the same batch
                    run.save_interrupted(epoch_start)
                    raise TrainingInterrupted(f"SPT interrupted at epoch {epoch}, batch {index + 1}/{len(batches)}; state saved to {run.state_path}. Resume with: {resume_command}")
            run.end_epoch(epoch, epoch_start)
    run.tracker.close()
    return run.summary()
