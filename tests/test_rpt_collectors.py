"""RPT collection on 2 worker processes (TorchRL MultiSyncCollector): equal shares with groups
kept contiguous, disjoint rows per worker, workers seeded apart, and the learner's weights in the
workers after every sync (checked by replaying the collected rollouts with the learner's policy)."""

import copy
from functools import partial

import pytest
import torch

from lares_rl.core.checkpoint import build_policy
from lares_rl.core.errors import LaresError
from lares_rl.data.synthetic import successor_log
from lares_rl.policies.rollouts import run_rollouts
from lares_rl.rewards import ndcg
from lares_rl.rpt.collectors import multi_process_collector, sync_weights
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.episodes import training_row_positions
from lares_rl.rpt.learner import build_learner

G, L = 4, 10


def _replayed_states(policy, batch) -> torch.Tensor:
    with torch.no_grad():
        policy.train()
        out = run_rollouts(policy, batch["history", "items"], batch["history", "length"], batch["num_steps"], batch["rollout_seed"])
    return out["final_state"]


def test_two_workers_collect_equal_shares_with_the_learners_weights():
    data = successor_log(users=60, items=40, min_len=5, max_len=12).data
    policy = build_policy({"name": "lares", "d_model": 16, "inner_size": 32, "dropout": 0.0}, data.num_items, L)
    cfg = RPTConfig(algorithm="latent_pg", exploration="gaussian", group_size=G, slate_size=10, histories_per_batch=8, collector_workers=2)
    _, _, targets = data.train_rows(L)
    kept = torch.arange(len(targets))
    learner = build_learner(policy, cfg, device=torch.device("cpu"), eval_seed=0, seed=0)
    collector = multi_process_collector(
        data=data,
        kept=kept,
        targets=targets,
        histories=8,
        cfg=cfg,
        reward_fn=partial(ndcg, k=10),
        max_len=L,
        seed=0,
        actor=learner.actor,
        policy=copy.deepcopy(policy),
        eval_seed=0,
    )
    try:
        batches = iter(collector)
        first = next(batches).reshape(-1)
        assert first.batch_size == torch.Size([8 * G])
        for key in ("group_id", ("next", "target"), "rollout_seed"):
            grouped = first[key].reshape(8, G)
            assert (grouped == grouped[:, :1]).all(), key  # groups stay contiguous across the concatenation
        halves = first["rollout_seed"].reshape(2, -1)[:, 0]
        assert halves[0] != halves[1]  # the workers draw their own rollout seeds
        # worker i walks rows i, i+2, ...: the targets it hands out come from its own share
        users, target_pos = training_row_positions(data)
        shares = [set(data.items[target_pos[kept[i::2].numpy()]].tolist()) for i in range(2)]
        for worker, half in enumerate(first["next", "target"].reshape(2, -1)):
            assert set(half.tolist()) <= shares[worker]
        torch.testing.assert_close(first["user_state"], _replayed_states(policy, first))

        with torch.no_grad():  # a learner update, then the sync: the next batch uses the new weights
            for parameter in policy.parameters():
                parameter.mul_(1.5)
        sync_weights(collector, learner.actor)
        second = next(batches).reshape(-1)
        torch.testing.assert_close(second["user_state"], _replayed_states(policy, second))
    finally:
        collector.shutdown()


def test_histories_must_split_evenly_over_the_workers():
    with pytest.raises(LaresError, match="rpt.histories_per_batch.*divisible by rpt.collector_workers=3"):
        RPTConfig(histories_per_batch=10, collector_workers=3).validate()
    with pytest.raises(LaresError, match="rpt.collector_workers"):
        RPTConfig(collector_workers=0).validate()
