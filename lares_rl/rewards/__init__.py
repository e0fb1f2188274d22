"""Rewards for RPT: ``reward(slate [B, K], target [B]) -> [B]`` functions, the built-in ranking and
beyond-accuracy ones, the registry, and the item context some of them read.

A config names a reward by its import path (``_target_: lares_rl.rewards.ndcg``), so every
built-in is importable from this package.
"""

from lares_rl.rewards.builtin import (
    REWARDS,
    RewardFn,
    check_reward_fn,
    check_reward_output,
    describe_reward,
    diversity,
    embedding_diversity,
    hit,
    long_tail,
    make_reward,
    mrr,
    ndcg,
    novelty,
    recall,
    register_reward,
    target_rank,
    unexposed,
    weighted,
)

__all__ = [
    "REWARDS",
    "RewardFn",
    "check_reward_fn",
    "check_reward_output",
    "describe_reward",
    "diversity",
    "embedding_diversity",
    "hit",
    "long_tail",
    "make_reward",
    "mrr",
    "ndcg",
    "novelty",
    "recall",
    "register_reward",
    "target_rank",
    "unexposed",
    "weighted",
]
