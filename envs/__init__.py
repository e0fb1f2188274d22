"""Gymnasium and TorchRL environments for next-item recommendation (DESIGN section 3).

``NextItemGymEnv`` (gymnasium, registered as ``lares_rl/NextItem-v0``) and ``NextItemEnv``
(batched TorchRL ``EnvBase``, the training path). ``NextItemEnv`` is imported on first access:
importing torchrl is slow and switches multiprocessing to spawn, which a gymnasium-only user
should not pay for.
"""

import gymnasium

from lares_rl.envs.episodes import Episodes, episodes_from_rows, make_episodes
from lares_rl.envs.gym_env import NextItemGymEnv

GYM_ID = "lares_rl/NextItem-v0"
if GYM_ID not in gymnasium.registry:
    gymnasium.register(id=GYM_ID, entry_point="lares_rl.envs.gym_env:NextItemGymEnv")

__all__ = ["GYM_ID", "Episodes", "NextItemEnv", "NextItemGymEnv", "episodes_from_rows", "make_episodes"]


def __getattr__(name: str) -> type:
    if name == "NextItemEnv":  # lazily: the batched env needs TorchRL, the gymnasium env must not
        from lares_rl.envs.batched_env import NextItemEnv

        return NextItemEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
