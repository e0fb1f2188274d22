"""One DDP rank's share of a global batch, for the actor's random draws (k, rollout seeds,
Gaussian noise): drawn for the whole batch, this rank's rows kept."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowShare:
    """This process's share of a global batch under DDP RPT learners: the global batch is groups of
    ``group_size`` contiguous rows, and rank ``rank`` of ``world_size`` holds groups
    ``rank, rank + world_size, ...`` in order. The actor's random draws (k, rollout seeds, Gaussian
    noise) are made for the whole global batch and this share is kept, so every rank draws exactly
    what a one-process run draws for the same rows."""

    rank: int
    world_size: int
    group_size: int

    def global_rows(self, rows: int) -> int:
        return rows * self.world_size

    def take(self, values: torch.Tensor) -> torch.Tensor:
        """This rank's rows of ``values`` [global rows, ...]."""
        grouped = values.reshape(-1, self.world_size, self.group_size, *values.shape[1:])
        return grouped[:, self.rank].reshape(-1, *values.shape[1:])
