"""RPT objectives as TorchRL modules: the group-relative advantage and the LARES GRPO-style loss.

- :class:`GroupAdvantage` writes ``"advantage"`` = (r - mean_G r) / (std_G r + eps) over contiguous
  blocks of G rows (the G rollouts of one history, as :class:`~lares_rl.envs.NextItemEnv` lays
  them out). It is its own module, like TorchRL's ``MCAdvantage`` for GRPO: the loss only reads it.
- :class:`GroupRelativeLoss` is the reference RPT objective (DESIGN section 3).
- :class:`LatentPolicyGradientLoss` is a true policy gradient over a Gaussian latent action
  (``rpt=latent_pg``), because the reference objective does not follow the reward.
- :class:`ExpectedRewardLoss` is the exact (all-action) policy gradient of the item softmax's
  expected reward (``rpt=expected_pg``, the default): no sampling noise, since every item's
  reward is known.
- :func:`make_value_head` is the optional learned baseline for ``ClipPPOLoss`` (``rpt.advantage=value``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule

from lares_rl.core.distributed import DistContext
from lares_rl.core.errors import LaresError
from lares_rl.policies.actor import catalog_kl, final_entropy, latent_scale, run_rollouts
from lares_rl.rewards.builtin import check_reward_output


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


class GroupRelativeLoss(LossModule):
    """Critic-free group-relative objective of LARES RPT (Liu et al., "LARES: Latent Reasoning for
    Sequential Recommendation", arXiv 2505.16865; DESIGN section 3).

    For rollout g of a history (its own depth k_g, T0 noise and dropout), with the held-out item
    v*, ``lp_j = log softmax(s_j)[v*]`` of the policy replayed WITH grad on the recorded rollout
    and ``rp_j`` the frozen reference's log-prob with the same k_g::

        loss_g = mean_{j <= k_g} -[ exp(lp_j - sg(lp_j)) A_g - beta (exp(rp_j - lp_j) - (rp_j - lp_j) - 1) ]

    averaged over rollouts. ``loss_policy`` holds the first term, ``loss_kl`` the beta-weighted
    k3 estimator of KL(pi || ref); their sum is the objective.

    Args:
        policy: the ``nn.Module`` with ``encode``/``scores`` that acted (the actor's policy).
        beta: KL weight (default 1.0, the reference's).
        clip_epsilon: None (default, the reference: one gradient step per batch, ratio
            ``exp(lp - sg(lp)) = 1``). A float enables several clipped epochs over one batch:
            the ratio is taken against ``old_step_log_prob`` (behaviour log-probs recorded after
            collection) and clipped PPO-style; ``clip_fraction`` is then reported.

    Reads (``set_keys`` renames any of them; an unknown name raises ValueError listing them):

    - ``advantage`` [B, 1] or [B], written by :class:`GroupAdvantage`;
    - ``target`` [B], the item the env revealed, ``("next", "target")``;
    - ``num_steps`` [B], ``rollout_seed`` [B]: the rollout, written by the actor;
    - ``ref_step_log_prob`` [B, k_max]: the frozen reference's per-step log-probs of the target;
    - ``old_step_log_prob`` [B, k_max]: only with ``clip_epsilon``;
    - ``history_items``, ``history_length``: the observation.

    Returns a TensorDict with empty batch size: ``loss_policy``, ``loss_kl`` and, detached for
    logging, ``kl_to_ref``, ``target_log_prob`` (final step), ``entropy`` (final-step softmax),
    ``advantage_std``, ``ratio_mean`` (+ ``clip_fraction``).

    .. note:: LossModule.forward runs under DETERMINISTIC exploration; this loss does not depend on
        it: the replay always reproduces the recorded rollout (train-mode seeds replay in train
        mode, dropout and T0 noise included).

    Example (four rollouts of one history with depths 1..4; the policy is its own reference)::

        >>> policy = LaresReasoner(num_items=20, max_len=4, d_model=8, n_heads=2, inner_size=16)
        >>> td = TensorDict({"history": {"items": torch.tensor([[3, 5, 0, 0]] * 4), "length": torch.tensor([2] * 4)},
        ...                  "num_steps": torch.tensor([1, 2, 3, 4]), "rollout_seed": torch.zeros(4, dtype=torch.long),
        ...                  "next": {"target": torch.tensor([7] * 4), "reward": torch.tensor([[1.], [0.], [0.], [0.]])}}, [4])
        >>> td = GroupAdvantage(group_size=4)(td)
        >>> with torch.no_grad():
        ...     ref = run_rollouts(policy, td["history", "items"], td["history", "length"], td["num_steps"],
        ...                        td["rollout_seed"], td["next", "target"], train=False)
        >>> td["ref_step_log_prob"] = ref["step_log_prob"]
        >>> out = GroupRelativeLoss(policy, beta=1.0)(td)
        >>> sorted(out.keys())
        ['advantage_std', 'entropy', 'kl_to_ref', 'loss_kl', 'loss_policy', 'ratio_mean', 'target_log_prob']
        >>> (out["loss_policy"] + out["loss_kl"]).backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys read by :class:`GroupRelativeLoss` (see its docstring)."""

        advantage: NestedKey = "advantage"
        target: NestedKey = ("next", "target")
        num_steps: NestedKey = "num_steps"
        rollout_seed: NestedKey = "rollout_seed"
        ref_step_log_prob: NestedKey = "ref_step_log_prob"
        old_step_log_prob: NestedKey = "old_step_log_prob"
        history_items: NestedKey = ("history", "items")
        history_length: NestedKey = ("history", "length")

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(self, policy: nn.Module, *, beta: float = 1.0, clip_epsilon: float | None = None) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta={beta} must be >= 0")
        if clip_epsilon is not None and not 0 < clip_epsilon < 1:
            raise ValueError(f"clip_epsilon={clip_epsilon} must be in (0, 1) or None")
        self.policy = policy
        self.beta = beta
        self.clip_epsilon = clip_epsilon

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        """No value estimator: nothing to forward."""

    def set_keys(self, **kwargs) -> None:
        """Rename tensordict keys, e.g. ``loss.set_keys(advantage=("rpt", "advantage"))``."""
        accepted = list(self._AcceptedKeys.__dataclass_fields__)
        unknown = [name for name in kwargs if name not in accepted]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} is not an accepted tensordict key of {type(self).__name__}; accepted keys are: {', '.join(accepted)}"
            )
        super().set_keys(**kwargs)

    @property
    def in_keys(self) -> list[NestedKey]:
        keys = self.tensor_keys
        names = ["advantage", "target", "num_steps", "rollout_seed", "ref_step_log_prob", "history_items", "history_length"]
        if self.clip_epsilon is not None:
            names.append("old_step_log_prob")
        return [getattr(keys, name) for name in names]

    @in_keys.setter
    def in_keys(self, value) -> None:  # LossModule's base class assigns it; the keys come from tensor_keys
        pass

    @property
    def out_keys(self) -> list[str]:
        keys = ["loss_policy", "loss_kl", "kl_to_ref", "target_log_prob", "entropy", "advantage_std", "ratio_mean"]
        return keys + (["clip_fraction"] if self.clip_epsilon is not None else [])

    @out_keys.setter
    def out_keys(self, value) -> None:
        pass

    def _get(self, tensordict: TensorDictBase, name: str) -> torch.Tensor:
        key = getattr(self.tensor_keys, name)
        value = tensordict.get(key, None)
        if value is None:
            writer = {
                "advantage": "GroupAdvantage",
                "ref_step_log_prob": "the trainer's reference pass (lares_rl.rpt.losses.reference_log_probs)",
                "old_step_log_prob": "the trainer after collection",
                "target": "the env step",
            }.get(name, "the actor")
            raise KeyError(f"{type(self).__name__} needs {key!r} ({name}), which should have been written by {writer}")
        return value

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        td = tensordict.reshape(-1) if tensordict.ndim != 1 else tensordict
        advantage = self._get(td, "advantage").reshape(-1).detach()
        target = self._get(td, "target").reshape(-1)
        rollout = run_rollouts(
            self.policy,
            self._get(td, "history_items"),
            self._get(td, "history_length"),
            self._get(td, "num_steps").reshape(-1),
            self._get(td, "rollout_seed").reshape(-1),
            target,
        )
        lp, mask = rollout["step_log_prob"], rollout["step_mask"]
        ref = self._get(td, "ref_step_log_prob")[:, : lp.shape[1]].detach()
        maskf = mask.to(lp.dtype)
        steps = maskf.sum(1)

        if self.clip_epsilon is None:
            log_ratio = lp - lp.detach()
            gain = log_ratio.exp() * advantage[:, None]
        else:
            old = self._get(td, "old_step_log_prob")[:, : lp.shape[1]].detach()
            log_ratio = torch.where(mask, lp - old, torch.zeros_like(lp))
            ratio = log_ratio.exp()
            clipped = ratio.clamp(1 - self.clip_epsilon, 1 + self.clip_epsilon)
            gain = torch.minimum(ratio * advantage[:, None], clipped * advantage[:, None])
        diff = torch.where(mask, ref - lp, torch.zeros_like(lp))
        kl = diff.exp() - diff - 1

        per_rollout_gain = (gain * maskf).sum(1) / steps
        per_rollout_kl = (kl * maskf).sum(1) / steps
        out = TensorDict(
            {
                "loss_policy": -per_rollout_gain.mean(),
                "loss_kl": self.beta * per_rollout_kl.mean(),
            },
            batch_size=[],
        )
        with torch.no_grad():  # for logging
            final = lp.gather(1, (steps.long() - 1).clamp(min=0)[:, None]).squeeze(1)
            out.set("kl_to_ref", per_rollout_kl.mean().detach())
            out.set("target_log_prob", final.mean().detach())
            out.set("entropy", rollout["entropy"].mean().detach())
            out.set("advantage_std", advantage.std() if advantage.numel() > 1 else advantage.new_zeros(()))
            out.set("ratio_mean", ((log_ratio.exp() * maskf).sum() / maskf.sum()).detach())
            if self.clip_epsilon is not None:
                outside = (log_ratio.exp() - 1).abs() > self.clip_epsilon
                out.set("clip_fraction", ((outside & mask).sum() / mask.sum()).to(lp.dtype))
        return out


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


class LatentPolicyGradientLoss(LossModule):
    """Policy gradient of a Gaussian policy over the reasoner's final user state (``rpt=latent_pg``).

    The reference objective contrasts rollouts that differ by k, T0 noise and dropout, whose
    probability under the policy is not defined, and scores them by the target's log-prob, which
    the sampled slate never enters: its expected update does not follow the reward. Here the
    explored quantity is the latent action itself, ``h_g = mu + s eps_g`` (:class:`GaussianLatentScores`),
    whose log-prob ``log N(h_g; mu_theta, s^2)`` is exact, so with the group advantage ``A_g``::

        loss_policy = -mean_g min(rho_g A_g, clip(rho_g, 1 - eps, 1 + eps) A_g),
        rho_g = N(h_g; mu_theta, s^2) / N(h_g; mu_old, s^2)

    is REINFORCE with a group baseline (rho = 1, gradient ``A_g eps_g / s`` through ``mu``) on the
    first update and PPO's clipped surrogate on later ones: an unbiased estimate of the gradient of
    the expected reward of the perturbed state, which, for a small ``s``, is the greedy ranking the
    model serves. ``loss_kl = beta * KL(pi_theta || pi_ref)`` over the full catalog softmax of the
    final step (exact, not a one-item estimator) keeps the post-trained model near its SPT start.

    Args:
        policy: the acting ``nn.Module`` (``encode``/``scores``).
        sigma: the relative scale of the Gaussian (:func:`~lares_rl.policies.actor.latent_scale`).
        reference: the frozen SPT model, needed when ``beta > 0``.
        beta: KL weight (0 = no KL term).
        clip_epsilon: PPO clip on the latent likelihood ratio (matters from the second update on).
        halting: ``(tol, k_max)`` when the actor's rollouts halt adaptively (``rpt.halt_tol``): the
            replay then halts the same way, so ``mu_theta`` is the state the actor served.

    Reads ``advantage``, ``user_state`` (mu at collection), ``latent_noise`` (eps), ``num_steps``,
    ``rollout_seed``, the history and ``("next", "target")`` (for the logged target log-prob).
    """

    def __init__(
        self,
        policy: nn.Module,
        *,
        sigma: float,
        reference: nn.Module | None = None,
        beta: float = 0.0,
        clip_epsilon: float = 0.2,
        halting: tuple[float, int] | None = None,
    ) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma={sigma} must be > 0")
        if beta < 0 or (beta > 0 and reference is None):
            raise ValueError(f"beta={beta} must be >= 0, and > 0 needs the frozen reference")
        if not 0 < clip_epsilon < 1:
            raise ValueError(f"clip_epsilon={clip_epsilon} must be in (0, 1)")
        self.policy, self.sigma, self.beta, self.clip_epsilon, self.halting = policy, sigma, beta, clip_epsilon, halting
        self.__dict__["reference"] = reference  # frozen and not a parameter of this loss: kept out of state_dict and parameters()

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        """No value estimator: nothing to forward."""

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        td = tensordict.reshape(-1) if tensordict.ndim != 1 else tensordict
        for key in ("advantage", "user_state", "latent_noise", "num_steps", "rollout_seed"):
            if td.get(key, None) is None:
                raise KeyError(
                    f"{type(self).__name__} needs {key!r}; collect with rpt.exploration=gaussian (make_slate_actor(..., exploration='gaussian'))"
                )
        advantage = td["advantage"].reshape(-1).detach()
        items, length, num_steps, seeds = (
            td["history", "items"],
            td["history", "length"],
            td["num_steps"].reshape(-1),
            td["rollout_seed"].reshape(-1),
        )
        target = td["next", "target"].reshape(-1)
        rollout = run_rollouts(self.policy, items, length, num_steps, seeds, dedupe=True, halting=self.halting)
        mu, old_mu, noise = rollout["final_state"], td["user_state"].detach(), td["latent_noise"].detach()
        scale = latent_scale(old_mu, self.sigma)
        action = old_mu + scale * noise
        log_ratio = (noise.pow(2).sum(-1) - ((action - mu) / scale).pow(2).sum(-1)) / 2
        ratio = log_ratio.exp()
        clipped = ratio.clamp(1 - self.clip_epsilon, 1 + self.clip_epsilon)
        gain = torch.minimum(ratio * advantage, clipped * advantage)
        log_p = torch.log_softmax(rollout["final_scores"], dim=-1)
        out = TensorDict({"loss_policy": -gain.mean()}, batch_size=[])
        if self.beta > 0:
            add_reference_kl(out, log_p, self.reference, self.beta, items, length, num_steps, seeds, self.halting)
        with torch.no_grad():
            out.set("target_log_prob", log_p.gather(1, target[:, None]).mean())
            out.set("entropy", final_entropy(rollout["final_scores"]).mean())
            out.set("advantage_std", advantage.std() if advantage.numel() > 1 else advantage.new_zeros(()))
            out.set("ratio_mean", ratio.mean())
            out.set("clip_fraction", ((ratio - 1).abs() > self.clip_epsilon).float().mean())
        return out


def make_value_head(
    d_model: int, hidden: int = 64, in_key: NestedKey = "user_state", out_key: NestedKey = "state_value"
) -> TensorDictModule:
    """A small MLP baseline V(final user state) for ``ClipPPOLoss`` (``rpt.advantage=value``).

    It reads the user state recorded at collection (no gradient reaches the policy through it),
    so the critic only fits its own weights; with horizon 1 its target is the reward itself.
    """
    net = nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    return TensorDictModule(net, in_keys=[in_key], out_keys=[out_key])


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


@torch.no_grad()
def reference_log_probs(reference: nn.Module, batch, target: torch.Tensor, noise_offset: int = 1) -> None:
    """Write ``ref_step_log_prob`` [B, k_max] and ``ref_step_mask``: the frozen reference (eval mode,
    its own T0 noise) at every step j <= k_g of each rollout's depth."""

    out = run_rollouts(
        reference,
        batch["history", "items"],
        batch["history", "length"],
        batch["num_steps"],
        batch["rollout_seed"],
        target,
        train=False,
        noise_offset=noise_offset,
    )
    batch.set("ref_step_log_prob", out["step_log_prob"])
    batch.set("ref_step_mask", out["step_mask"])


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
