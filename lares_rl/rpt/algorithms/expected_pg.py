"""Expected-reward policy gradient (``rpt.algorithm=expected_pg``, the project default).

The exact policy gradient of the item softmax's expected reward: in a logged-replay env the reward
of every item is known, so the gradient needs no sampling. One update on a collected batch::

    collect:    one rollout per history (rpt.group_size 1: no group is needed)
    advantage:  none (with G >= 2 the group advantage is written but not read)
    loss:       -mean_u J(u) + beta KL(pi || pi_ref),  J(u) = sum_i pi(i | u) r(u, i)
                (log J with rpt.objective=log_reward)                    (ExpectedRewardLoss)
    step:       rpt.update_epochs Adam steps on the sum of the loss_* terms
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import LossModule

from lares_rl.core.errors import LaresError
from lares_rl.policies.actor import final_entropy, run_rollouts
from lares_rl.rewards.builtin import check_reward_output
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.losses import add_reference_kl, group_advantage


def one_item_rewards(reward_fn, target: torch.Tensor, num_items: int, max_rows: int = 1 << 21) -> torch.Tensor:
    """[B, N + 1]: the reward of recommending item i alone to row b, ``reward_fn([[i]], target_b)``
    (column 0, the padding id, is 0). For the built-in rewards this is ``1[i = target]`` for the
    accuracy metrics plus the item's own term for novelty / long-tail; a slate-level reward such
    as intra-list diversity is constant here. Evaluated in blocks of at most ``max_rows`` slates."""

    batch = target.shape[0]
    items = torch.arange(1, num_items + 1, device=target.device)
    out = torch.zeros(batch, num_items + 1, dtype=torch.float32, device=target.device)
    rows_per_block = max(1, max_rows // num_items)
    for start in range(0, batch, rows_per_block):
        block = target[start : start + rows_per_block]
        slates = items.repeat(block.shape[0])[:, None]
        values = check_reward_output(reward_fn, reward_fn(slates, block.repeat_interleave(num_items)), slates.shape[0])
        out[start : start + block.shape[0], 1:] = values.reshape(block.shape[0], num_items)
    return out


def check_item_reward_signal(reward_fn, num_items: int, name: str) -> None:
    """Refuse a reward whose one-item value is the same for every item: the expected-reward
    gradient of ``rpt=expected_pg`` would then be exactly zero (e.g. intra-list diversity, which
    needs at least two items in a slate)."""
    probe = torch.arange(1, min(num_items, 8) + 1)
    values = one_item_rewards(reward_fn, probe, num_items)[:, 1:]
    if bool((values == values[:, :1]).all()):
        raise LaresError(
            f"reward {name}: recommending any single item earns the same reward, so rpt=expected_pg (which weighs every item's reward by its probability) has no signal; "
            "use a reward that depends on the item (ndcg, hit, novelty, long_tail, or a weighted mix), or rpt=latent_pg for slate-level rewards such as diversity"
        )


class ExpectedRewardLoss(LossModule):
    """Exact policy gradient of the item policy's expected reward (``rpt=expected_pg``).

    The policy is the served model's own softmax over the catalog, ``pi(i | u) = softmax(s_u)_i``
    (the first slot of :class:`~lares_rl.policies.actor.CategoricalSlate`). In a logged-replay
    environment the reward of *every* item is known, not only of the one that was sampled:
    ``r(u, i)`` is the reward of recommending ``i`` (:func:`one_item_rewards`). So the expected
    reward and its gradient need no sampling at all (the all-action policy gradient, Ciosek &
    Whiteson 2018, "Expected Policy Gradients")::

        J(u) = sum_i pi(i | u) r(u, i),    grad J = sum_i pi(i | u) (r(u, i) - J(u)) grad log pi(i | u)

    which REINFORCE only estimates from G draws. For an accuracy reward ``J = pi(target)``: the
    target's probability, whose gradient weighs each history by how close the model already is;
    with ``ndcg + lambda * long_tail`` it also moves probability mass toward long-tail items.
    ``loss_kl = beta * KL(pi || pi_ref)`` over the catalog keeps the model near its SPT start.

    ``log_objective=True`` maximises ``log J`` instead: for an accuracy reward that is
    ``log pi(target)``, i.e. cross-entropy fine-tuning on the same rows, the supervised baseline
    that tells an RL gain from "more training". (``J``'s gradient is ``pi(target)`` times CE's: it
    discounts the histories whose logged next item the model finds implausible.)

    Reads the history, ``num_steps``/``rollout_seed`` (evaluation-mode rollouts, deduplicated per
    history; ``halting=(tol, k_max)`` replays ``rpt.halt_tol``'s adaptive depth) and
    ``("next", "target")``; the sampled slate is not used by the gradient.
    """

    def __init__(
        self,
        policy: nn.Module,
        reward_fn,
        *,
        num_items: int,
        reference: nn.Module | None = None,
        beta: float = 0.0,
        log_objective: bool = False,
        halting: tuple[float, int] | None = None,
    ) -> None:
        super().__init__()
        if beta < 0 or (beta > 0 and reference is None):
            raise ValueError(f"beta={beta} must be >= 0, and > 0 needs the frozen reference")
        self.policy, self.reward_fn, self.num_items, self.beta, self.log_objective, self.halting = (
            policy,
            reward_fn,
            num_items,
            beta,
            log_objective,
            halting,
        )
        self.__dict__["reference"] = reference  # frozen, kept out of state_dict and parameters()

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        """No value estimator: nothing to forward."""

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        td = tensordict.reshape(-1) if tensordict.ndim != 1 else tensordict
        items, length = td["history", "items"], td["history", "length"]
        num_steps, seeds, target = td["num_steps"].reshape(-1), td["rollout_seed"].reshape(-1), td["next", "target"].reshape(-1)
        rollout = run_rollouts(self.policy, items, length, num_steps, seeds, dedupe=True, halting=self.halting)
        log_p = torch.log_softmax(rollout["final_scores"], dim=-1)
        with torch.no_grad():
            rewards = one_item_rewards(self.reward_fn, target, self.num_items)
        expected = (log_p.exp() * rewards).sum(-1)
        objective = torch.log(expected.clamp(min=1e-12)) if self.log_objective else expected
        out = TensorDict({"loss_policy": -objective.mean()}, batch_size=[])
        if self.beta > 0:
            add_reference_kl(out, log_p, self.reference, self.beta, items, length, num_steps, seeds, self.halting)
        with torch.no_grad():
            out.set("expected_reward", expected.mean())
            out.set("target_log_prob", log_p.gather(1, target[:, None]).mean())
            out.set("entropy", final_entropy(rollout["final_scores"]).mean())
        return out


class ExpectedPG:
    """The ``expected_pg`` entry of the algorithm registry: :class:`ExpectedRewardLoss`, which needs
    ``reward_fn`` (it scores every item) and replays the actor's adaptive depth (``halting``)."""

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
        if reward_fn is None:
            raise ValueError("rpt.algorithm=expected_pg needs the reward function (build_learner(..., reward_fn=...))")
        self.value_head = None
        self.loss_module = ExpectedRewardLoss(
            policy,
            reward_fn,
            num_items=int(policy.num_items),
            reference=reference,
            beta=cfg.beta,
            log_objective=cfg.objective == "log_reward",
            halting=halting,
        )
        self.group_advantage = group_advantage(cfg.group_size)

    @torch.no_grad()
    def prepare(self, batch: TensorDictBase) -> None:
        """The group advantage when there are groups; the loss reads the rest from the rollout."""
        if self.group_advantage is not None:
            self.group_advantage(batch)
