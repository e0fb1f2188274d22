"""The RPT learner: actor, frozen reference, the configured algorithm and optimiser, and one update.

Built once from the ``rpt`` config by :func:`build_learner`, which takes the algorithm (its loss
module and what it computes before the loss) from the registry in lares_rl/rpt/algorithms/;
:func:`lares_rl.rpt.loop.train_rpt` drives it over collected batches, and
:func:`lares_rl.rpt.direction.direction_check` over one fixed set of histories. Keeping both on
this one object means the check tests exactly the update that training runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from tensordict import TensorDictBase
from torch import nn

from lares_rl.core.distributed import DistContext
from lares_rl.core.errors import LaresError
from lares_rl.eval.adaptive_depth import default_depth
from lares_rl.policies.actor import make_slate_actor
from lares_rl.rpt.algorithms import algorithm
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.losses import GroupAdvantage, total_loss


@dataclass
class RPTLearner:
    """Everything one RPT update needs; see :func:`build_learner`. ``algorithm`` is the registry
    entry for ``rpt.algorithm`` (lares_rl/rpt/algorithms/): its loss module, value head and
    ``prepare``."""

    cfg: RPTConfig
    policy: nn.Module
    actor: nn.Module
    reference: nn.Module
    algorithm: object
    optimizer: torch.optim.Optimizer
    steps: int = field(default=0)
    ranks: DistContext = field(default_factory=DistContext)  # DDP learners (rpt_distributed): gradients averaged over ranks

    @property
    def loss_module(self) -> nn.Module:
        return self.algorithm.loss_module

    @property
    def value_head(self) -> nn.Module | None:
        return self.algorithm.value_head

    @property
    def group_advantage(self) -> GroupAdvantage | None:  # None with one rollout per history (rpt=expected_pg, group_size 1)
        return self.algorithm.group_advantage

    def prepare(self, batch: TensorDictBase) -> None:
        """Write what the loss reads besides the rollout (the algorithm's ``prepare``): the group
        advantage, and per algorithm the reference's per-step log-probs (grpo), behaviour
        log-probs (grpo with several update epochs) or the value baseline (ppo with ``advantage=value``)."""
        self.algorithm.prepare(batch)

    def update(
        self,
        batch: TensorDictBase,
        *,
        where: str = "",
        kept: str = "The last good checkpoint is kept",
        on_first_terms: Callable[[Mapping[str, torch.Tensor]], None] | None = None,
    ) -> tuple[Mapping[str, torch.Tensor], torch.Tensor]:
        """``cfg.update_epochs`` gradient steps on a prepared batch; returns the last terms and loss.
        ``on_first_terms`` sees the first step's terms before its backward (gradient diagnostics)."""

        for epoch in range(self.cfg.update_epochs):
            try:
                terms = self.loss_module(batch)
            except LaresError as err:  # a reward that broke its contract inside the loss (expected_pg scores every item)
                raise LaresError(f"{err} (RPT {where.rstrip(', ')}); training stopped before this update. {kept}") from None
            loss = total_loss(terms, self.steps, where=where, kept=kept, ranks=self.ranks)
            if epoch == 0 and on_first_terms is not None:
                on_first_terms(terms)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.ranks.average_gradients(self.loss_module.parameters())
            self.optimizer.step()
            self.steps += 1
        return terms, loss


def rollout_halting(cfg: RPTConfig, policy: nn.Module) -> tuple[float, int] | None:
    """``(tol, k_max)`` for the actor's evaluation-mode rollouts when ``rpt.halt_tol`` is set
    (k_max defaults to the policy's evaluation depth), else None: the fixed depth."""

    if cfg.halt_tol is None:
        return None
    return cfg.halt_tol, cfg.halt_k_max or default_depth(policy)


def build_learner(
    policy: nn.Module, cfg: RPTConfig, *, device: torch.device, eval_seed: int, seed: int, reward_fn=None, item_chunk: int | None = None
) -> RPTLearner:
    """The learner for ``cfg.algorithm``; the reference is a frozen copy of ``policy`` as it is now.
    ``reward_fn`` is needed by ``expected_pg``, whose loss evaluates the reward of every item;
    ``item_chunk`` (``eval.item_chunk``): top-K slates from a chunked running top-K (make_slate_actor)."""

    halting = rollout_halting(cfg, policy)
    actor = make_slate_actor(
        policy,
        cfg.slate_size,
        cfg.exploration,
        latent_noise=cfg.latent_noise,
        eval_seed=eval_seed,
        seed=seed,
        latent_sigma=cfg.latent_sigma,
        antithetic=cfg.antithetic,
        halting=halting,
        item_chunk=item_chunk,
    )
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    update = algorithm(cfg.algorithm)(policy, actor, reference, cfg, reward_fn=reward_fn, halting=halting, device=device)
    freeze_parameters(policy, cfg.freeze)
    trainable = [p for p in update.loss_module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return RPTLearner(cfg, policy, actor, reference, update, optimizer)


def freeze_parameters(policy: nn.Module, prefixes: list[str]) -> None:
    """Keep every parameter whose name starts with one of ``prefixes`` at its SPT value (no
    gradient, not in the optimiser): e.g. ``[item_embedding]`` lets RPT change how the reasoner
    reasons but not the item representation SPT learned. A prefix that names nothing is an error."""

    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    names = [name for name, _ in policy.named_parameters()]
    for prefix in prefixes:
        if not any(under(name, prefix) for name in names):
            top = sorted({name.split(".")[0] for name in names})
            raise LaresError(f"rpt.freeze: {prefix!r} names no parameter of this policy; use a module name such as {top}")
    for name, parameter in policy.named_parameters():
        if any(under(name, prefix) for prefix in prefixes):
            parameter.requires_grad_(False)


def set_dropout(policy: nn.Module, p: float) -> int:
    """Set every dropout probability of ``policy`` (dropout modules and attention dropout) to ``p``."""
    changed = 0
    for module in policy.modules():
        if isinstance(module, nn.Dropout) or type(module).__name__ == "FastDropout":
            module.p = p
            changed += 1
        if isinstance(getattr(module, "attn_dropout", None), float):
            module.attn_dropout = p
            changed += 1
    return changed
