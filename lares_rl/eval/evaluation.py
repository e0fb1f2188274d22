"""Evaluation settings and the one evaluation routine every phase and command uses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from lares_rl.catalog.topk import check_chunk, evaluate_chunked, item_scorer
from lares_rl.core.errors import LaresError
from lares_rl.core.tracking import progress
from lares_rl.eval.adaptive_depth import SettledScores, check_halting, default_depth
from lares_rl.metrics.beyond import BeyondAccuracy
from lares_rl.metrics.ranking import ScoreFn, evaluate_scores, policy_score_fn
from lares_rl.policies.halting import encode_until_settled
from lares_rl.rewards.context import ItemContext


@dataclass
class EvalConfig:
    """``eval`` section. ``k`` None = the policy's fixed evaluation depth (mean_recurrence).
    ``seed`` fixes the T0 noise drawn at evaluation, so a checkpoint always gets the same numbers.
    ``item_chunk``: score the catalog this many items at a time with a running top-K (memory
    independent of the catalog, same metrics); None scores the whole catalog at once.

    ``halt_tol`` switches on adaptive depth (each user stops once its state has settled, see
    :mod:`lares_rl.policies.halting`) with at most ``halt_k_max`` steps (None: ``k``, else the
    policy's depth); None keeps the fixed depth."""

    split: str = "test"  # the eval command's split: valid | test
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])  # cut-offs of every metric (10 is required: selection reads NDCG@10)
    exclude_history: bool = False  # true masks every item the user has already seen
    batch_size: int = 1024  # users per evaluation batch (memory = batch x catalog, or batch x item_chunk)
    k: int | None = None  # reasoning depth at evaluation; null = policy.mean_recurrence
    sweep_ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 12, 16])  # the depths sweep-k measures
    seed: int = 0  # fixes the T0 noise drawn at evaluation
    item_chunk: int | None = None  # items scored at a time with a running top-K (memory independent of the catalog); null = all at once
    halt_tol: float | None = None  # adaptive depth: a user stops once its state moves less than this per step (relative); null = fixed k
    halt_k_max: int | None = None  # most steps with halting; null = eval.k, else policy.mean_recurrence

    def validate(self) -> None:
        if self.split not in ("valid", "test"):
            raise LaresError(f"eval.split={self.split!r} must be 'valid' or 'test'")
        if not self.ks or any(k < 1 for k in self.ks) or 10 not in self.ks:
            raise LaresError(
                f"eval.ks={self.ks} must be a list of positive cut-offs that includes 10 (early stopping, model selection and the reports read NDCG@10 and Recall@10), e.g. eval.ks=[5,10,20]"
            )
        if not self.sweep_ks or any(k < 1 for k in self.sweep_ks):
            raise LaresError(
                f"eval.sweep_ks={self.sweep_ks} must be a non-empty list of reasoning depths >= 1, e.g. eval.sweep_ks=[1,2,4,8]"
            )
        if self.batch_size < 1:
            raise LaresError(f"eval.batch_size={self.batch_size} must be >= 1")
        if self.k is not None and self.k < 1:
            raise LaresError(f"eval.k={self.k} must be >= 1 (or null for the policy's default)")
        check_chunk(self.item_chunk, "eval.item_chunk")
        check_halting(self.halt_tol, self.halt_k_max, "eval.halt_tol", "eval.halt_k_max")


def check_depth_applies(policy: nn.Module, k: int | None, key: str) -> None:
    """A reasoning depth ``key=k`` on a policy without a core (SASRec) would be silently ignored."""
    if k is not None and not getattr(policy, "recurrent", True):
        raise LaresError(
            f"{key}={k} has no effect: this policy has no reasoning core (e.g. SASRec), so it has no depth to set; leave {key} unset"
        )


