"""The SPT step as one module, so DistributedDataParallel can wrap it, and the gathered InfoNCE.

DDP synchronises gradients of what runs inside its ``forward``; an SPT step is two or three
passes of the policy (``spt_loss``), so the whole step is the forward of :class:`SPTStep`.

Scaling. ``spt.batch_size`` is the global batch: each of W ranks gets an equal slice of rows, and
DDP averages the ranks' gradients. The alignment terms are means over rows, so with equal slices
the average over ranks is already the global mean. L_rec is a mean over supervised targets, and
dense windows carry different numbers of them, so it is multiplied by ``W x (the rank's targets /
the batch's)``: the average over ranks is then the gradient of the loss over the global batch,
the one a single process computes.

Negatives (``spt.alignment_negatives``). ``gathered`` (the default): every rank gathers the anchors and
positives of all ranks (an all_gather that carries gradients back to the rank that produced them)
and scores its own rows against the whole global batch, so the InfoNCE is the single-process one
whatever the world size, and changing the number of GPUs changes neither the objective nor the
number of negatives. ``per_rank``: each rank contrasts within its own slice, batch_size / W
negatives, no extra communication; cheaper, but the objective then depends on the world size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lares_rl.spt.config import SPTConfig
from lares_rl.spt.losses import spt_loss, symmetric_info_nce


class _GatherRows(torch.autograd.Function):
    """All ranks' equal-sized [n, d] tensors stacked in rank order, [W n, d], with a backward that
    returns to each rank the gradient of every rank's loss with respect to its own rows (summed
    over ranks). torch's own autograd all_gather (torch.distributed.nn) is deprecated."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:

        out = x.new_empty((dist.get_world_size() * x.shape[0], *x.shape[1:]))
        dist.all_gather_into_tensor(out, x.contiguous())
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:

        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gathered_symmetric_info_nce(x: torch.Tensor, y: torch.Tensor, similarity: str, temperature: float) -> torch.Tensor:
    """This rank's rows of the symmetric InfoNCE over the global batch: row i's positive is y_i,
    the negatives are every rank's rows. Slices are equal in size, so rank r's rows sit at
    ``r * n .. r * n + n - 1`` of the gathered matrices. Averaged over ranks (DDP) this is exactly
    ``symmetric_info_nce`` of the concatenated batch."""

    if similarity == "cosine":
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    all_x, all_y = _GatherRows.apply(x), _GatherRows.apply(y)
    labels = torch.arange(len(x), device=x.device) + dist.get_rank() * len(x)
    forward = F.cross_entropy(x @ all_y.T / temperature, labels)
    backward = F.cross_entropy(y @ all_x.T / temperature, labels)
    return (forward + backward) / 2


class SPTStep(nn.Module):
    """``forward`` = the loss terms of one SPT step on this rank's slice, scaled as the module
    docstring says. With scales 1 and no generator it is ``spt_loss`` unchanged (a plain run)."""

    def __init__(
        self, policy: nn.Module, cfg: SPTConfig, gathered: bool = False, generator: torch.Generator | None = None, softmax=None
    ) -> None:
        super().__init__()
        self.policy = policy
        self.cfg = cfg
        self.softmax = softmax  # SampledSoftmax for spt.negatives=sampled|in_batch, None = the full softmax
        self.contrast = gathered_symmetric_info_nce if gathered else symmetric_info_nce
        self.generator = generator

    def forward(
        self, batch: tuple[torch.Tensor, ...], positive: tuple[torch.Tensor, torch.Tensor], rec_scale: float = 1.0
    ) -> Mapping[str, torch.Tensor]:
        terms = spt_loss(self.policy, batch, positive, self.cfg, softmax=self.softmax, contrast=self.contrast, generator=self.generator)
        if rec_scale != 1.0:
            terms["loss_rec"] = terms["loss_rec"] * rec_scale
        return terms


def rec_scale(global_targets: torch.Tensor, local_targets: torch.Tensor, world_size: int) -> float:
    """The factor on this rank's L_rec (module docstring): ``world_size`` x its share of the
    supervised targets of the global batch actually used (every rank's slice)."""
    if world_size == 1:
        return 1.0
    return world_size * float((local_targets > 0).sum()) / max(float((global_targets > 0).sum()), 1.0)
