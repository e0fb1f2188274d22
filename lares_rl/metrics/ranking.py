"""Full-ranking evaluation: Recall@K, NDCG@K, MRR@K over the whole catalog (no sampled negatives).

Ties are counted against the model: the rank of the target is the number of OTHER items whose
score is >= its own. A constant scorer therefore ranks every target last instead of first, so a
collapsed model cannot look good by accident. The padding column (item 0) is at -inf and never
competes. Evaluation runs in user batches, so memory is one batch x catalog, never users x items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

DEFAULT_KS = (5, 10, 20)
METRIC_NAMES = ("recall", "ndcg", "mrr")
# Scores compared per block on a CPU: 2^18 fp32 entries (1 MB) and their booleans stay in a core's
# L2 cache, where one pass over a 1,024 x 24,588 matrix (100 MB) streams through memory twice.
RANK_BLOCK_SCORES = 1 << 18


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based pessimistic rank of each target among all non-padding items. scores [B, N+1], targets [B].

    Counted as N - 1 - (items scoring strictly below the target): the items at or above it, NaN
    ones included, outrank it, and a NaN target ranks last (nothing compares below NaN), so a
    diverged model scores 0. On a CPU rows go in blocks of about ``RANK_BLOCK_SCORES`` scores, so
    that the comparison's booleans are still in cache when they are counted: on a 24,588-item
    catalog 3-5x faster than comparing, NaN-testing and summing the whole [B, N+1] matrix
    (docs/speed_profile.md); other devices take all rows at once."""
    target_scores = scores.gather(1, targets.view(-1, 1))
    items = scores[:, 1:]
    below = torch.empty(scores.shape[0], dtype=torch.int32, device=scores.device)
    rows = max(1, RANK_BLOCK_SCORES // max(1, items.shape[1])) if scores.device.type == "cpu" else max(1, scores.shape[0])
    for start in range(0, scores.shape[0], rows):
        block = items[start : start + rows] < target_scores[start : start + rows]
        torch.sum(block.view(torch.uint8), dim=1, dtype=torch.int32, out=below[start : start + rows])
    return (items.shape[1] - 1) - below.long()


def metrics_from_ranks(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, torch.Tensor]:
    """Per-user metric values [B] for each ``{name}@{k}`` (single held-out item: recall@k == hit@k)."""
    ranks = ranks.to(torch.float64)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = hit.double()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), 0.0)
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (ranks + 1.0), 0.0)
    return out


def mask_history(scores: torch.Tensor, indptr: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Set the scores of each row's seen items (CSR ``indptr`` [B+1], ``items``) to -inf, in place."""
    counts = indptr[1:] - indptr[:-1]
    rows = torch.repeat_interleave(torch.arange(scores.shape[0], device=scores.device), counts.to(scores.device))
    scores[rows, items[indptr[0] : indptr[-1]].to(scores.device)] = float("-inf")
    return scores


ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_scores(
    score_fn: ScoreFn,
    seqs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    history: tuple[torch.Tensor, torch.Tensor] | None = None,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    batches: Callable[[range], Iterable[int]] = iter,
    observe: Callable[[torch.Tensor], None] | None = None,
    ranks_out: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """Mean metrics of ``score_fn(seq, lengths) -> [b, N+1]`` over all rows, batched.

    ``batches`` wraps the range of batch start rows, e.g. in a progress display. ``observe``
    sees every batch's final (history-masked) scores, e.g. to collect the top-K lists that the
    beyond-accuracy measures (lares_rl/beyond_metrics.py) are computed from.

    ``history`` (CSR over the same rows) masks seen items when given, except each row's target:
    in data with repeat consumption the next item may have been seen, and masking it would make
    it an automatic miss.

    ``ranks_out`` (a list) receives each batch's target ranks on the CPU, in row order: the
    per-user values behind the means, for a paired comparison of two models on the same users.
    """
    if len(targets) == 0:
        raise ValueError("cannot evaluate on zero users")
    totals: dict[str, float] = {}
    for start in batches(range(0, len(targets), batch_size)):
        stop = min(start + batch_size, len(targets))
        scores = score_fn(seqs[start:stop].to(device), lengths[start:stop].to(device)).float()
        batch_targets = targets[start:stop].to(device)
        if history is not None:  # the target stays scored when it was also consumed before (repeats)
            indptr, items = history
            target_scores = scores.gather(1, batch_targets.view(-1, 1))
            mask_history(scores, indptr[start : stop + 1], items)
            scores.scatter_(1, batch_targets.view(-1, 1), target_scores)
        if observe is not None:
            observe(scores)
        ranks = target_ranks(scores, batch_targets)
        if ranks_out is not None:
            ranks_out.append(ranks.cpu())
        for name, values in metrics_from_ranks(ranks, ks).items():
            totals[name] = totals.get(name, 0.0) + values.sum().item()
    return {name: total / len(targets) for name, total in totals.items()}


def policy_score_fn(policy: torch.nn.Module, k: int | None = None) -> ScoreFn:
    """Final-step scores of a policy (``encode`` + ``scores``) at a given or default k."""

    def score(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return policy.scores(policy.encode(seq, lengths, k)[:, -1])

    return score
