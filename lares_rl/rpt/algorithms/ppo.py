"""PPO over a slate distribution (``rpt.algorithm=ppo``): TorchRL's ClipPPOLoss, the standard algorithm.

The actor samples the slate (``rpt.exploration=plackett_luce`` or ``categorical``) and records its
log-prob. One update on a collected batch::

    collect:    histories x G sampled slates
    advantage:  the group advantage (rpt.advantage=group), or r - V(user state) from a small
                learned value head (rpt.advantage=value), which the loss also fits to the reward
    loss:       ClipPPOLoss: -min(ratio A, clip(ratio, 1 - eps, 1 + eps) A) (+ the critic's loss)
    step:       rpt.update_epochs Adam steps on the sum of the loss_* terms
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import ClipPPOLoss

from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.losses import group_advantage


def make_value_head(
    d_model: int, hidden: int = 64, in_key: NestedKey = "user_state", out_key: NestedKey = "state_value"
) -> TensorDictModule:
    """A small MLP baseline V(final user state) for ``ClipPPOLoss`` (``rpt.advantage=value``).

    It reads the user state recorded at collection (no gradient reaches the policy through it),
    so the critic only fits its own weights; with horizon 1 its target is the reward itself.
    """
    net = nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    return TensorDictModule(net, in_keys=[in_key], out_keys=[out_key])


class PPO:
    """The ``ppo`` entry of the algorithm registry: ClipPPOLoss over the slate actor, with the
    group advantage or a value head (built on ``device``)."""

    def __init__(
        self,
        policy: nn.Module,
        actor: nn.Module,
        reference: nn.Module,
        cfg: RPTConfig,
        *,
        reward_fn,
        halting: tuple[float, int] | None,
        device: torch.device,
    ) -> None:
        self.value_head = make_value_head(int(policy.d_model), cfg.value_hidden).to(device) if cfg.advantage == "value" else None
        self.loss_module = ClipPPOLoss(
            actor,
            self.value_head,
            clip_epsilon=cfg.clip_epsilon,
            entropy_bonus=False,
            critic_coeff=1.0 if self.value_head is not None else None,
            normalize_advantage=cfg.advantage == "value",
        )
        self.group_advantage = group_advantage(cfg.group_size)

    @torch.no_grad()
    def prepare(self, batch: TensorDictBase) -> None:
        """The group advantage, replaced by the value baseline's when there is a value head."""
        if self.group_advantage is not None:
            self.group_advantage(batch)
        if self.value_head is not None:
            value = self.value_head(batch.select("user_state").clone())["state_value"]
            batch.set("value_target", batch["next", "reward"])
            batch.set("advantage", batch["next", "reward"] - value)
