"""From the `reward` config group to a checked reward function with its item context bound."""

from __future__ import annotations

from hydra.utils import instantiate

from lares_rl.core.errors import LaresError
from lares_rl.rewards.builtin import check_reward_fn
from lares_rl.rewards.context import ItemContext, bind_context


def instantiate_reward(node, num_items: int, context: ItemContext | None = None):
    """The ``reward`` Hydra group -> ``reward(slate, target) -> [B]``, with the item ``context``
    fields it asks for bound (lares_rl/item_context.py), checked on a dummy batch."""

    target = node.get("_target_") if hasattr(node, "get") else None
    try:
        reward_fn = instantiate(node)
    except Exception as err:
        cause = err.__cause__ or err
        detail = " ".join(str(cause).split())
        raise LaresError(
            f"reward._target_={target!r} cannot be instantiated ({type(cause).__name__}: {detail}); point it at a function reward(slate, target) -> [B] float, e.g. lares_rl.rewards.ndcg"
        ) from err
    if not callable(reward_fn):
        raise LaresError(f"reward._target_={target!r} did not give a callable; keep `_partial_: true` in the reward config")
    reward_fn = bind_context(reward_fn, context)
    check_reward_fn(reward_fn, num_items)
    return reward_fn
