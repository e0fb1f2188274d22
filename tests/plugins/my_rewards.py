"""The README's custom reward example, kept runnable by tests/test_reward_config.py."""

import torch


def top1_bonus(slate: torch.Tensor, target: torch.Tensor, k: int = 10) -> torch.Tensor:
    """1 when the target is the first slot, 0.5 anywhere else in the top k, else 0."""
    top1 = (slate[:, 0] == target).float()
    in_top_k = (slate[:, :k] == target[:, None]).any(-1).float()
    return torch.maximum(top1, 0.5 * in_top_k)
