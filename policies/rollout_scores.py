"""The latent rollout as a TensorDict module: the first half of every slate actor
(:func:`lares_rl.policies.actor.make_slate_actor`), deciding when a rollout is drawn and when replayed."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.envs.utils import ExplorationType, exploration_type

from lares_rl.policies.rollouts import HISTORY_KEYS, run_rollouts
from lares_rl.policies.row_share import RowShare


class RolloutScores(TensorDictModuleBase):
    """The latent rollout of ``policy`` as a TensorDict module (see :mod:`lares_rl.policies.actor`).

    Args:
        policy: an ``nn.Module`` with ``encode``/``scores``.
        latent_noise: True (default, required by ``exploration="latent"``): RANDOM rollouts run
            the policy in train mode with a per-row k from its sampler, fresh T0 noise and
            dropout. False: RANDOM rollouts are evaluation rollouts too (only item sampling explores).
        eval_seed: seeds the T0 noise of evaluation rollouts (``t0_init=normal`` keeps noise at eval).
        seed: seeds the private generator that draws k and rollout seeds (None: nondeterministic).
        halting: ``(tol, k_max)``: evaluation rollouts stop per row once the state has settled, and
            ``"num_steps"`` records the steps each took (see :func:`run_rollouts`); None: fixed depth.
    """

    in_keys = list(HISTORY_KEYS)
    out_keys = ["logits", "num_steps", "rollout_seed", "user_state"]

    def __init__(
        self,
        policy: nn.Module,
        latent_noise: bool = True,
        eval_seed: int = 0,
        seed: int | None = None,
        dedupe: bool = False,
        halting: tuple[float, int] | None = None,
        full_scores: bool = True,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.full_scores = full_scores  # False: no "logits" (the chunked slate ranks "user_state" itself)
        if not full_scores:
            self.out_keys = [key for key in self.out_keys if key != "logits"]
        self.halting = halting
        self.latent_noise = latent_noise
        self.dedupe = dedupe
        self.eval_seed = eval_seed
        self.share: RowShare | None = None  # set by the DDP learners (lares_rl.rpt.distributed)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def eval_steps(self) -> int:
        """The policy's evaluation depth (states produced in eval mode, >= 1)."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            return max(int(self.policy.sample_steps()), 1) if hasattr(self.policy, "sample_steps") else 1
        finally:
            self.policy.train(was_training)

    def draw(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(num_steps, rollout_seed) for a fresh train-mode rollout of ``batch`` rows (with a
        :class:`RowShare`: drawn for the global batch, this rank's rows kept)."""
        drawn = batch if self.share is None else self.share.global_rows(batch)
        was_training = self.policy.training
        self.policy.train()
        try:
            if hasattr(self.policy, "sample_steps"):
                ks = [max(int(self.policy.sample_steps(self.generator)), 1) for _ in range(drawn)]
            else:
                ks = [1] * drawn
        finally:
            self.policy.train(was_training)
        seed = int(torch.randint(0, 2**62, (), generator=self.generator))
        ks = torch.tensor(ks, dtype=torch.int64)
        if self.share is not None:
            ks = self.share.take(ks)
        return ks.to(device), torch.full((batch,), seed, dtype=torch.int64, device=device)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        items, length = tensordict.get(HISTORY_KEYS[0]), tensordict.get(HISTORY_KEYS[1])
        batch_shape = length.shape
        items, length = items.reshape(-1, items.shape[-1]), length.reshape(-1)
        batch, device = length.shape[0], length.device
        recorded = tensordict.get("num_steps", None) is not None and tensordict.get("rollout_seed", None) is not None
        if exploration_type() == ExplorationType.RANDOM and self.latent_noise:
            num_steps, seeds = self.draw(batch, device)
        elif exploration_type() != ExplorationType.RANDOM and recorded:
            num_steps, seeds = tensordict.get("num_steps").reshape(-1), tensordict.get("rollout_seed").reshape(-1)
        else:
            num_steps = torch.full((batch,), self.eval_steps(), dtype=torch.int64, device=device)
            seeds = torch.full((batch,), -1 - self.eval_seed, dtype=torch.int64, device=device)
        out = run_rollouts(
            self.policy, items, length, num_steps, seeds, dedupe=self.dedupe, halting=self.halting, full_scores=self.full_scores
        )
        if self.full_scores:
            tensordict.set("logits", out["final_scores"].reshape(*batch_shape, -1))
        tensordict.set("user_state", out["final_state"].reshape(*batch_shape, -1))
        tensordict.set("num_steps", out["num_steps"].reshape(batch_shape))
        tensordict.set("rollout_seed", seeds.reshape(batch_shape))
        return tensordict
