"""Is one model really better than another? A paired bootstrap over the users of one split.

Every gain this project reports is a few percent of NDCG@10, measured on 943 (ML-100K) to 57k
(Instruments) test users, and one user's NDCG@10 is either 0 or a value near 0.3-1. Whether a
few percent is more than the luck of which users are in the split is a question of numbers:
both models are evaluated on the same users (the same evaluation pass that reports their means),
the users are resampled with replacement, and the relative change of the mean is recomputed on
each resample. ``lares-rl run`` prints the result beside its table; ``benchmarks/paired_bootstrap.py``
does the same for any checkpoints.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.metrics.ranking import metrics_from_ranks

DEFAULT_RESAMPLES = 2000


def per_user_metric(
    policy: nn.Module, data, split: str, max_len: int, cfg: EvalConfig, device: torch.device, metric: str = "ndcg@10"
) -> torch.Tensor:
    """``metric`` (e.g. ``ndcg@10``) of every user of ``split`` [users], in row order, from the ranks
    of one ``evaluate_policy`` pass with ``cfg`` (its cut-offs narrowed to the metric's)."""
    cutoff = int(metric.split("@")[1])
    ranks: list[torch.Tensor] = []
    evaluate_policy(policy, data, split, max_len, dataclasses.replace(cfg, ks=[cutoff]), device, ranks_out=ranks)
    return metrics_from_ranks(torch.cat(ranks), [cutoff])[metric]


def paired_bootstrap(before: torch.Tensor, after: torch.Tensor, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Relative change of the mean (after / before - 1), its 95% percentile interval over user
    resamples, and the share of resamples where the change is <= 0. ``before`` and ``after`` hold
    one value per user, the same users in the same order."""
    if before.shape != after.shape or before.ndim != 1 or len(before) == 0:
        raise ValueError(
            f"a paired bootstrap needs one value per user on both sides; got shapes {tuple(before.shape)} and {tuple(after.shape)}"
        )
    generator = torch.Generator().manual_seed(seed)
    users = len(before)
    before, after = before.double(), after.double()
    index = torch.randint(users, (resamples, users), generator=generator)
    change = after[index].mean(1) / before[index].mean(1).clamp(min=1e-12) - 1
    low, high = torch.quantile(change, torch.tensor([0.025, 0.975], dtype=change.dtype)).tolist()
    return {
        "before": float(before.mean()),
        "after": float(after.mean()),
        "change": float(after.mean() / before.mean().clamp(min=1e-12) - 1),
        "ci_low": low,
        "ci_high": high,
        "p_not_better": float((change <= 0).double().mean()),
        "users": users,
    }


def change_with_interval(result: dict[str, float]) -> str:
    """``+3.5% (95%: -2.1% .. +9.0%)``: the change and its interval, as the run's table prints them."""
    return f"{100 * result['change']:+.1f}% (95%: {100 * result['ci_low']:+.1f}% .. {100 * result['ci_high']:+.1f}%)"
