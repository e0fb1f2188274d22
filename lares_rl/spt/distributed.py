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

Numerics (``precision``, ``compile``; lares_rl/core/precision.py). The step module takes the run's
numerics when it is built: with bf16 the whole step runs under bf16 autocast (the loss terms keep
their log-sum-exps and InfoNCE in fp32), and with compile the policy's reasoner blocks are swapped
for TorchInductor-compiled copies for the duration of each step only, so evaluation, checkpoints
and whatever else uses the policy between steps see the plain modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lares_rl.core.precision import bf16_autocast, current_numerics
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

    if torch.is_autocast_enabled(x.device.type):  # fp32, as symmetric_info_nce runs under autocast
        with torch.autocast(x.device.type, enabled=False):
            return gathered_symmetric_info_nce(x.float(), y.float(), similarity, temperature)
    if similarity == "cosine":
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    all_x, all_y = _GatherRows.apply(x), _GatherRows.apply(y)
    labels = torch.arange(len(x), device=x.device) + dist.get_rank() * len(x)
    forward = F.cross_entropy(x @ all_y.T / temperature, labels)
    backward = F.cross_entropy(y @ all_x.T / temperature, labels)
    return (forward + backward) / 2


# The policy's attributes that hold its reasoner blocks (LARES: both; SASRec: the pre-block alone).
COMPILED_BLOCKS = ("pre_block", "core_block")


def compiled_blocks(policy: nn.Module) -> dict[str, nn.Module]:
    """TorchInductor-compiled copies (sharing the parameters) of ``policy``'s reasoner blocks, by
    attribute name. Dropout draws from torch's own generator (``fallback_random``): Inductor's
    in-graph generator ran the dropout layers a quarter slower on the CPU measured."""
    blocks = {name: getattr(policy, name, None) for name in COMPILED_BLOCKS}
    return {name: torch.compile(block, options={"fallback_random": True}) for name, block in blocks.items() if isinstance(block, nn.Module)}


@contextlib.contextmanager
def swapped_blocks(policy: nn.Module, blocks: Mapping[str, nn.Module]) -> Iterator[None]:
    """``policy`` runs with ``blocks`` in place of its own inside this block, and gets its own back after."""
    originals = {name: getattr(policy, name) for name in blocks}
    for name, block in blocks.items():
        setattr(policy, name, block)
    try:
        yield
    finally:
        for name, block in originals.items():
            setattr(policy, name, block)


class SPTStep(nn.Module):
    """``forward`` = the loss terms of one SPT step on this rank's slice, scaled as the module
    docstring says. With scales 1, no generator and fp32 eager numerics (outside any
    ``use_numerics`` block) it is ``spt_loss`` unchanged (a plain run)."""

    def __init__(
        self, policy: nn.Module, cfg: SPTConfig, gathered: bool = False, generator: torch.Generator | None = None, softmax=None
    ) -> None:
        super().__init__()
        self.policy = policy
        self.cfg = cfg
        self.softmax = softmax  # SampledSoftmax for spt.negatives=sampled|in_batch, None = the full softmax
        self.contrast = gathered_symmetric_info_nce if gathered else symmetric_info_nce
        self.generator = generator
        self.numerics = current_numerics()  # the run's precision and compile choice (lares_rl/core/precision.py)
        self.compiled = compiled_blocks(policy) if self.numerics.compile else {}  # a plain dict: not submodules

    def forward(
        self, batch: tuple[torch.Tensor, ...], positive: tuple[torch.Tensor, torch.Tensor], rec_scale: float = 1.0
    ) -> Mapping[str, torch.Tensor]:
        with bf16_autocast(self.numerics, batch[0].device), swapped_blocks(self.policy, self.compiled):
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
