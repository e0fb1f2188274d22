"""RPT with DDP learners under ``torchrun`` (``lares-rl rpt`` with W processes).

``rpt.histories_per_batch`` is the global batch. Every rank walks the same episode order (its env
has the one-process seed) and draws the global batch's episodes, then keeps its share: histories
``rank, rank + W, ...``, each with its G contiguous rollouts (:class:`RankShareEnv`). The actor's
random draws (depths k, rollout seeds, the Gaussian latent noise) are made for the whole global
batch too and the same share kept (:class:`lares_rl.policies.actor.RowShare`). So rank r holds
exactly rows r::W (in groups of G) of the batch one process would collect, with the same rollout
seeds. Every RPT loss is a mean over rows, equal shares make the mean of the ranks' gradients the
global batch's gradient, and :meth:`DistContext.average_gradients` all-reduces the trainable
parameters' gradients before each optimiser step: W processes make the one-process update.

Exactness. A rollout is a function of (history, k, seed) when the policy is deterministic given
them (``rpt.dropout=0`` and ``policy.t0_init=zero``, or evaluation-mode rollouts without T0 noise):
then the W-process run follows the one-process run step for step, within float tolerance.
With dropout or T0 noise each rank draws its masks for its own rows, and with item sampling
(``rpt.exploration=categorical|plackett_luce``) each rank samples slates from its own stream
(``seed + rank``): the run is then a statistically equivalent one, not the same numbers.
``rpt.advantage=value`` normalises the advantage per rank's share, not over the global batch.

Rank 0 alone computes the filter (broadcast to the others), evaluates the SPT start, validates
after each epoch and decides early stopping (broadcast), and writes the training state,
checkpoints, TensorBoard and metrics. The saved state holds every rank's RNG streams and
refuses to resume under another world size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lares_rl.core.distributed import DistContext
from lares_rl.core.errors import LaresError
from lares_rl.envs.batched_env import NextItemEnv
from lares_rl.policies.actor import GaussianLatentScores, RolloutScores, RowShare


class RankShareEnv(NextItemEnv):
    """A :class:`NextItemEnv` whose batch is one rank's share of a global batch: each reset draws
    the episodes of ``world_size`` times as many groups from the shared walk and keeps groups
    ``rank::world_size``. Every rank's walk (generator, permutation, position) stays identical to
    a one-process env's over the global batch, so rank 0's saved walk is every rank's."""

    def __init__(self, *args, rank: int, world_size: int, **kwargs) -> None:
        self.rank, self.world_size = rank, world_size
        super().__init__(*args, **kwargs)

    def _draw_episodes(self, count: int) -> torch.Tensor:
        return super()._draw_episodes(count * self.world_size)[self.rank :: self.world_size]


def check_world(cfg, ctx: DistContext) -> None:
    """Before any collective: the global batch splits evenly, and collector worker processes are
    not combined with DDP learners (each rank already collects its own share in-process)."""
    if not ctx.active or ctx.world_size == 1:
        return
    if cfg.collector_workers > 1:
        raise LaresError(
            f"rpt.collector_workers={cfg.collector_workers} cannot be combined with {ctx.world_size} torchrun processes: every DDP rank collects its own share "
            "of each batch in its own process; use rpt.collector_workers=1 under torchrun, or collector workers without torchrun"
        )
    if cfg.histories_per_batch % ctx.world_size:
        nearest = cfg.histories_per_batch - cfg.histories_per_batch % ctx.world_size or ctx.world_size
        raise LaresError(
            f"rpt.histories_per_batch={cfg.histories_per_batch} is the global batch and must be divisible by the number of processes ({ctx.world_size}); "
            f"use a multiple of {ctx.world_size}, e.g. rpt.histories_per_batch={nearest}"
        )


def share_actor(actor: torch.nn.Module, ctx: DistContext, group_size: int) -> None:
    """Make the slate actor draw for the global batch and keep this rank's rows (module docstring)."""

    if ctx.world_size == 1:
        return
    share = RowShare(ctx.rank, ctx.world_size, group_size)
    for module in actor.modules():
        if isinstance(module, (RolloutScores, GaussianLatentScores)):
            module.share = share


def global_rows(ctx: DistContext, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-row vectors of every rank's share, concatenated in rank order (one all-gather): the
    logged batch statistics (reward mean and std, advantage std, ...) are then the global batch's.
    Shares are whole groups of G rows, so groups stay contiguous."""
    names = list(values)
    stacked = torch.stack([values[name].detach().float().reshape(-1) for name in names], dim=1)
    gathered = ctx.gather_rows(stacked.to(ctx.collective_device())).to(stacked.device)
    return {name: gathered[:, i] for i, name in enumerate(names)}


def mean_scalars(ctx: DistContext, terms: Mapping[str, torch.Tensor], loss: torch.Tensor) -> dict[str, float]:
    """The step's scalar loss terms and diagnostics plus ``loss_total``, averaged over ranks (one
    all-reduce): every ``loss_*`` is a mean over equal shares, so its average is the global batch's."""
    values = {name: float(value.detach()) for name, value in terms.items() if torch.is_tensor(value) and value.numel() == 1} | {
        "loss_total": float(loss.detach())
    }
    if not ctx.active:
        return values
    names = list(values)
    reduced = ctx.mean(torch.tensor([values[name] for name in names], dtype=torch.float64, device=ctx.collective_device())).tolist()
    return dict(zip(names, reduced))
