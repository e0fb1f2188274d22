"""rpt=expected_pg: the exact expected-reward gradient of the item softmax. Its one-item rewards,
its gradient against a brute-force expectation, the direction check, a short training run with
group size 1, and the bad input (a reward no single item changes, a group size it cannot use)."""

import copy

import pytest
import torch
from tensordict import TensorDict

from lares_rl.core.errors import LaresError
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.eval.exposure import build_item_context
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.rewards import make_reward, weighted
from lares_rl.rewards.context import ItemContext, bind_context
from lares_rl.rpt.algorithms.expected_pg import ExpectedRewardLoss, check_item_reward_signal, one_item_rewards
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.direction import direction_check
from lares_rl.rpt.loop import train_rpt
from lares_rl.rpt.setup import weight_average
from tests.synthetic import spt_trained_on_successor_log

L = 12
EXPECTED = dict(algorithm="expected_pg", exploration="categorical", latent_noise=False, group_size=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return spt_trained_on_successor_log(tmp_path_factory.mktemp("spt"), max_len=L)


def test_one_item_rewards_are_the_target_indicator_for_accuracy_rewards():
    target = torch.tensor([3, 1, 5])
    table = one_item_rewards(make_reward("ndcg", k=10), target, num_items=6, max_rows=7)  # several blocks
    expected = torch.zeros(3, 7)
    expected[torch.arange(3), target] = 1.0
    assert torch.equal(table, expected)


def test_one_item_rewards_add_each_items_own_long_tail_term():
    popularity = torch.tensor([0.0, 50, 30, 5, 3, 2, 1])  # item 1 (and 2) form the head
    tail = bind_context(make_reward("long_tail", k=10), ItemContext(popularity=popularity))

    def mix(slate, target):
        return weighted(slate, target, {"ndcg": make_reward("ndcg", k=10), "tail": tail}, {"ndcg": 1.0, "tail": 0.5})

    table = one_item_rewards(mix, torch.tensor([1]), num_items=6)
    head = table[0, 1:] == 1.0  # item 1 is the target (1 + 0 for the head)
    assert table[0, 1] == 1.0 and torch.all(table[0, 3:] == 0.5) and head.sum() == 1


def test_expected_reward_gradient_matches_the_brute_force_expectation():
    torch.manual_seed(0)
    policy = LaresReasoner(num_items=9, max_len=5, d_model=8, n_heads=2, inner_size=16)
    items, length = torch.tensor([[2, 4, 6, 0, 0], [1, 3, 0, 0, 0]]), torch.tensor([3, 2])
    target = torch.tensor([7, 5])
    td = TensorDict(
        {
            "history": {"items": items, "length": length},
            "num_steps": torch.tensor([2, 2]),
            "rollout_seed": torch.tensor([-1, -1]),
            "next": {"target": target},
        },
        [2],
    )
    reward = make_reward("ndcg", k=10)
    out = ExpectedRewardLoss(policy, reward, num_items=9)(td)
    grad = torch.autograd.grad(out["loss_policy"], policy.item_embedding.weight)[0]
    from lares_rl.policies.rollouts import run_rollouts

    scores = run_rollouts(policy, items, length, td["num_steps"], td["rollout_seed"], dedupe=True)["final_scores"]
    brute = -torch.stack([torch.softmax(scores[b], -1)[target[b]] for b in range(2)]).mean()
    assert out["loss_policy"].item() == pytest.approx(brute.item(), abs=1e-6)
    assert torch.allclose(grad, torch.autograd.grad(brute, policy.item_embedding.weight)[0], atol=1e-6)


def test_log_objective_with_an_accuracy_reward_is_cross_entropy():
    torch.manual_seed(0)
    policy = LaresReasoner(num_items=9, max_len=5, d_model=8, n_heads=2, inner_size=16)
    items, length, target = torch.tensor([[2, 4, 6, 0, 0], [1, 3, 0, 0, 0]]), torch.tensor([3, 2]), torch.tensor([7, 5])
    td = TensorDict(
        {
            "history": {"items": items, "length": length},
            "num_steps": torch.tensor([2, 2]),
            "rollout_seed": torch.tensor([-1, -1]),
            "next": {"target": target},
        },
        [2],
    )
    out = ExpectedRewardLoss(policy, make_reward("hit", k=10), num_items=9, log_objective=True)(td)
    from lares_rl.policies.rollouts import run_rollouts

    scores = run_rollouts(policy, items, length, td["num_steps"], td["rollout_seed"], dedupe=True)["final_scores"]
    assert out["loss_policy"].item() == pytest.approx(torch.nn.functional.cross_entropy(scores, target).item(), abs=1e-5)


def test_expected_pg_updates_on_fixed_histories_raise_their_reward(trained):
    data, spt_policy = trained
    cfg = RPTConfig(**EXPECTED, slate_size=10, lr=2e-3)
    cfg.validate()
    rows = torch.arange(0, len(data.train_rows(L)[2]), 11)[:96]
    curve = direction_check(
        copy.deepcopy(spt_policy), data, L, cfg, make_reward("ndcg", k=10), rows, updates=12, device=torch.device("cpu")
    )
    assert curve["reward"][-1] > curve["reward"][0] * 1.05, curve["reward"]


def test_expected_pg_trains_with_one_rollout_per_history(trained, tmp_path):
    data, spt_policy = trained
    cfg = RPTConfig(**EXPECTED, histories_per_batch=32, slate_size=10, epochs=1, batches_per_epoch=3, filter_top=50, beta=0.1)
    cfg.validate()
    summary = train_rpt(
        policy=copy.deepcopy(spt_policy),
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
    )
    assert summary["frames"] == 3 * 32 and summary["zero_adv_group_fraction"] is None
    assert len(summary["probe_curve"]) >= 1 and (tmp_path / "checkpoints" / "rpt_best.pt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set(EventAccumulator(str(tmp_path / "tb" / "rpt")).Reload().Tags()["scalars"])
    assert {"rpt/diag/expected_reward", "rpt/losses/kl", "rpt/diag/kl_to_ref", "rpt/probe/reward"} <= tags
    assert "rpt/diag/zero_adv_group_fraction" not in tags  # no groups, no group diagnostics


def test_weight_average_starts_at_the_spt_weights_and_follows_the_updates_by_decay():
    torch.manual_seed(0)
    policy = LaresReasoner(num_items=9, max_len=5, d_model=8, n_heads=2, inner_size=16)
    start = copy.deepcopy(policy.state_dict())
    averaged = weight_average(policy, 0.75)
    assert all(torch.equal(averaged.module.state_dict()[name], start[name]) for name in start)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(1.0)
    averaged.update_parameters(policy)
    name = "item_embedding.weight"
    assert torch.allclose(averaged.module.state_dict()[name], start[name] + 0.25)  # 0.75 * old + 0.25 * new
    assert weight_average(policy, None) is None
    with pytest.raises(LaresError, match=r"rpt.ema_decay: must be null \(off\) or in \(0, 1\)"):
        RPTConfig(**EXPECTED, ema_decay=1.0).validate()


def test_with_ema_the_kept_and_probed_weights_are_the_average_not_the_last_update(trained, tmp_path):
    data, spt_policy = trained
    cfg = RPTConfig(**EXPECTED, histories_per_batch=32, slate_size=10, epochs=2, batches_per_epoch=2, filter_top=50, lr=5e-3, ema_decay=0.6)
    summary = train_rpt(
        policy=copy.deepcopy(spt_policy),
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
    )
    state = torch.load(tmp_path / "checkpoints" / "rpt_last.pt", weights_only=False)
    averaged = {name.removeprefix("module."): value for name, value in state["averaged_state"].items() if name != "n_averaged"}
    trained_now, spt = state["policy_state"], spt_policy.state_dict()
    name = "item_embedding.weight"
    assert int(state["averaged_state"]["n_averaged"]) == 1 + 4  # the SPT copy, then one per update
    assert not torch.equal(averaged[name], trained_now[name]) and not torch.equal(averaged[name], spt[name])
    assert summary["best_epoch"] == 1, summary["valid_selection_per_epoch"]  # the last validation was kept ...
    best = torch.load(tmp_path / "checkpoints" / "rpt_best.pt", weights_only=False)["policy_state"]
    assert torch.equal(best[name], averaged[name])  # ... and the checkpoint holds the average, not the raw weights


def test_reward_that_turns_nan_inside_the_loss_names_the_batch_and_keeps_the_state(trained, tmp_path):
    """expected_pg evaluates the reward on one-item slates inside the loss, not only in the env:
    a reward that breaks there mid-run stops before the update, naming the reward, the batch and
    the state that was kept."""
    data, spt_policy = trained
    calls = {"one_item": 0}

    def nan_on_single_items_later(slate, target):
        out = (slate[:, 0] == target).float()
        if slate.shape[1] == 1:
            calls["one_item"] += 1
            if calls["one_item"] > 2:  # the signal check before training and the first update pass
                out = out * float("nan")
        return out

    cfg = RPTConfig(**EXPECTED, histories_per_batch=32, slate_size=10, epochs=1, batches_per_epoch=3, filter_top=50)
    with pytest.raises(
        LaresError,
        match=r"reward .*nan_on_single_items_later.* non-finite .* \(RPT epoch 0, batch [23]/3\); training stopped before this update\. The last good state is kept: .*rpt_last\.pt",
    ):
        train_rpt(
            policy=copy.deepcopy(spt_policy),
            policy_config={},
            data=data,
            max_len=L,
            cfg=cfg,
            reward_fn=nan_on_single_items_later,
            eval_cfg=EvalConfig(),
            run_dir=tmp_path,
            device=torch.device("cpu"),
            seed=0,
            config={"dataset": {"name": "successor"}},
            progress=False,
        )
    assert (tmp_path / "checkpoints" / "rpt_last.pt").is_file() and (tmp_path / "checkpoints" / "rpt_best.pt").is_file()


def test_slate_level_reward_is_refused_for_expected_pg(trained):
    data, policy = trained
    context = build_item_context(data, policy=policy)
    diversity = bind_context(make_reward("embedding_diversity", k=10), context)
    with pytest.raises(LaresError, match=r"recommending any single item earns the same reward, .* rpt=latent_pg"):
        check_item_reward_signal(diversity, data.num_items, "embedding_diversity")


def test_expected_pg_config_is_checked():
    with pytest.raises(LaresError, match="rpt.exploration"):
        RPTConfig(algorithm="expected_pg", exploration="gaussian", group_size=1).validate()
    with pytest.raises(LaresError, match="rpt.group_size"):
        RPTConfig(algorithm="latent_pg", exploration="gaussian", group_size=1).validate()
    with pytest.raises(LaresError, match="rpt.objective: log_reward is read by rpt.algorithm=expected_pg only"):
        RPTConfig(algorithm="latent_pg", exploration="gaussian", objective="log_reward").validate()
    with pytest.raises(LaresError, match="rpt.objective: must be one of"):
        RPTConfig(**EXPECTED, objective="likelihood").validate()
