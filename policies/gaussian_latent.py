"""The Gaussian latent policy: the action is a perturbed user state, with an exact log-prob."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.envs.utils import ExplorationType, exploration_type

from lares_rl.policies.row_share import RowShare


def latent_scale(user_state: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-row std of the Gaussian latent policy, [B, 1]: ``sigma`` times the root-mean-square of
    the state, detached. Relative to the state's own size, so one ``sigma`` means the same
    perturbation for any d_model or layer norm scale; detached, so the policy cannot lower its
    log-prob's denominator to game the objective."""
    return sigma * user_state.detach().pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-6)


class GaussianLatentScores(TensorDictModuleBase):
    """A Gaussian policy in latent space: the action is a perturbed user state ``h = mu + s * eps``
    with ``mu`` the reasoner's final state (``"user_state"``), ``eps ~ N(0, I)`` and ``s`` from
    :func:`latent_scale`; the slate is then the top-K of ``h``'s scores.

    Unlike the reference's latent exploration (T0 noise, dropout and k, whose probability under the
    policy is not defined), ``log N(h; mu_theta, s^2)`` is an exact, differentiable log-prob of
    what was explored, so a REINFORCE/PPO update on it follows the gradient of the expected reward
    (see :class:`lares_rl.rpt.algorithms.latent_pg.LatentPolicyGradientLoss`).

    ``antithetic``: rows (2i, 2i + 1) get ``eps`` and ``-eps``; with an even group size each pair
    stays inside one history's group, and their advantages then act as a finite difference along
    ``eps`` (much lower variance than independent draws for the same G).

    RANDOM exploration draws ``eps`` from ``generator`` (shared with the
    :class:`~lares_rl.policies.rollout_scores.RolloutScores`, so one saved stream resumes both) and
    writes ``"latent_noise"`` [B, d]; any other exploration type scores ``mu`` itself (evaluation).
    """

    in_keys = ["user_state"]
    out_keys = ["logits", "latent_noise"]

    def __init__(
        self, policy: nn.Module, sigma: float, generator: torch.Generator, antithetic: bool = False, full_scores: bool = True
    ) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma={sigma} must be > 0")
        self.policy, self.sigma, self.generator, self.antithetic = policy, sigma, generator, antithetic
        self.full_scores = full_scores  # False: write the perturbed state as "slate_state" for the chunked slate, no "logits"
        if not full_scores:
            self.out_keys = ["slate_state", "latent_noise"]
        self.share: RowShare | None = None  # set by the DDP learners (lares_rl.rpt.distributed)

    def draw_noise(self, mu: torch.Tensor) -> torch.Tensor:
        """``eps`` for the rows of ``mu`` (with a :class:`RowShare`: drawn for the global batch,
        this rank's rows kept, so antithetic pairs and groups are the one-process run's)."""
        rows = mu.shape[0] if self.share is None else self.share.global_rows(mu.shape[0])
        if self.antithetic:
            if rows % 2:
                raise ValueError(f"antithetic noise pairs rows (2i, 2i + 1); got an odd batch of {rows}")
            half = torch.randn((rows // 2, *mu.shape[1:]), generator=self.generator)
            noise = torch.stack([half, -half], dim=1).reshape(rows, *mu.shape[1:])
        else:
            noise = torch.randn((rows, *mu.shape[1:]), generator=self.generator)
        if self.share is not None:
            noise = self.share.take(noise)
        return noise.to(mu.device, mu.dtype)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        mu = tensordict.get("user_state")
        noise = torch.zeros_like(mu) if exploration_type() != ExplorationType.RANDOM else self.draw_noise(mu)
        state = mu + latent_scale(mu, self.sigma) * noise
        if self.full_scores:
            tensordict.set("logits", self.policy.scores(state))
        else:
            tensordict.set("slate_state", state)
        tensordict.set("latent_noise", noise)
        return tensordict
