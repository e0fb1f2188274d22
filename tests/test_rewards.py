"""Ranking rewards: hand-computed values, the registry, and the Hydra reward group."""

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lares_rl.core.errors import LaresError
from lares_rl.rewards import REWARDS, check_reward_fn, make_reward, register_reward, target_rank

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Six rows of a width-6 slate scored with k=4; the target is 7 in every row.
SLATE = torch.tensor(
    [
        [7, 1, 2, 3, 4, 5],  # rank 0
        [1, 2, 3, 7, 4, 5],  # rank 3, the last slot inside the top 4
        [1, 2, 3, 4, 5, 6],  # absent
        [1, 2, 3, 4, 5, 7],  # in the slate but outside the top 4
        [1, 7, 7, 2, 3, 4],  # duplicates: the first occurrence (rank 1) counts
        [1, 2, 7, 3, 4, 7],  # duplicate outside the top 4: rank 2
    ]
)
TARGET = torch.full((6,), 7)
RANKS = [0, 3, None, None, 1, 2]
ACCURACY = ["hit", "mrr", "ndcg", "recall"]  # the beyond-accuracy rewards: tests/test_beyond_rewards.py


def expected(name: str, rank: int | None) -> float:
    if rank is None:
        return 0.0
    return {"recall": 1.0, "hit": 1.0, "ndcg": 1 / math.log2(rank + 2), "mrr": 1 / (rank + 1)}[name]


def top1(slate: torch.Tensor, target: torch.Tensor, bonus: float = 0.0) -> torch.Tensor:
    """A user reward living outside lares_rl, reached only through ``_target_``."""
    return (slate[:, 0] == target).float() + bonus


def test_registry_holds_the_documented_rewards():
    assert sorted(REWARDS) == ["diversity", "embedding_diversity", "hit", "long_tail", "mrr", "ndcg", "novelty", "recall", "unexposed"]


@pytest.mark.parametrize("name", ACCURACY)
def test_hand_computed_values(name):
    out = REWARDS[name](SLATE, TARGET, k=4)
    assert out.dtype == torch.float32 and out.shape == (6,)
    torch.testing.assert_close(out, torch.tensor([expected(name, r) for r in RANKS]))


@pytest.mark.parametrize("name", ACCURACY)
def test_k_wider_than_the_slate_uses_the_whole_slate(name):
    out = REWARDS[name](SLATE, TARGET, k=100)
    assert out[3].item() == pytest.approx(expected(name, 5))
    assert out[2].item() == 0.0


@pytest.mark.parametrize("name", ACCURACY)
def test_random_batches_are_float_in_unit_range(name):
    gen = torch.Generator().manual_seed(0)
    slate = torch.randint(1, 20, (64, 10), generator=gen)
    target = torch.randint(1, 20, (64,), generator=gen)
    out = REWARDS[name](slate, target)
    assert out.shape == (64,) and out.dtype == torch.float32
    assert ((out >= 0) & (out <= 1)).all()
    assert (out > 0).any() and (out == 0).any()


def test_target_rank_and_bad_inputs():
    assert target_rank(SLATE, TARGET).tolist() == [0, 3, -1, 5, 1, 2]
    with pytest.raises(LaresError, match="k=0"):
        REWARDS["ndcg"](SLATE, TARGET, k=0)
    with pytest.raises(ValueError, match="slate"):
        REWARDS["ndcg"](SLATE[0], TARGET)


def test_register_twice_raises():
    with pytest.raises(ValueError, match="ndcg"):
        register_reward("ndcg")(top1)
    assert REWARDS["ndcg"].__name__ == "ndcg"


def test_make_reward_binds_options_and_rejects_unknowns():
    torch.testing.assert_close(make_reward("mrr", k=2)(SLATE, TARGET), REWARDS["mrr"](SLATE, TARGET, k=2))
    with pytest.raises(LaresError, match=r"unknown reward 'ndgc'.*'ndcg'.*reward=<name>.*_target_"):
        make_reward("ndgc")
    with pytest.raises(LaresError, match="kk"):
        make_reward("ndcg", kk=5)


def test_check_reward_fn_names_the_broken_function():
    check_reward_fn(make_reward("ndcg", k=3), num_items=1)
    with pytest.raises(LaresError, match=r"test_rewards.*<lambda>.*shape \[B\]"):
        check_reward_fn(lambda slate, target: target, num_items=5)
    with pytest.raises(LaresError, match="non-finite"):
        check_reward_fn(lambda slate, target: target.float() / 0, num_items=5)
    with pytest.raises(LaresError, match="failed on a dummy batch"):
        check_reward_fn(lambda slate: slate, num_items=5)


def test_user_reward_plugs_in_through_target():
    fn = instantiate(OmegaConf.create({"_target_": f"{__name__}.top1", "_partial_": True, "bonus": 0.5}))
    check_reward_fn(fn, num_items=10)
    assert fn(SLATE, TARGET).tolist() == [1.5] + [0.5] * 5


@pytest.mark.parametrize("name", ACCURACY)
def test_config_files_match_the_registry(name):
    # reward.k follows rpt.slate_size (10 for the reference)
    root = OmegaConf.create({"rpt": {"slate_size": 10}, "reward": OmegaConf.load(CONFIG_DIR / "reward" / f"{name}.yaml")})
    fn = instantiate(root.reward)
    torch.testing.assert_close(fn(SLATE, TARGET), REWARDS[name](SLATE, TARGET, k=10))


def test_config_group_composes_under_reward():
    assert sorted(p.stem for p in (CONFIG_DIR / "reward").glob("*.yaml")) == sorted(REWARDS)  # one file per registered reward
    with initialize_config_dir(version_base=None, config_dir=str(CONFIG_DIR)):
        cfg = compose(overrides=["+reward=ndcg", "reward.k=2"])
    torch.testing.assert_close(instantiate(cfg.reward)(SLATE, TARGET), REWARDS["ndcg"](SLATE, TARGET, k=2))
