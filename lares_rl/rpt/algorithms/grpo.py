"""GRPO-style RPT, the reference algorithm of LARES (``rpt.algorithm=grpo``; DESIGN section 3).

One update on a collected batch (lares_rl/rpt/loop.py collects it; the learner in
lares_rl/rpt/learner.py runs :meth:`GRPO.prepare`, then the gradient steps)::

    collect:    histories x G rollouts, each with its own k_g, T0 noise and dropout (train mode);
                the env rewards the top-K slate of the last step
    advantage:  A_g = (r_g - mean_G r) / (std_G r + 1e-4)                  (GroupAdvantage)
    reference:  rp_j, the frozen SPT model's log-prob of the target at every step j <= k_g with
                the same k_g (reference_log_probs); with rpt.update_epochs > 1 also the
                behaviour's log-probs (old_step_log_prob) for the clipped ratio
    loss:       mean_g mean_{j<=k_g} -[exp(lp - sg(lp)) A_g - beta (exp(rp - lp) - (rp - lp) - 1)]
                lp: the rollout replayed with grad                       (GroupRelativeLoss)
    step:       rpt.update_epochs Adam steps on the sum of the loss_* terms (one, the reference's)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule

from lares_rl.policies.actor import replay_step_log_probs, run_rollouts
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.losses import group_advantage


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
                "ref_step_log_prob": "the trainer's reference pass (lares_rl.rpt.algorithms.grpo.reference_log_probs)",
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


class GRPO:
    """The ``grpo`` entry of the algorithm registry: :class:`GroupRelativeLoss` over the actor's
    latent rollouts, the group advantage and the reference pass."""

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
        self.policy, self.reference, self.behaviour_log_probs = policy, reference, cfg.update_epochs > 1
        self.value_head = None
        self.loss_module = GroupRelativeLoss(policy, beta=cfg.beta, clip_epsilon=cfg.clip_epsilon if cfg.update_epochs > 1 else None)
        self.group_advantage = group_advantage(cfg.group_size)

    @torch.no_grad()
    def prepare(self, batch: TensorDictBase) -> None:
        """What the loss reads besides the rollout: the group advantage, the reference's per-step
        log-probs and, with several update epochs, the behaviour log-probs."""
        target = batch["next", "target"]
        if self.group_advantage is not None:
            self.group_advantage(batch)
        reference_log_probs(self.reference, batch, target)
        if self.behaviour_log_probs:
            batch.set("old_step_log_prob", replay_step_log_probs(self.policy, batch, target)[0])
