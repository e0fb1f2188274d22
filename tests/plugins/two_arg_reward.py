"""A user reward without a ``k`` parameter (tests/test_reward_config.py)."""

import torch


def top1(slate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (slate[:, 0] == target).float()
