"""SPT training rows and their order: every training prefix (or dense window) as one row, the
same-target positives of TLA, and the (optionally length-bucketed) epoch order."""

from __future__ import annotations

import torch
from torch import nn

from lares_rl.core.errors import LaresError
from lares_rl.spt.config import SPTConfig


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


def epoch_order(
    lengths: torch.Tensor, batch_size: int, bucket_by_length: bool, generator: torch.Generator, pool_batches: int = 64
) -> torch.Tensor:
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
    by_length = torch.cat([sorted_by_length(pool, lengths) for pool in pools])
    batches = by_length.split(batch_size)
    return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()])


def sorted_by_length(rows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``rows`` (indices) ordered by history length, ties in their given order. Cut into
    consecutive batches, each batch holds histories of similar length, and ``encode`` runs it only
    over its longest history (it trims the padding columns, positions unchanged): the saving of
    ``spt.bucket_by_length`` and of the RPT filter's ``rpt.filter_order=length``."""
    return rows[torch.argsort(lengths[rows], stable=True)]


def training_rows(
    policy: nn.Module, data, max_len: int, cfg: SPTConfig
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], SameTargetIndex]:
    """(seqs, lengths, targets) of every training prefix as one row, or with ``spt.mode=dense`` of
    the windows (targets [R, L]), and the index that draws each row's positive (another row with the
    same last target), built once for the whole run."""
    if cfg.mode == "dense":
        if not policy.causal:
            raise LaresError(
                f"spt.mode=dense needs a causal backbone, and {type(policy).__name__}'s blocks are not (fmlp/bsarec filters mix future positions; a custom block says it is causal with a class attribute `causal = True`); use spt.mode=rows"
            )
        seqs, lengths, targets = data.train_windows(max_len, cfg.dense_stride or max(1, max_len // 2))
        last_targets = targets[torch.arange(len(targets)), lengths - 1]
    else:
        seqs, lengths, targets = data.train_rows(max_len)
        last_targets = targets
    return (seqs, lengths, targets), SameTargetIndex(last_targets)
