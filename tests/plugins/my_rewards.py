"""The README's custom reward example, kept runnable by tests/test_reward_config.py."""

import torch


def top1_bonus(slate: torch.Tensor, target: torch.Tensor, k: int = 10) -> torch.Tensor:
    """1 when the target is the first slot, 0.5 anywhere else in the top k, else 0."""
    top1 = (slate[:, 0] == target).float()
    in_top_k = (slate[:, :k] == target[:, None]).any(-1).float()
    return torch.maximum(top1, 0.5 * in_top_k)


def rare_hit(slate: torch.Tensor, target: torch.Tensor, popularity: torch.Tensor, k: int = 10) -> torch.Tensor:
    """A hit in the top k, worth more the rarer the target was in training. Naming ``popularity``
    makes the run pass the training counts (lares_rl/item_context.py)."""
    hit = (slate[:, :k] == target[:, None]).any(-1).float()
    return hit / torch.log2(2.0 + popularity[target])


def genre_spread(slate: torch.Tensor, target: torch.Tensor, categories: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Share of all categories present in the top k (asks for ``categories``, which only data
    sets with an item file carrying a ``class`` column have)."""
    return (categories[slate[:, :k]].amax(dim=1) > 0).float().mean(dim=1)
