"""Adaptive reasoning depth as a user-facing option: checks that name the config key or argument,
and the scoring function evaluation, sweep-k and the Recommender share.

The computation itself is :func:`lares_rl.policies.halting.encode_until_settled`; this module
turns its ValueErrors into one LaresError naming the key the user set (``eval.halt_tol``,
``--halt-tol``, ``halt_tol=``), so every entry point reports bad input the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

from lares_rl.core.errors import LaresError
from lares_rl.policies.halting import check_halting_args, encode_until_settled


def check_halting(tol: float | None, k_max: int | None, tol_key: str, k_max_key: str) -> None:
    """One LaresError for a tolerance that is not a positive finite number, a ``k_max`` below 1,
    or a ``k_max`` given without a tolerance (it would be silently ignored)."""
    if tol is None:
        if k_max is not None:
            raise LaresError(
                f"{k_max_key}={k_max} has no effect without {tol_key}: it caps adaptive halting, which is off; set {tol_key} (e.g. {tol_key}=0.1) or drop {k_max_key}"
            )
        return
    try:
        check_halting_args(tol, 1)
    except ValueError:
        raise LaresError(
            f"{tol_key}={tol!r} is invalid; the halting tolerance must be a positive finite number (relative change of the user state, e.g. {tol_key}=0.1), or unset for a fixed depth"
        ) from None
    if k_max is not None:
        try:
            check_halting_args(tol, k_max)
        except ValueError:
            raise LaresError(
                f"{k_max_key}={k_max!r} is invalid; the most reasoning steps a user may take must be an integer >= 1"
            ) from None


def check_halting_applies(policy: nn.Module, tol: float | None, tol_key: str) -> None:
    """Halting on a policy without a reasoning core (SASRec) has no steps to stop."""
    if tol is not None and not getattr(policy, "recurrent", False):
        raise LaresError(
            f"{tol_key}={tol} needs a policy with a reasoning core: this one (e.g. SASRec) has a single state and no steps to halt; leave {tol_key} unset"
        )


def default_depth(policy: nn.Module) -> int:
    """The policy's evaluation depth (mean_recurrence), the cap when no ``k_max`` is given."""
    was_training = policy.training
    policy.eval()
    try:
        return int(policy.sample_steps())
    finally:
        policy.train(was_training)


class SettledScores:
    """``score(seq, lengths) -> [B, N + 1]`` with adaptive halting; keeps the steps every scored
    user took (``steps``, one tensor per call) for the mean and the histogram."""

    def __init__(self, policy: nn.Module, tol: float, k_max: int) -> None:
        self.policy, self.tol, self.k_max = policy, float(tol), int(k_max)
        self.steps: list[torch.Tensor] = []

    def __call__(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        states, steps = encode_until_settled(self.policy, seq, lengths, self.tol, self.k_max)
        self.steps.append(steps.cpu())
        return self.policy.scores(states)

    def all_steps(self) -> torch.Tensor:
        return torch.cat(self.steps) if self.steps else torch.zeros(0, dtype=torch.int64)


def steps_histogram(steps: torch.Tensor | Sequence[int]) -> dict[int, int]:
    """Users per number of steps taken, ascending: ``{2: 610, 3: 333}``."""
    values = steps.tolist() if isinstance(steps, torch.Tensor) else list(steps)
    return dict(sorted(Counter(int(v) for v in values).items()))


def format_histogram(histogram: dict[int, int]) -> str:
    """One line for a log: ``steps taken: 2: 610 users (64.7%), 3: 333 (35.3%)``."""
    total = sum(histogram.values()) or 1
    parts = [
        f"{k}: {n} users ({100 * n / total:.1f}%)" if i == 0 else f"{k}: {n} ({100 * n / total:.1f}%)"
        for i, (k, n) in enumerate(histogram.items())
    ]
    return "steps taken: " + ", ".join(parts)
