"""Evaluation settings and the one evaluation routine every phase and command uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .beyond_metrics import BeyondAccuracy
from .errors import LaresError
from .item_context import ItemContext
from .metrics import ScoreFn, evaluate_scores, policy_score_fn
from .tracking import progress


@dataclass
class EvalConfig:
    """``eval`` section. ``k`` None = the policy's fixed evaluation depth (mean_recurrence).
    ``seed`` fixes the T0 noise drawn at evaluation, so a checkpoint always gets the same numbers."""

    split: str = "test"
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    exclude_history: bool = False
    batch_size: int = 1024
    k: int | None = None
    sweep_ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 12, 16])
    seed: int = 0

    def validate(self) -> None:
        if self.split not in ("valid", "test"):
            raise LaresError(f"eval.split={self.split!r} must be 'valid' or 'test'")
        if not self.ks or any(k < 1 for k in self.ks) or 10 not in self.ks:
            raise LaresError(f"eval.ks={self.ks} must be a list of positive cut-offs that includes 10 (early stopping, model selection and the reports read NDCG@10 and Recall@10), e.g. eval.ks=[5,10,20]")
        if not self.sweep_ks or any(k < 1 for k in self.sweep_ks):
            raise LaresError(f"eval.sweep_ks={self.sweep_ks} must be a non-empty list of reasoning depths >= 1, e.g. eval.sweep_ks=[1,2,4,8]")
        if self.batch_size < 1:
            raise LaresError(f"eval.batch_size={self.batch_size} must be >= 1")
        if self.k is not None and self.k < 1:
            raise LaresError(f"eval.k={self.k} must be >= 1 (or null for the policy's default)")


def check_depth_applies(policy: nn.Module, k: int | None, key: str) -> None:
    """A reasoning depth ``key=k`` on a policy without a core (SASRec) would be silently ignored."""
    if k is not None and not getattr(policy, "recurrent", True):
        raise LaresError(f"{key}={k} has no effect: this policy has no reasoning core (e.g. SASRec), so it has no depth to set; leave {key} unset")


@torch.no_grad()
def evaluate_policy(
    policy: nn.Module, data, split: str, max_len: int, cfg: EvalConfig, device: torch.device, k: int | None = None,
    context: ItemContext | None = None, score_fn: ScoreFn | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of ``policy`` on one split, in eval mode, with reproducible T0 noise.

    The RNG is forked, so evaluating never shifts the training run's random stream. On large data
    a pass takes minutes, so it shows progress (``progress=false`` in the CLI hides it).
    With an item ``context`` the beyond-accuracy measures of the same top-K lists are added
    (coverage@K, novelty@K, popularity@K, gini@K, ild@K; lares_rl/beyond_metrics.py).
    ``score_fn`` replaces the policy's own scores (e.g. a re-ranking of them) under the same noise.
    """
    seqs, lengths, targets = data.eval_inputs(split, max_len)
    desc = f"eval {split}" + ("" if k is None else f" k={k}")
    history = data.history_csr(split) if cfg.exclude_history else None
    beyond = BeyondAccuracy(context.popularity, context.features()[0], cfg.ks) if context is not None else None
    was_training = policy.training
    policy.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            metrics = evaluate_scores(
                score_fn or policy_score_fn(policy, cfg.k if k is None else k), seqs, lengths, targets, ks=cfg.ks, history=history, batch_size=cfg.batch_size, device=device,
                batches=lambda starts: progress(starts, len(starts), desc, unit="batch"), observe=beyond.observe if beyond is not None else None,
            )
    finally:
        policy.train(was_training)
    return metrics | (beyond.result() if beyond is not None else {})
