"""Latent policy gradient (``rpt.algorithm=latent_pg``): REINFORCE / PPO over a Gaussian latent action.

Why: the reference update does not follow the reward (:class:`LatentPolicyGradientLoss`). One
update on a batch collected with ``rpt.exploration=gaussian`` (the actor perturbs the final user
state, h_g = mu + s eps_g, and recommends the top-K slate of h_g)::

    collect:    histories x G rollouts, each with its own latent noise eps_g
    advantage:  A_g = (r_g - mean_G r) / (std_G r + 1e-4)                  (GroupAdvantage)
    loss:       -mean_g min(rho_g A_g, clip(rho_g, 1 - eps, 1 + eps) A_g) + beta KL(pi || pi_ref),
                rho_g = N(h_g; mu_theta, s^2) / N(h_g; mu_old, s^2)     (LatentPolicyGradientLoss)
    step:       rpt.update_epochs Adam steps on the sum of the loss_* terms
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import LossModule

from lares_rl.policies.actor import final_entropy, latent_scale, run_rollouts
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.losses import add_reference_kl, group_advantage


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


class LatentPG:
    """The ``latent_pg`` entry of the algorithm registry: :class:`LatentPolicyGradientLoss` (which
    replays the actor's adaptive depth, ``halting``) and the group advantage."""

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
        self.value_head = None
        self.loss_module = LatentPolicyGradientLoss(
            policy, sigma=cfg.latent_sigma, reference=reference, beta=cfg.beta, clip_epsilon=cfg.clip_epsilon, halting=halting
        )
        self.group_advantage = group_advantage(cfg.group_size)

    @torch.no_grad()
    def prepare(self, batch: TensorDictBase) -> None:
        """The group advantage; the loss reads the rest from the rollout."""
        if self.group_advantage is not None:
            self.group_advantage(batch)
