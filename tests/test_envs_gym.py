"""The gymnasium next-item env: checker, registration, replay semantics, action validation."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from lares_rl.core.errors import LaresError
from lares_rl.envs import GYM_ID, NextItemGymEnv
from lares_rl.rewards import make_reward
from tests.env_logs import DATA, ITEMS, OFFSETS, STARTS, STOPS


def make_env(**kwargs) -> NextItemGymEnv:
    return NextItemGymEnv(**(DATA | {"max_len": 3, "slate_size": 4} | kwargs))


def slate_with(target: int, rank: int, size: int = 4) -> np.ndarray:
    """A slate of ids other than ``target`` with ``target`` placed at ``rank``."""
    slate = np.array([i for i in range(1, 16) if i != target][:size], dtype=np.int64)
    slate[rank] = target
    return slate


@pytest.mark.parametrize("horizon", [1, 3])
def test_passes_gymnasium_env_checker(horizon):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker's SB3 advice about Box bounds
        check_env(make_env(horizon=horizon), skip_render_check=True)


def test_registered_id_builds_the_env():
    env = gym.make(GYM_ID, **DATA, horizon=2, render_mode="ansi")
    obs, info = env.reset(seed=0, options={"episode": 1})
    assert isinstance(env.unwrapped, NextItemGymEnv)
    assert obs["length"] == 1 and obs["items"][0] == ITEMS[OFFSETS[1]]
    assert env.render().startswith("episode 1 step 0")


def test_reward_matches_the_reward_function():
    env = make_env(reward_fn=make_reward("mrr", k=4))
    env.reset(seed=0, options={"episode": 2})
    target = int(ITEMS[STARTS[2]])
    _, reward, terminated, truncated, info = env.step(slate_with(target, rank=2))
    assert reward == pytest.approx(1 / 3) and info == {"target": target, "rank": 2}
    assert (terminated, truncated) == (True, False)  # horizon 1: one bandit decision


def test_default_reward_is_ndcg_at_slate_size():
    env = make_env()
    env.reset(seed=0, options={"episode": 0})
    _, reward, *_ = env.step(slate_with(int(ITEMS[STARTS[0]]), rank=3))
    assert reward == pytest.approx(1 / np.log2(5))


def test_replay_reveals_logged_items_and_truncates_at_stop():
    env = make_env(horizon=10)
    episode = 3
    obs, _ = env.reset(options={"episode": episode})
    targets = []
    for cursor in range(STARTS[episode], STOPS[episode]):
        history = ITEMS[max(OFFSETS[episode], cursor - 3) : cursor]
        assert obs["items"][: obs["length"]].tolist() == history.tolist() and obs["items"][obs["length"] :].sum() == 0
        obs, _, terminated, truncated, info = env.step(slate_with(1, rank=0))
        targets.append(info["target"])
        assert not terminated and truncated == (cursor + 1 == STOPS[episode])
    assert targets == ITEMS[STARTS[episode] : STOPS[episode]].tolist()
    assert obs["items"].tolist() == ITEMS[STOPS[episode] - 3 : STOPS[episode]].tolist()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(slate_with(1, rank=0))


def test_horizon_truncates_before_stop():
    env = make_env(horizon=2)
    env.reset(options={"episode": 3})
    assert env.step(slate_with(1, 0))[2:4] == (False, False)
    assert env.step(slate_with(1, 0))[2:4] == (False, True)


@pytest.mark.parametrize(
    "action, match",
    [
        (np.array([0, 1, 2, 3]), r"ids \[0\] outside 1..15"),
        (np.array([1, 2, 3, 16]), r"ids \[16\] outside 1..15"),
        (np.array([1, 2, 3]), r"shape \(4,\)"),
        (np.array([[1, 2, 3, 4]]), r"shape \(4,\)"),
        (np.array([1.0, 2.0, 3.0, 4.0]), "integer item ids"),
    ],
)
def test_bad_actions_raise(action, match):
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_misuse_raises():
    with pytest.raises(RuntimeError, match="reset"):
        make_env().step(slate_with(1, 0))
    with pytest.raises(LaresError, match="slate_size"):
        make_env(slate_size=0)
    with pytest.raises(LaresError, match="render_mode"):
        make_env(render_mode="human")
    with pytest.raises(LaresError, match="outside 1..num_items"):
        make_env(num_items=10)


def test_seeded_resets_are_deterministic():
    runs = []
    for _ in range(2):
        env = make_env(horizon=2)
        obs, info = env.reset(seed=7)
        runs.append((obs["items"].tolist(), info, [env.reset()[1]["episode"] for _ in range(5)]))
    assert runs[0] == runs[1]


def test_works_through_torchrl_gym_wrapper():
    from torchrl.envs import GymWrapper
    from torchrl.envs.gym_like import default_info_dict_reader

    env = GymWrapper(make_env(horizon=2))
    env.set_info_dict_reader(default_info_dict_reader(["target"]))
    env.set_seed(0)
    rollout = env.rollout(5, break_when_any_done=False)
    assert rollout.batch_size == (5,)
    assert ((rollout["action"] >= 1) & (rollout["action"] <= 15)).all()
    # The revealed target is the newest item of the next history.
    next_items, next_length = rollout["next", "items"], rollout["next", "length"].squeeze(-1)
    newest = next_items.gather(-1, (next_length - 1)[:, None]).squeeze(-1)
    torch.testing.assert_close(rollout["next", "target"].reshape(-1), newest)


def test_from_data_follows_leave_one_out():
    """Train episodes never reveal the validation or test item; valid/test are the one held-out decision."""
    from lares_rl.data import SequenceData

    data = SequenceData.from_sequences([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]], num_items=11)
    train = NextItemGymEnv.from_data(data, max_len=4, slate_size=2, horizon=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker's SB3 advice about Box bounds
        check_env(train, skip_render_check=True)
    _, _ = train.reset(seed=0, options={"episode": 1})
    revealed, done = [], False
    while not done:
        _, _, terminated, truncated, info = train.step(np.array([1, 2]))
        revealed.append(int(info["target"]))
        done = terminated or truncated
    assert revealed == [7, 8, 9]  # 10 (valid) and 11 (test) stay hidden
    for split, target in (("valid", 10), ("test", 11)):
        env = NextItemGymEnv.from_data(data, split=split, max_len=4, slate_size=2)
        obs, _ = env.reset(options={"episode": 1})
        assert obs["items"][: obs["length"]].tolist()[-1] == target - 1
        assert int(env.step(np.array([target, 1]))[4]["target"]) == target
    with pytest.raises(LaresError, match="split="):
        NextItemGymEnv.from_data(data, split="dev")
