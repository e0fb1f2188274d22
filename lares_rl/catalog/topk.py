"""Top-K and target ranks over the item catalog in chunks, so memory does not grow with the catalog.

Scoring a batch of B users against N items at once holds a B x N matrix: 4 GB for 1,024 users and
a million items. Here the catalog is scored ``chunk`` items at a time and only a running top-M
list per user is kept (values and ids, B x M), so the working memory is B x (chunk + M) whatever
N is. The item table itself (N x d parameters) is the model and still grows with N.

Ranks stay exact where metrics need them. The pessimistic rank of a target (ties and NaN count
against it, :func:`lares_rl.metrics.ranking.target_ranks`) is the number of other items scored >= the
target. With the running list holding the top ``cap + 1`` items (NaN mapped to +inf so it
outranks everything, as in the full ranking):

- if the true rank r < cap, the r + 1 items scored >= the target all sit in the list (the
  (cap + 1)-th best score is below the target's), so counting them there gives r exactly;
- if r >= cap, the list holds cap + 1 items scored >= the target, at most one of them the target,
  so the count is >= cap.

Every metric at a cut-off <= cap is therefore identical to the full ranking's, and so is the RPT
filter's "rank < 100" test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from lares_rl.core.errors import LaresError
from lares_rl.metrics.ranking import metrics_from_ranks, target_ranks

ItemScorer = Callable[[torch.Tensor, "slice | torch.Tensor"], torch.Tensor]


def item_scorer(policy: nn.Module, key: str) -> ItemScorer:
    """``policy.item_scores(states [..., d], items) -> [..., len(items)]``: scores of some items only.

    Chunked scoring needs it; a custom policy that only has ``scores`` (the whole catalog) cannot
    be chunked, and the error names the setting ``key`` that asked for it."""
    scorer = getattr(policy, "item_scores", None)
    if scorer is None:
        raise LaresError(
            f"{key} needs a policy with item_scores(states, items) (scores of a slice of the catalog); {type(policy).__name__} only scores the whole catalog. Add the method or set {key}=null"
        )
    return scorer


def check_chunk(chunk: int | None, key: str) -> None:
    """``None`` (the whole catalog at once) or a positive item count."""
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise LaresError(
            f"{key}={chunk!r} must be a positive number of items per scoring chunk (e.g. {key}=65536) or null to score the whole catalog at once"
        )


def _history_entries(
    history: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) of every seen item of a CSR ``history`` over the batch, minus each row's target
    (with repeat consumption the target may have been seen; masking it would make a sure miss)."""
    indptr, items = history
    counts = (indptr[1:] - indptr[:-1]).to(device)
    rows = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    seen = items[indptr[0] : indptr[-1]].to(device)
    if targets is not None:
        keep = seen != targets[rows]
        rows, seen = rows[keep], seen[keep]
    return rows, seen


