"""Rewards are swapped through Hydra: a built-in option or a user function by ``_target_``."""

import pytest
import torch

from lares_rl.commands.schemas import compose_config
from lares_rl.core.errors import LaresError
from lares_rl.rewards.build import instantiate_reward

SLATE = torch.tensor([[5, 3, 9], [1, 2, 3], [7, 8, 4]])
TARGET = torch.tensor([5, 3, 6])


def reward_from_overrides(*overrides: str):
    return instantiate_reward(compose_config(list(overrides)).reward, num_items=10)


def test_builtin_reward_options():
    assert reward_from_overrides("reward=recall")(SLATE, TARGET).tolist() == [1.0, 1.0, 0.0]
    mrr = reward_from_overrides("reward=mrr")(SLATE, TARGET)
    assert torch.allclose(mrr, torch.tensor([1.0, 1 / 3, 0.0]))


def test_user_reward_by_target_as_in_the_readme():
    reward = reward_from_overrides("reward._target_=tests.plugins.my_rewards.top1_bonus")
    assert reward(SLATE, TARGET).tolist() == [1.0, 0.5, 0.0]


def test_unimportable_user_reward_is_a_clear_error():
    with pytest.raises(LaresError, match="reward"):
        reward_from_overrides("reward._target_=tests.plugins.nowhere.fn")


def test_a_reward_without_k_is_told_how_to_take_or_drop_it():
    with pytest.raises(
        LaresError,
        match=r"keyword arguments \(k=\d+\): accept them, e\.g\. def fn\(slate, target, k=\.\.\.\), or drop them with ~reward\.k",
    ):
        reward_from_overrides("reward._target_=tests.plugins.two_arg_reward.top1")
    assert reward_from_overrides("reward._target_=tests.plugins.two_arg_reward.top1", "~reward.k")(SLATE, TARGET).tolist() == [
        1.0,
        0.0,
        0.0,
    ]
