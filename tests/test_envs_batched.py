"""The batched TorchRL next-item env: specs, groups, sampling, partial resets, replay."""

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from lares_rl.core.errors import LaresError
from lares_rl.envs import NextItemGymEnv
from lares_rl.envs.batched_env import NextItemEnv
from lares_rl.rewards import make_reward
from tests.env_logs import DATA, ITEMS, OFFSETS, STARTS, STOPS

L, K = 3, 4


def make_env(**kwargs) -> NextItemEnv:
    return NextItemEnv(**(DATA | {"batch_size": 4, "max_len": L, "slate_size": K, "seed": 0} | kwargs))


def expected_history(cursor: torch.Tensor, episode: torch.Tensor) -> torch.Tensor:
    """The left-aligned window computed row by row from the flat data."""
    rows = []
    for t, e in zip(cursor.tolist(), episode.tolist()):
        window = ITEMS[max(OFFSETS[e], t - L) : t].tolist()
        rows.append(window + [0] * (L - len(window)))
    return torch.tensor(rows)


def group_ids_drawn(env: NextItemEnv, resets: int) -> list[int]:
    return [g for _ in range(resets) for g in env.reset()["group_id"][:: env.group_size].tolist()]


@pytest.mark.parametrize("horizon, group_size", [(1, 1), (3, 2)])
def test_check_env_specs(horizon, group_size):
    check_env_specs(make_env(horizon=horizon, group_size=group_size), seed=0)


def test_groups_are_contiguous_and_identical():
    td = make_env(batch_size=6, group_size=3).reset()
    for key in [("history", "items"), ("history", "length"), "group_id", "cursor"]:
        grouped = td[key].reshape(2, 3, -1)
        assert (grouped == grouped[:, :1]).all(), key
    assert td["group_id"][0] != td["group_id"][3]
    torch.testing.assert_close(td[("history", "items")], expected_history(td["cursor"], td["group_id"]))
    assert (td["target"] == 0).all() and (td["cursor"] == torch.as_tensor(STARTS)[td["group_id"]]).all()


@pytest.mark.parametrize("batch_size", [4, 8])
def test_epoch_sampling_draws_every_episode_once_per_epoch(batch_size):
    env = make_env(batch_size=batch_size, group_size=2)
    drawn = group_ids_drawn(env, resets=6 * 2 * 2 // batch_size)  # two epochs of 6 episodes
    assert sorted(drawn[:6]) == sorted(drawn[6:]) == list(range(6))
    assert env.epoch == 2 and env.episodes_per_epoch == 6
    assert drawn[:6] != drawn[6:]  # reshuffled between epochs


def test_uniform_sampling_is_seeded():
    draws = [group_ids_drawn(make_env(sampling="uniform", seed=3), resets=5) for _ in range(2)]
    assert draws[0] == draws[1] and set(draws[0]) <= set(range(6))
    assert draws[0] != group_ids_drawn(make_env(sampling="uniform", seed=4), resets=5)


def test_partial_reset_redraws_only_masked_groups():
    env = make_env(batch_size=6, group_size=2)
    td = env.reset()
    before = td.clone()
    td["_reset"] = torch.tensor([False, False, True, True, False, False])[:, None]
    after = env.reset(td)
    assert (after["group_id"][[0, 1, 4, 5]] == before["group_id"][[0, 1, 4, 5]]).all()
    assert after["group_id"][2] == after["group_id"][3] != before["group_id"][2]  # the epoch walk moved on
    torch.testing.assert_close(after[("history", "items")], expected_history(after["cursor"], after["group_id"]))
    td["_reset"] = torch.tensor([False, False, True, False, False, False])[:, None]
    with pytest.raises(LaresError, match="splits a group"):
        env.reset(td)


def test_replay_appends_the_revealed_target():
    env = make_env(horizon=3, group_size=2)
    td = env.reset()
    for _ in range(3):
        cursor, episode = td["cursor"], td["group_id"]
        td = env.step(td.set("action", env.action_spec.rand()))
        nxt = td["next"]
        assert (nxt["target"] == torch.as_tensor(ITEMS)[cursor]).all()
        assert (nxt["cursor"] == cursor + 1).all()
        torch.testing.assert_close(nxt[("history", "items")], expected_history(cursor + 1, episode))
        ended = (cursor + 1 - torch.as_tensor(STARTS)[episode] >= 3) | (cursor + 1 >= torch.as_tensor(STOPS)[episode])
        assert (nxt["truncated"].squeeze(-1) == ended).all() and not nxt["terminated"].any()
        td = env.step_mdp(td)
        if ended.any():
            break
    with pytest.raises(RuntimeError, match="reset them first"):  # never reveals past the stop
        env.step(td.set("action", env.action_spec.rand()))


def test_reward_scores_the_slate_against_the_target():
    env = make_env(reward_fn=make_reward("mrr", k=K))
    td = env.reset()
    target = torch.as_tensor(ITEMS)[td["cursor"]]
    slate = torch.stack([(target % 15) + 1, target, target, (target % 15) + 1], dim=-1)
    slate[0] = (target[0] % 15) + 1  # row 0 misses
    nxt = env.step(td.set("action", slate))["next"]
    assert nxt["reward"].squeeze(-1).tolist() == [0.0, 0.5, 0.5, 0.5]
    assert nxt["terminated"].all() and not nxt["truncated"].any()  # horizon 1: one bandit decision


def test_rollouts_keep_groups_across_auto_resets():
    assert make_env().rollout(3).batch_size == (4, 1)  # horizon 1 stops at the first done
    rollout = make_env(group_size=2).rollout(5, break_when_any_done=False)
    assert rollout.batch_size == (4, 5) and rollout["next", "done"].all()
    group_ids = rollout["group_id"].reshape(2, 2, 5)
    assert (group_ids[:, 0] == group_ids[:, 1]).all()
    first_epoch = group_ids[:, 0, :3].T.flatten()  # steps 0..2 draw 2 groups each
    assert sorted(first_epoch.tolist()) == list(range(6))


def test_histories_match_the_gym_env():
    td = make_env(batch_size=6).reset()
    gym_env = NextItemGymEnv(**DATA, max_len=L, slate_size=K)
    for row in range(6):
        obs, _ = gym_env.reset(options={"episode": int(td["group_id"][row])})
        assert obs["items"].tolist() == td[("history", "items")][row].tolist()
        assert int(obs["length"]) == int(td[("history", "length")][row])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 6, "group_size": 4}, "not divisible by group_size=4"),
        ({"group_size": 0}, "group_size=0"),
        ({"sampling": "random"}, "sampling='random'"),
        ({"num_items": 10}, "outside 1..num_items=10"),
        ({"reward_fn": lambda slate, target: slate}, "shape \\[B\\]"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(LaresError, match=match):
        make_env(**kwargs)


@pytest.mark.parametrize(
    "action, match",
    [
        (torch.zeros(4, K, dtype=torch.int64), "outside 1..15"),
        (torch.full((4, K), 16), "outside 1..15"),
        (torch.ones(4, K), "integer item ids"),
        (torch.ones(4, K + 1, dtype=torch.int64), "shape"),
    ],
)
def test_bad_actions_raise(action, match):
    env = make_env()
    td = env.reset()
    with pytest.raises(ValueError, match=match):
        env.step(td.set("action", action))
