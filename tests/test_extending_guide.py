"""docs/extending.md's Python blocks run as written: each reward passes the reward check, the
backbone and the policy build inside the reasoner and score a batch."""

import math
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from lares_rl.core.checkpoint import build_policy
from lares_rl.rewards import check_reward_fn
from lares_rl.rewards.context import ItemContext, bind_context

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _module(file_name: str) -> types.ModuleType:
    """The guide's blocks headed ``# <file_name>``, executed in order as one module."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    source = "\n".join(block for block in blocks if block.startswith(f"# {file_name}\n"))
    assert source, f"no python block for {file_name} in {GUIDE}"
    module = types.ModuleType(file_name.removesuffix(".py"))
    exec(compile(source, str(GUIDE), "exec"), module.__dict__)
    return module


def test_the_guides_rewards_pass_the_reward_check():
    rewards = _module("my_rewards.py")
    check_reward_fn(rewards.top1_bonus, num_items=20)
    bound = bind_context(rewards.rare_hit, ItemContext(popularity=torch.arange(21, dtype=torch.float32)))
    check_reward_fn(bound, num_items=20)
    slate, target = torch.tensor([[3, 5, 7]]), torch.tensor([3])
    assert rewards.top1_bonus(slate, target).item() == 1.0 and bound(slate, target).item() == pytest.approx(1 / math.log2(5.0))


def _scores(policy: torch.nn.Module) -> torch.Tensor:
    seq, lengths = torch.tensor([[0, 0, 4, 2, 9], [1, 2, 3, 4, 5]]), torch.tensor([3, 5])
    with torch.no_grad():
        return policy.scores(policy.encode(seq, lengths)[:, -1])


def test_the_guides_backbone_and_policy_build_and_score(monkeypatch):
    for file_name in ("my_blocks.py", "my_policy.py"):
        monkeypatch.setitem(sys.modules, file_name.removesuffix(".py"), _module(file_name))
    options = {"d_model": 16, "n_heads": 2, "inner_size": 32, "n_pre_layers": 1, "n_core_layers": 1}
    gru = build_policy({**options, "backbone": "my_blocks.GRUBlock"}, num_items=12, max_len=5)
    biased = build_policy({**options, "_target_": "my_policy.BiasedReasoner"}, num_items=12, max_len=5)
    for policy in (gru, biased):
        scores = _scores(policy)
        assert scores.shape == (2, 13) and torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    assert "item_bias" in dict(biased.named_parameters())