@torch.no_grad()
def evaluate_policy(
    policy: nn.Module,
    data,
    split: str,
    max_len: int,
    cfg: EvalConfig,
    device: torch.device,
    k: int | None = None,
    steps_out: list | None = None,
    context: ItemContext | None = None,
    score_fn: ScoreFn | None = None,
    ranks_out: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of ``policy`` on one split, in eval mode, with reproducible T0 noise.

    The RNG is forked, so evaluating never shifts the training run's random stream. On large data
    a pass takes minutes, so it shows progress (``progress=false`` in the CLI hides it).

    With ``cfg.halt_tol`` each user stops when its state has settled, at most ``k`` steps (else
    ``cfg.halt_k_max``, ``cfg.k``, the policy's depth); the metrics then include ``mean_steps``,
    and ``steps_out`` (a list) receives the steps of every user, in row order.

    With an item ``context`` the beyond-accuracy measures of the same top-K lists are added
    (coverage@K, novelty@K, popularity@K, gini@K, ild@K; lares_rl/beyond_metrics.py).
    ``score_fn`` replaces the policy's own scores (e.g. a re-ranking of them) under the same noise.
    ``score_fn`` is not combined with halting (a re-ranking scores the fixed-depth states), and
    with ``cfg.item_chunk`` the beyond-accuracy measures are left out (the full score rows they
    read are what chunking avoids). ``ranks_out`` (a list) receives every user's target rank, in
    row order, in batches: what :mod:`lares_rl.eval.paired` compares two models on.
    """
    inputs = data.eval_inputs(split, max_len)
    if score_fn is not None and cfg.item_chunk is not None:
        raise LaresError(
            "eval.item_chunk: a re-ranked score function needs the full score rows that chunking avoids; unset eval.item_chunk for re-ranking"
        )
    score_fn = _own_score_fn(policy, cfg, k) if score_fn is None else score_fn
    beyond = BeyondAccuracy(context.popularity, context.features()[0], cfg.ks) if context is not None and cfg.item_chunk is None else None
    history = data.history_csr(split) if cfg.exclude_history else None
    batches = _progress_batches(f"eval {split}" + ("" if k is None else f" k={k}"))
    was_training = policy.training
    policy.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            if cfg.item_chunk is not None:
                metrics = _chunked_metrics(policy, score_fn, inputs, cfg, cfg.k if k is None else k, history, device, batches, ranks_out)
            else:
                metrics = evaluate_scores(
                    score_fn,
                    *inputs,
                    ks=cfg.ks,
                    history=history,
                    batch_size=cfg.batch_size,
                    device=device,
                    batches=batches,
                    observe=beyond.observe if beyond is not None else None,
                    ranks_out=ranks_out,
                )
    finally:
        policy.train(was_training)
    if isinstance(score_fn, SettledScores):
        steps = score_fn.all_steps()
        metrics["mean_steps"] = float(steps.double().mean())
        if steps_out is not None:
            steps_out.extend(steps.tolist())
    return metrics | (beyond.result() if beyond is not None else {})


def _own_score_fn(policy: nn.Module, cfg: EvalConfig, k: int | None) -> ScoreFn:
    """The policy's own scores at depth ``k`` (else ``cfg.k``); with ``cfg.halt_tol`` those of
    states halted per user (:class:`SettledScores`, which records the steps each user took)."""
    score_fn = policy_score_fn(policy, cfg.k if k is None else k)
    if cfg.halt_tol is not None:
        score_fn = SettledScores(policy, cfg.halt_tol, k or cfg.halt_k_max or cfg.k or default_depth(policy))
    return score_fn


def _progress_batches(desc: str) -> Callable[[range], Iterable[int]]:
    """Batch start rows shown as progress named ``desc``."""
    return lambda starts: progress(starts, len(starts), desc, unit="batch")


def _chunked_metrics(
    policy: nn.Module,
    score_fn: ScoreFn,
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cfg: EvalConfig,
    depth: int | None,
    history: tuple[torch.Tensor, torch.Tensor] | None,
    device: torch.device,
    batches: Callable[[range], Iterable[int]],
    ranks_out: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """The metrics of ``cfg.item_chunk`` scoring (:func:`~lares_rl.catalog.topk.evaluate_chunked`)
    on the policy's final states at ``depth``, or halted per user when ``score_fn`` is a
    :class:`SettledScores` (whose step record it fills as the full-catalog path does)."""

    def states(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not isinstance(score_fn, SettledScores):
            return policy.encode(seq, lengths, depth)[:, -1]
        settled, steps = encode_until_settled(policy, seq, lengths, score_fn.tol, score_fn.k_max)
        score_fn.steps.append(steps.cpu())
        return settled

    return evaluate_chunked(
        states,
        item_scorer(policy, "eval.item_chunk"),
        policy.num_items,
        *inputs,
        ks=cfg.ks,
        chunk=cfg.item_chunk,
        history=history,
        batch_size=cfg.batch_size,
        device=device,
        batches=batches,
        ranks_out=ranks_out,
    )
