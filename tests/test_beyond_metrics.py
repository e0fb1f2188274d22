"""Beyond-accuracy measures: hand-computed values on tiny lists, and their place in evaluation."""

import math

import pytest
import torch

from lares_rl.data import SequenceData
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.eval.report import results_table
from lares_rl.metrics.beyond import BeyondAccuracy, gini, intra_list_distance, self_information
from lares_rl.rewards.context import ItemContext
from tests.synthetic import tiny_reasoner


def tiny_policy_and_data(items: int = 25):
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(1, items + 1, (8,), generator=generator).tolist() for _ in range(30)]
    return tiny_reasoner(items, 8), SequenceData.from_sequences(sequences, num_items=items)


POPULARITY = torch.tensor([0.0, 6.0, 2.0, 0.0, 0.0])  # items 1..4; C = 8, N = 4
CATEGORIES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])


def test_self_information_is_smoothed_minus_log2_share():
    expected = [-math.log2((c + 1) / 12) for c in (0, 6, 2, 0, 0)]
    torch.testing.assert_close(self_information(POPULARITY), torch.tensor(expected))


def test_intra_list_distance_by_hand():
    lists = CATEGORIES[torch.tensor([[1, 2], [1, 3], [3, 4]])]
    # same genre: 0; disjoint genres: 1; an item without categories is at distance 1
    torch.testing.assert_close(intra_list_distance(lists), torch.tensor([0.0, 1.0, 1.0]))
    three = intra_list_distance(CATEGORIES[torch.tensor([[1, 2, 3]])])
    assert three.item() == pytest.approx((0 + 1 + 1) / 3)
    assert intra_list_distance(CATEGORIES[torch.tensor([[1]])]).item() == 0.0


def test_gini_of_equal_and_concentrated_exposure():
    assert gini(torch.tensor([3, 3, 3, 3])).item() == pytest.approx(0.0)
    assert gini(torch.tensor([0, 0, 0, 8])).item() == pytest.approx(0.75)  # (n - 1) / n for one item taking all
    assert gini(torch.zeros(4)).item() == 0.0


def test_accumulated_lists_give_every_measure_at_every_cut_off():
    beyond = BeyondAccuracy(POPULARITY, CATEGORIES, ks=[1, 2])
    # two users; scores rank items 1 > 2 > 3 > 4 for the first, 3 > 1 > ... for the second
    beyond.observe(torch.tensor([[float("-inf"), 4.0, 3.0, 2.0, 1.0]]))
    beyond.observe(torch.tensor([[float("-inf"), 3.0, 1.0, 4.0, 2.0]]))
    out = beyond.result()
    information = self_information(POPULARITY)
    # lists: [1, 2] and [3, 1]
    assert out["coverage@1"] == pytest.approx(2 / 4) and out["coverage@2"] == pytest.approx(3 / 4)
    assert out["novelty@1"] == pytest.approx(((information[1] + information[3]) / 2).item())
    assert out["popularity@2"] == pytest.approx((6 + 2 + 0 + 6) / 4)
    assert out["ild@2"] == pytest.approx((0.0 + 1.0) / 2)
    assert out["gini@1"] == pytest.approx(gini(torch.tensor([1, 0, 1, 0])).item())


def test_evaluation_adds_the_measures_only_with_a_context():
    policy, data = tiny_policy_and_data()
    plain = evaluate_policy(policy, data, "test", 8, EvalConfig(), torch.device("cpu"))
    assert not any(name.startswith("coverage") for name in plain)
    context = ItemContext(popularity=torch.ones(data.num_items + 1), item_embeddings=policy.item_embedding.weight.detach())
    full = evaluate_policy(policy, data, "test", 8, EvalConfig(), torch.device("cpu"), context=context)
    assert {f"{name}@{k}" for name in ("coverage", "novelty", "popularity", "gini", "ild") for k in (5, 10, 20)} <= set(full)
    assert {name: full[name] for name in plain} == plain  # accuracy is untouched by the extra pass
    assert 0 < full["coverage@10"] <= 1 and full["popularity@10"] == pytest.approx(1.0)
    table = results_table({"spt": full}, [10])
    assert "coverage@10 | novelty@10 | popularity@10 | gini@10 | ild@10 |" in table
    assert "coverage@10" not in results_table({"spt": plain}, [10])
    no_vectors = evaluate_policy(
        policy, data, "test", 8, EvalConfig(), torch.device("cpu"), context=ItemContext(popularity=torch.ones(data.num_items + 1))
    )
    assert "coverage@10" in no_vectors and "ild@10" not in no_vectors  # a policy without an item table on data without categories
