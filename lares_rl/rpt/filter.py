"""RPT's training-row filter (DESIGN section 3): keep the rows the SPT model can already reach.

A row (history, target v*) is kept when v* is in the model's top-``top`` (default 100) in at least
one of ``passes`` (default 3) stochastic passes. A pass is a training-mode forward as in the
reference: one k drawn from the policy's sampler per batch, fresh T0 noise, dropout on. Rows
whose target is far out of reach give GRPO groups of all-zero rewards (no signal), so dropping
them spends the rollout budget where the advantage is informative.

Ranks are pessimistic (ties count against the target, :func:`lares_rl.metrics.ranking.target_ranks`).
Nothing is ranked, though: the test "rank < top" only needs the number of items scored strictly
below the target (:func:`lares_rl.catalog.topk.targets_within_top`), counted on the very score
matrix the ranking read, so the kept rows are the ranking's. With ``item_chunk`` the catalog is
scored in chunks with a running top-``top`` list (:mod:`lares_rl.catalog.topk`), which decides
"rank < top" exactly as the full ranking does.

What it costs (docs/speed_filter.md): the passes' encoder forwards are most of it and stay as
they are, batch by batch in the same order, because every random draw (k, dropout, T0) must be
the same for the same rows to be kept; the pre-block cannot be shared across passes (dropout
draws anew in each) and batches cannot be regrouped by length (their shapes decide the draws).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lares_rl.catalog.topk import chunked_target_ranks, item_scorer, targets_within_top
from lares_rl.core.atomic import atomic_torch_save
from lares_rl.core.tracking import progress


@torch.no_grad()
def top_k_filter(
    policy: nn.Module,
    seqs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    *,
    top: int = 100,
    passes: int = 3,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    seed: int = 0,
    item_chunk: int | None = None,
) -> torch.Tensor:
    """Bool [R]: rows whose target ranks < ``top`` in at least one of ``passes`` train-mode passes.

    The global RNG is forked and seeded, so the filter is reproducible and leaves the caller's
    random stream untouched. The policy's train/eval mode is restored afterwards. It runs for
    minutes on ML-100K on a CPU, so it shows progress over all passes' batches.
    """
    if top < 1 or passes < 1:
        raise ValueError(f"top={top} and passes={passes} must be >= 1")
    keep = torch.zeros(len(targets), dtype=torch.bool)
    if top >= getattr(policy, "num_items", top + 1):
        return keep | True
    device = torch.device(device)
    score_items = None if item_chunk is None else item_scorer(policy, "eval.item_chunk")
    was_training = policy.training
    policy.train()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            starts = [start for _ in range(passes) for start in range(0, len(targets), batch_size)]
            for start in progress(starts, len(starts), f"rpt filter (top-{top}, {passes} pass{'es' if passes != 1 else ''})"):
                rows = slice(start, start + batch_size)
                states = policy.encode(seqs[rows].to(device), lengths[rows].to(device))[:, -1]
                batch_targets = targets[rows].to(device)
                if score_items is None:
                    within = targets_within_top(policy.scores(states), batch_targets, top)
                else:
                    within = chunked_target_ranks(states, score_items, policy.num_items, batch_targets, top, item_chunk) < top
                keep[rows] |= within.cpu()
    finally:
        policy.train(was_training)
    return keep


def cached_filter(cache_dir: Path | None, key: str, compute) -> torch.Tensor:
    """``compute()`` (the filter's bool mask), read from / written to ``cache_dir/<key>.pt`` when a
    directory is given. The key names the weights digest and the filter's settings, so a hit is the
    same computation; the write is atomic, so an interrupted run never leaves a partial mask."""

    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        print(f"[rpt] filter: reusing {path}", flush=True)
        return torch.load(path, weights_only=True)
    keep = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, keep)
    return keep
