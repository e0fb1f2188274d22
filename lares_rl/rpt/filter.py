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

What it costs (docs/speed_filter.md): the passes' encoder forwards are most of it. With
``order="length"`` (``rpt.filter_order``, the default) the batches hold rows sorted by history
length, and ``encode`` runs each only over its longest history (it trims the padding columns,
positions unchanged; the sort is SPT's ``bucket_by_length`` one,
:func:`lares_rl.spt.batches.sorted_by_length`): on Instruments (mean length 6.3 in a window of
20) a third of the positions. ``order="given"`` batches the rows in their own order, as the filter
did before. The filter is a stochastic probe, and its draws (k per batch, dropout and T0 over the
batch's shape) depend on how rows are batched, so the two orders keep different rows, as many up
to sampling noise; with the noise switched off (dropout 0, ``t0_init=zero``, a constant k) they
keep the same rows (tests/test_filter_speed.py). Either is deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lares_rl.catalog.topk import chunked_target_ranks, item_scorer, targets_within_top
from lares_rl.core.atomic import atomic_torch_save
from lares_rl.core.tracking import progress
from lares_rl.rpt.config import FILTER_ORDERS, RPTConfig
from lares_rl.spt.batches import sorted_by_length


def filter_batches(lengths: torch.Tensor, batch_size: int, order: str) -> list[slice | torch.Tensor]:
    """The rows of each filter batch: consecutive slices (``given``) or consecutive chunks of the
    rows sorted by length (``length``), the same batches in every pass."""
    if order not in FILTER_ORDERS:
        raise ValueError(f"rpt.filter_order={order!r} is unknown; choose one of {FILTER_ORDERS}")
    if order == "given":
        return [slice(start, start + batch_size) for start in range(0, len(lengths), batch_size)]
    return list(sorted_by_length(torch.arange(len(lengths)), lengths).split(batch_size))


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
    order: str = RPTConfig.filter_order,
) -> torch.Tensor:
    """Bool [R]: rows whose target ranks < ``top`` in at least one of ``passes`` train-mode passes.

    The global RNG is forked and seeded, so the filter is reproducible and leaves the caller's
    random stream untouched. The policy's train/eval mode is restored afterwards. It runs for
    minutes on ML-100K on a CPU, so it shows progress over all passes' batches. ``order``: how
    rows are batched (module docstring).
    """
    if top < 1 or passes < 1:
        raise ValueError(f"top={top} and passes={passes} must be >= 1")
    keep = torch.zeros(len(targets), dtype=torch.bool)
    if top >= getattr(policy, "num_items", top + 1):
        return keep | True
    device = torch.device(device)
    score_items = None if item_chunk is None else item_scorer(policy, "eval.item_chunk")
    steps = [rows for _ in range(passes) for rows in filter_batches(lengths, batch_size, order)]
    was_training = policy.training
    policy.train()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for rows in progress(steps, len(steps), f"rpt filter (top-{top}, {passes} pass{'es' if passes != 1 else ''})"):
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


def filter_cache_key(reference_digest: str, cfg: RPTConfig, max_len: int, rows: int, seed: int) -> str:
    """The name of a cached mask: the SPT weights' digest and every setting the mask depends on.
    The given order keeps the key masks had before the order was a setting (they are its masks);
    the length order's names it, so no mask of the other order is ever read for it."""
    order = "" if cfg.filter_order == "given" else f"_o{cfg.filter_order}"
    return f"{reference_digest[:20]}_top{cfg.filter_top}x{cfg.filter_passes}_p{cfg.dropout}_L{max_len}_n{rows}_s{seed}{order}"


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
