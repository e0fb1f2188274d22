"""Samplers for the number of latent reasoning steps k (DESIGN section 1).

``poisson_lognormal`` (reference): tau ~ LogNormal(ln r - s^2/2, s), k = min(Poisson(tau) + 1, 3r).
The lognormal's mean is r, so E[k] is a bit under r + 1 after the cap (about 4.9 for r = 4).
"""

from __future__ import annotations

import math

import torch

STEP_SAMPLERS = ("poisson_lognormal", "uniform", "constant", "none")


def sample_steps(kind: str, mean_recurrence: int, lognormal_s: float = 0.5, generator: torch.Generator | None = None) -> int:
    """Draw one k for a forward call (one k per batch, as in the reference)."""
    r = mean_recurrence
    if kind == "poisson_lognormal":
        mu = math.log(r) - lognormal_s**2 / 2
        tau = torch.exp(mu + lognormal_s * torch.randn((), generator=generator))
        return int(min(torch.poisson(tau.reshape(1), generator=generator).item() + 1, 3 * r))
    if kind == "uniform":
        return int(torch.randint(1, 2 * r + 1, (), generator=generator).item())
    if kind == "constant":
        return r
    if kind == "none":
        return 1
    raise ValueError(f"policy.step_sampler={kind!r} is unknown; choose one of {STEP_SAMPLERS}")


def eval_steps(kind: str, mean_recurrence: int) -> int:
    """The fixed k used at evaluation: the sampler's nominal mean r (1 for ``none``)."""
    return 1 if kind == "none" else mean_recurrence
