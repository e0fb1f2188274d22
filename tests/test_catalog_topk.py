"""Chunked top-K and ranks (lares_rl/catalog_topk.py): the same answers as scoring the whole catalog."""

import json

import pytest
import torch

from lares_rl.catalog.topk import check_chunk, chunked_target_ranks, chunked_top_k, evaluate_chunked, item_scorer
from lares_rl.core.errors import LaresError
from lares_rl.data.synthetic import successor_log
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.metrics.ranking import target_ranks
from lares_rl.serve.cli import main
from lares_rl.serve.recommender import Recommender
from tests.synthetic import tiny_reasoner
from tests.tiny_checkpoint import save_spt_checkpoint


def _table_scorer(table: torch.Tensor):
    """Scores read from a fixed [B, N + 1] table: lets a test plant ties and NaN exactly."""
    return lambda states, items: table[states.long().squeeze(1)][:, items]


@pytest.mark.parametrize("chunk", [1, 3, 7, 30, None])
def test_ranks_are_exact_below_the_cap_and_at_least_the_cap_above(chunk):
    generator = torch.Generator().manual_seed(0)
    users, items, cap = 50, 30, 5
    table = torch.randint(0, 4, (users, items + 1), generator=generator).float()  # many ties
    table[3, 7] = float("nan")
    table[4, :] = float("nan")
    table[:, 0] = float("-inf")
    targets = torch.randint(1, items + 1, (users,), generator=generator)
    targets[4] = 9
    states = torch.arange(users).view(-1, 1).float()
    got = chunked_target_ranks(states, _table_scorer(table), items, targets, cap, chunk)
    want = target_ranks(table, targets)
    below = want < cap
    assert torch.equal(got[below], want[below])
    assert (got[~below] >= cap).all()
    assert got[4] == items - 1  # a NaN target ranks last


@pytest.mark.parametrize("chunk", [2, 5, None])
def test_top_k_matches_full_topk_and_masks_history_but_never_the_target(chunk):
    generator = torch.Generator().manual_seed(1)
    users, items = 6, 12
    table = torch.randn(users, items + 1, generator=generator)
    table[:, 0] = float("-inf")
    states = torch.arange(users).view(-1, 1).float()
    values, ids, _ = chunked_top_k(states, _table_scorer(table), items, 4, chunk)
    full = table.topk(4, dim=1)
    assert torch.equal(values, full.values) and torch.equal(ids, full.indices)

    best = table[:, 1:].argmax(1) + 1
    history = (torch.arange(users + 1), best)  # each row has seen its best item
    targets = best.clone()
    targets[0] = (best[0] % items) + 1  # row 0's best item is history, not its target
    masked_values, masked_ids, target_scores = chunked_top_k(
        states, _table_scorer(table), items, 4, chunk, history=history, targets=targets
    )
    assert best[0] not in masked_ids[0]
    assert all(best[r] == masked_ids[r, 0] for r in range(1, users))  # seen but the target: stays
    assert torch.equal(target_scores, table.gather(1, targets.view(-1, 1)).squeeze(1))


POLICY = dict(d_model=16, n_heads=2, inner_size=32, dropout=0.1, n_pre_layers=1, n_core_layers=1)


def _model_and_data():
    log = successor_log(users=40, items=60, min_len=5, max_len=12, seed=3)
    return tiny_reasoner(60, 10, **POLICY), log.data


@pytest.mark.parametrize("exclude_history", [False, True])
def test_chunked_evaluation_gives_exactly_todays_metrics(exclude_history):
    policy, data = _model_and_data()
    full = evaluate_policy(policy, data, "test", 10, EvalConfig(exclude_history=exclude_history, batch_size=16), torch.device("cpu"))
    for chunk in (1, 7, 64):
        chunked = evaluate_policy(
            policy, data, "test", 10, EvalConfig(exclude_history=exclude_history, batch_size=16, item_chunk=chunk), torch.device("cpu")
        )
        assert chunked == full, chunk


def test_evaluate_chunked_refuses_zero_users():
    policy, _ = _model_and_data()
    empty = torch.zeros(0, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="zero users"):
        evaluate_chunked(lambda s, lengths: s, policy.item_scores, 60, empty, empty[:, 0], empty[:, 0], ks=[10], chunk=4)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_chunk_names_the_key(bad):
    with pytest.raises(LaresError, match="eval.item_chunk"):
        check_chunk(bad, "eval.item_chunk")
    with pytest.raises(LaresError, match="eval.item_chunk"):
        EvalConfig(item_chunk=bad).validate()


def test_a_policy_without_item_scores_is_refused_by_name():
    with pytest.raises(LaresError, match="eval.item_chunk.*item_scores"):
        item_scorer(torch.nn.Linear(2, 2), "eval.item_chunk")


def test_rpt_filter_and_greedy_slate_from_chunked_top_k_match_the_full_catalog():
    from lares_rl.rewards.builtin import ndcg
    from lares_rl.rpt.filter import top_k_filter
    from lares_rl.rpt.probe import greedy_reward

    policy, data = _model_and_data()
    seqs, lengths, targets = data.train_rows(10)
    full = top_k_filter(policy, seqs, lengths, targets, top=5, passes=2, batch_size=64)
    assert 0 < full.float().mean() < 1
    for chunk in (4, 13):
        assert torch.equal(top_k_filter(policy, seqs, lengths, targets, top=5, passes=2, batch_size=64, item_chunk=chunk), full)
        reward = lambda slate, target: ndcg(slate, target, k=10)  # noqa: E731
        cpu = torch.device("cpu")
        assert greedy_reward(policy, seqs, lengths, targets, reward, 10, cpu, item_chunk=chunk) == greedy_reward(
            policy, seqs, lengths, targets, reward, 10, cpu
        )


def test_recommend_with_item_chunk_gives_the_same_lists(tmp_path, capsys):
    policy, data = _model_and_data()
    histories = [[data.item_ids[int(i)] for i in data.items[data.offsets[u] : data.offsets[u + 1]][:6]] for u in range(8)]
    full = Recommender(policy, data.item_ids, 10, deterministic=True).recommend(histories, top_k=10)
    for exclude_seen in (True, False):
        want = Recommender(policy, data.item_ids, 10, deterministic=True).recommend(histories, top_k=10, exclude_seen=exclude_seen)
        got = Recommender(policy, data.item_ids, 10, deterministic=True, item_chunk=7).recommend(
            histories, top_k=10, exclude_seen=exclude_seen
        )
        assert [r.items for r in got] == [r.items for r in want]
    assert all(not set(h) & set(r.items) for h, r in zip(histories, full))
    with pytest.raises(LaresError, match="item_chunk"):
        Recommender(policy, data.item_ids, 10, item_chunk=0)

    path = save_spt_checkpoint(tmp_path / "ckpt.pt", policy, POLICY, data, max_len=10, dataset_name="synthetic")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(h) + "\n" for h in histories))
    assert main(["--checkpoint", str(path), "--input", str(src), "--deterministic", "--top-k", "10", "--item-chunk", "7"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["items"] for r in rows] == [r.items for r in full]
    assert main(["--checkpoint", str(path), "--input", str(src), "--item-chunk", "0"]) == 2
    assert "--item-chunk" in capsys.readouterr().err