@torch.no_grad()
def chunked_top_k(
    states: torch.Tensor,
    score_items: ItemScorer,
    num_items: int,
    k: int,
    chunk: int | None,
    *,
    history: tuple[torch.Tensor, torch.Tensor] | None = None,
    targets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The best ``k`` items 1..N for each user state, best first, scored ``chunk`` items at a time.

    Args:
        states: [B, d] user states.
        score_items: ``(states, items: slice) -> [B, len]`` (see :func:`item_scorer`).
        num_items: N (item 0 is padding and never a candidate).
        k: list length, at most N.
        chunk: items scored per step; None scores all N in one step.
        history: CSR (indptr [B + 1], items) of seen items, masked to -inf (never a row's target).
        targets: [B] item ids whose scores to return too (from the same chunk product as the list).

    Returns ``(values [B, k], ids [B, k], target_scores [B] or None)``. NaN scores become +inf:
    a diverged model's NaN outranks every real score, as in the full ranking.
    """
    if not 1 <= k <= num_items:
        raise ValueError(f"k={k} must be in 1..{num_items} (the catalog)")
    chunk = num_items if chunk is None else chunk
    device = states.device
    masked = _history_entries(history, targets, device) if history is not None else None
    target_scores = torch.full((states.shape[0],), float("nan"), device=device) if targets is not None else None
    best_values = best_ids = None
    for start in range(1, num_items + 1, chunk):
        stop = min(start + chunk, num_items + 1)
        scores = score_items(states, slice(start, stop)).float()
        if targets is not None:  # taken before NaN -> +inf, so a NaN target still ranks last
            rows = ((targets >= start) & (targets < stop)).nonzero().squeeze(1)
            target_scores[rows] = scores[rows, targets[rows] - start]
        scores = torch.where(scores.isnan(), float("inf"), scores)
        if masked is not None:
            in_chunk = (masked[1] >= start) & (masked[1] < stop)
            scores[masked[0][in_chunk], masked[1][in_chunk] - start] = float("-inf")
        values, ids = scores.topk(min(k, stop - start), dim=1)
        ids = ids + start
        if best_values is not None:
            values, order = torch.cat([best_values, values], dim=1).topk(min(k, best_values.shape[1] + values.shape[1]), dim=1)
            ids = torch.cat([best_ids, ids], dim=1).gather(1, order)
        best_values, best_ids = values, ids
    return best_values, best_ids, target_scores


def ranks_from_top_k(
    values: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor, target_scores: torch.Tensor, num_items: int
) -> torch.Tensor:
    """Pessimistic 0-based target ranks from a top-(cap + 1) list: exact below cap, >= cap above
    (module docstring). A NaN target score ranks last, as in :func:`lares_rl.metrics.ranking.target_ranks`."""
    others = (ids != targets.view(-1, 1)) & (values >= target_scores.view(-1, 1))
    return torch.where(target_scores.isnan(), num_items - 1, others.sum(dim=1))


@torch.no_grad()
def chunked_target_ranks(
    states: torch.Tensor,
    score_items: ItemScorer,
    num_items: int,
    targets: torch.Tensor,
    cap: int,
    chunk: int | None,
    history: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Pessimistic target ranks [B], exact wherever they are below ``cap`` (>= cap otherwise)."""
    values, ids, target_scores = chunked_top_k(
        states, score_items, num_items, min(cap + 1, num_items), chunk, history=history, targets=targets
    )
    return ranks_from_top_k(values, ids, targets, target_scores, num_items)


@torch.no_grad()
def targets_within_top(scores: torch.Tensor, targets: torch.Tensor, top: int) -> torch.Tensor:
    """Bool [B]: True where at most ``top - 1`` other items score ``>=`` the target (scores [B, N + 1],
    column 0 the padding item; targets [B] in 1..N): the RPT filter's question, answered with
    :func:`lares_rl.metrics.ranking.target_ranks`'s cache-blocked count."""
    return target_ranks(scores, targets) < top


StateFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_chunked(
    state_fn: StateFn,
    score_items: ItemScorer,
    num_items: int,
    seqs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    *,
    ks: Sequence[int],
    chunk: int | None,
    history: tuple[torch.Tensor, torch.Tensor] | None = None,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    batches: Callable[[range], Iterable[int]] = iter,
    ranks_out: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """:func:`lares_rl.metrics.ranking.evaluate_scores` with the catalog scored in chunks: the same metrics
    (every cut-off in ``ks``), in memory independent of the catalog for a fixed user batch.
    ``state_fn(seq, lengths) -> [b, d]`` gives the user states that ``score_items`` scores;
    ``ranks_out`` receives each batch's ranks (exact below ``max(ks)``, which is all a metric reads)."""
    if len(targets) == 0:
        raise ValueError("cannot evaluate on zero users")
    totals: dict[str, float] = {}
    for start in batches(range(0, len(targets), batch_size)):
        stop = min(start + batch_size, len(targets))
        states = state_fn(seqs[start:stop].to(device), lengths[start:stop].to(device))
        batch_history = None if history is None else (history[0][start : stop + 1], history[1])
        ranks = chunked_target_ranks(states, score_items, num_items, targets[start:stop].to(device), max(ks), chunk, batch_history)
        if ranks_out is not None:
            ranks_out.append(ranks.cpu())
        for name, values in metrics_from_ranks(ranks, ks).items():
            totals[name] = totals.get(name, 0.0) + values.sum().item()
    return {name: total / len(targets) for name, total in totals.items()}
