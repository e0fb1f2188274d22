"""RPT over multi-step episodes (``rpt.horizon``) and with frozen parameters (``rpt.freeze``):
the episode layout, the time-major decision order the group advantage needs, a real training run
through both, and the bad input."""

import copy

import pytest
import torch
from tensordict import TensorDict

from lares_rl.core.errors import LaresError
from lares_rl.data.synthetic import successor_log
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.rewards import make_reward
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.episodes import decisions, episode_starts, rows_env, training_row_positions
from lares_rl.rpt.learner import freeze_parameters
from lares_rl.rpt.loop import train_rpt

L = 12


@pytest.fixture(scope="module")
def data():
    return successor_log(users=120, items=60, min_len=8, max_len=16, seed=1).data


def policy_for(data, seed: int = 0) -> LaresReasoner:
    torch.manual_seed(seed)
    return LaresReasoner(data.num_items, max_len=L, d_model=16, n_heads=2, inner_size=32, dropout=0.1)


def test_episode_starts_leave_room_for_the_whole_horizon(data):
    rows = torch.arange(len(data.train_rows(L)[2]))
    users, target_pos = training_row_positions(data)
    for horizon in (1, 3):
        starts = episode_starts(data, rows, horizon)
        last_target = data.offsets[users[starts.numpy()]] + data.lengths[users[starts.numpy()]] - 3
        assert (target_pos[starts.numpy()] + horizon - 1 <= last_target).all()
    # every user with r training rows starts r - 2 episodes of 3 steps
    assert len(episode_starts(data, rows, 3)) == int(((data.lengths - 3) - 2).clip(min=0).sum())


def test_an_episode_replays_consecutive_logged_steps_and_never_reaches_validation(data):
    rows = episode_starts(data, torch.arange(len(data.train_rows(L)[2])), 3)
    cfg = RPTConfig(group_size=2, slate_size=5)
    env = rows_env(
        data,
        rows,
        data.train_rows(L)[2],
        histories=4,
        cfg=cfg,
        reward_fn=make_reward("ndcg", k=5),
        max_len=L,
        seed=0,
        device=torch.device("cpu"),
        horizon=3,
    )
    td = env.reset()
    cursor0 = td["cursor"].clone()
    for step in range(3):
        td["action"] = torch.arange(1, 6).repeat(8, 1)
        td = env.step(td)["next"]
        assert torch.equal(td["cursor"], cursor0 + step + 1)
        assert td["done"].all() == (step == 2)
    users, _ = training_row_positions(data)
    user = torch.as_tensor(users)[rows[td["group_id"]]]
    last_training_target = torch.as_tensor(data.offsets[:-1] + data.lengths - 3)[user]
    assert (td["cursor"] - 1 <= last_training_target).all()


def test_decisions_are_time_major_so_groups_stay_contiguous():
    batch = TensorDict({"group": torch.tensor([[0, 0], [0, 0], [1, 1], [1, 1]]), "t": torch.tensor([[0, 1]] * 4)}, [4, 2])
    flat = decisions(batch)
    assert flat["t"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert flat["group"].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert decisions(batch[:, :1])["group"].tolist() == [0, 0, 1, 1]


def run(data, tmp_path, **settings):
    cfg = RPTConfig(
        algorithm="latent_pg",
        exploration="gaussian",
        latent_noise=False,
        group_size=4,
        histories_per_batch=16,
        slate_size=10,
        epochs=1,
        batches_per_epoch=3,
        filter_top=60,
        probe_size=50,
        probe_every=2,
        **settings,
    )
    cfg.validate()
    policy = policy_for(data)
    start = copy.deepcopy(policy.state_dict())
    summary = train_rpt(
        policy=policy,
        policy_config={},
        data=data,
        max_len=L,
        cfg=cfg,
        reward_fn=make_reward("ndcg", k=10),
        eval_cfg=EvalConfig(),
        run_dir=tmp_path,
        device=torch.device("cpu"),
        seed=0,
        config={"dataset": {"name": "successor"}},
        progress=False,
        resume=False,
    )
    return summary, start, policy, cfg


def test_horizon_trains_whole_episodes(data, tmp_path):
    summary, _, _, cfg = run(data, tmp_path, horizon=3)
    assert summary["frames"] == 3 * 16 * 4 * 3  # batches x histories x G x horizon
    assert len(summary["probe_curve"]) >= 2
    assert 0.0 <= summary["zero_adv_group_fraction"] <= 1.0  # groups of G = 4: their signal is logged
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(tmp_path / "tb" / "rpt")).Reload().Tags()["scalars"]
    assert {"rpt/diag/zero_adv_group_fraction", "rpt/diag/group_reward_std", "rpt/diag/advantage_std"} <= set(tags)


def test_frozen_parameters_keep_their_spt_values(data, tmp_path):
    _, start, _, _ = run(data, tmp_path / "frozen", freeze=["item_embedding"], lr=1e-2)
    last = torch.load(tmp_path / "frozen" / "checkpoints" / "rpt_last.pt", weights_only=False)["policy_state"]
    assert torch.equal(last["item_embedding.weight"], start["item_embedding.weight"])
    assert not torch.equal(last["core_block.layers.0.ffn.fc1.weight"], start["core_block.layers.0.ffn.fc1.weight"])


def test_bad_horizon_and_freeze_are_named(data, tmp_path):
    with pytest.raises(LaresError, match="rpt.horizon"):
        RPTConfig(horizon=0).validate()
    with pytest.raises(LaresError, match=r"rpt.freeze: 'item_embeddings' names no parameter .*item_embedding"):
        freeze_parameters(policy_for(data), ["item_embeddings"])
    with pytest.raises(LaresError, match=r"rpt.horizon=500: no kept training row .* lower rpt.horizon"):
        run(data, tmp_path, horizon=500)
