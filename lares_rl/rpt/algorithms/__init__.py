"""The RPT algorithms, one module each, and the registry that maps ``rpt.algorithm`` to them.

Each module reads top to bottom: the update it makes (its docstring), its loss module, and a class
that the learner (lares_rl/rpt/learner.py) builds as ``cls(policy, actor, reference, cfg,
reward_fn=..., halting=..., device=...)`` and uses through ``loss_module``, ``value_head`` (None
without a critic) and ``prepare(batch)`` (the advantage and whatever else the loss reads besides
the rollout). The shared pieces (group advantage, reference KL, total loss) are in lares_rl/rpt/losses.py.
"""

from __future__ import annotations

from lares_rl.core.errors import LaresError
from lares_rl.rpt.algorithms.expected_pg import ExpectedPG
from lares_rl.rpt.algorithms.grpo import GRPO
from lares_rl.rpt.algorithms.latent_pg import LatentPG
from lares_rl.rpt.algorithms.ppo import PPO

ALGORITHMS = {"grpo": GRPO, "ppo": PPO, "latent_pg": LatentPG, "expected_pg": ExpectedPG}


def algorithm(name: str) -> type:
    """The class registered under ``rpt.algorithm=name``."""
    if name not in ALGORITHMS:
        raise LaresError(f"rpt.algorithm: unknown {name!r}")
    return ALGORITHMS[name]
