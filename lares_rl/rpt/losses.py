"""The primitives every RPT algorithm is built from (lares_rl/rpt/algorithms/): the group-relative
advantage, the exact KL to the frozen reference over the catalog, the total loss with its
non-finite check, and the gradient steps of one update.

- :class:`GroupAdvantage` writes ``"advantage"`` = (r - mean_G r) / (std_G r + eps) over contiguous
  blocks of G rows (the G rollouts of one history, as :class:`~lares_rl.envs.NextItemEnv` lays
  them out). It is its own module, like TorchRL's ``MCAdvantage`` for GRPO: the loss only reads it.
- :func:`add_reference_kl` is the ``loss_kl`` of ``latent_pg`` and ``expected_pg``.
- :func:`total_loss` sums the ``loss_*`` terms and stops training on a non-finite one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from lares_rl.core.distributed import DistContext
from lares_rl.core.errors import LaresError
from lares_rl.policies.actor import catalog_kl, run_rollouts


class GroupAdvantage(TensorDictModuleBase):
    """Group-relative advantage of GRPO over contiguous groups of ``group_size`` rows.

    ``A_g = (r_g - mean_G r) / (std_G r + eps)``, std with Bessel's correction (torch's default,
    as in common GRPO implementations). Writes ``advantage`` with the reward's shape ([B, 1]) and
    ``group_zero_adv`` (bool [B]): True for rows whose group had identical rewards (A = 0, no signal).

    Args:
        group_size: G (>= 2), rows per history; the batch must be a multiple of it.
        eps: added to the std (default 1e-4, the reference's).
        reward_key, advantage_key, zero_adv_key: tensordict keys.

    Example::

        >>> td = TensorDict({"next": {"reward": torch.tensor([[1.], [0.], [0.], [0.]])}}, [4])
        >>> GroupAdvantage(2)(td)["advantage"].squeeze(-1)
        tensor([0.7070, -0.7070, 0.0000, 0.0000])
    """

    def __init__(
        self,
        group_size: int,
        eps: float = 1e-4,
        reward_key: NestedKey = ("next", "reward"),
        advantage_key: NestedKey = "advantage",
        zero_adv_key: NestedKey = "group_zero_adv",
    ) -> None:
        super().__init__()
        if group_size < 2:
            raise ValueError(f"group_size={group_size} must be >= 2 (group advantage undefined)")
        self.group_size, self.eps = group_size, eps
        self.reward_key, self.advantage_key, self.zero_adv_key = reward_key, advantage_key, zero_adv_key
        self.in_keys = [reward_key]
        self.out_keys = [advantage_key, zero_adv_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        reward = tensordict.get(self.reward_key)
        if reward.numel() % self.group_size:
            raise ValueError(f"{reward.numel()} rewards do not split into groups of {self.group_size} contiguous rows")
        groups = reward.reshape(-1, self.group_size).float()
        std = groups.std(dim=1, keepdim=True)
        advantage = (groups - groups.mean(dim=1, keepdim=True)) / (std + self.eps)
        zero = (groups == groups[:, :1]).all(dim=1, keepdim=True).expand_as(groups)
        tensordict.set(self.advantage_key, advantage.reshape(reward.shape))
        tensordict.set(self.zero_adv_key, zero.reshape(tensordict.batch_size))
        return tensordict


def group_advantage(group_size: int) -> GroupAdvantage | None:
    """The group advantage over ``group_size`` rollouts per history; None with one rollout per
    history (``rpt=expected_pg``, group_size 1), which has no groups."""
    return GroupAdvantage(group_size) if group_size >= 2 else None


def add_reference_kl(
    out: TensorDict,
    log_p: torch.Tensor,
    reference: nn.Module,
    beta: float,
    items: torch.Tensor,
    length: torch.Tensor,
    num_steps: torch.Tensor,
    seeds: torch.Tensor,
    halting: tuple[float, int] | None,
) -> None:
    """Write ``loss_kl = beta * KL(pi || pi_ref)`` (exact, over the catalog softmax of the final
    step) and its detached ``kl_to_ref`` into ``out``; the frozen reference replays the same
    evaluation-mode rollouts (same seeds, dedupe and halting) as the policy's ``log_p``."""
    with torch.no_grad():
        ref = run_rollouts(reference, items, length, num_steps, seeds, train=False, dedupe=True, halting=halting)["final_scores"]
    kl = catalog_kl(log_p, torch.log_softmax(ref, dim=-1))
    out.set("loss_kl", beta * kl.mean())
    out.set("kl_to_ref", kl.mean().detach())


def total_loss(
    terms: Mapping[str, torch.Tensor],
    step: int,
    *,
    where: str = "",
    kept: str = "The last good checkpoint is kept",
    ranks: DistContext | None = None,
) -> torch.Tensor:
    """Sum of the ``loss_*`` entries; a NaN/inf term stops training naming the term, where it
    happened (``where``, e.g. "epoch 3, batch 2/7, ") and the step, and what was kept (``kept``).
    With DDP ``ranks`` every rank stops at once (the others would wait in the gradient all-reduce)."""
    bad = [name for name, value in terms.items() if name.startswith("loss_") and not torch.isfinite(value).all()]
    if ranks is not None and ranks.any(bool(bad)) and not bad:
        raise LaresError(
            f"another rank hit a non-finite loss at RPT {where}step {step}; training stopped before this update. {kept}. Lower rpt.lr or raise rpt.beta"
        )
    if bad:
        value = terms[bad[0]].detach()
        raise LaresError(
            f"non-finite {bad[0]} ({value[~torch.isfinite(value)].reshape(-1)[0].item()}) at RPT {where}step {step}; training stopped before this update. {kept}. Lower rpt.lr or raise rpt.beta"
        )
    return sum(v for name, v in terms.items() if name.startswith("loss_"))
