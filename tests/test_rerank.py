"""Post-hoc re-ranking baselines: strength 0 keeps the model's order, strength moves the lists the
intended way, and only the candidates are re-ordered (above every other item)."""

import torch

from lares_rl.eval.rerank import mmr, popularity_penalty, reranked

# one user, items 1..6 scored in decreasing order; item 1 and 2 are very popular, 5 and 6 rare
SCORES = torch.tensor([[float("-inf"), 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
POPULARITY = torch.tensor([0.0, 1000.0, 900.0, 50.0, 40.0, 1.0, 0.0])
# items 1, 2, 3 share one category, 4 and 5 another, 6 a third
FEATURES = torch.tensor(
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
)


def order(scores: torch.Tensor) -> list[int]:
    return (scores[0, 1:].argsort(descending=True) + 1).tolist()


def test_strength_zero_keeps_the_model_order():
    assert order(popularity_penalty(SCORES, POPULARITY, 0.0)) == [1, 2, 3, 4, 5, 6]
    assert order(mmr(SCORES, FEATURES, 0.0)) == [1, 2, 3, 4, 5, 6]


def test_popularity_penalty_lifts_rare_items():
    lifted = order(popularity_penalty(SCORES, POPULARITY, 50.0))
    assert lifted[:2] == [6, 5] and lifted[-2:] == [2, 1]


def test_mmr_interleaves_categories():
    assert order(mmr(SCORES, FEATURES, 0.5))[:3] == [1, 4, 6]


def test_only_candidates_move_and_stay_above_the_rest():
    out = popularity_penalty(SCORES, POPULARITY, 50.0, candidates=3)  # re-orders items 1..3 only
    assert order(out) == [3, 2, 1, 4, 5, 6] and out[0, 0] == float("-inf")
    assert order(mmr(SCORES, FEATURES, 0.5, candidates=4, picks=2)) == [1, 2, 3, 4, 5, 6][:1] + [4, 2, 3, 5, 6]


def test_reranked_wraps_a_score_function():
    fn = reranked(lambda seq, lengths: SCORES.expand(len(seq), -1), lambda scores: mmr(scores, FEATURES, 0.5))
    assert order(fn(torch.zeros(1, 3, dtype=torch.long), torch.ones(1))) == order(mmr(SCORES, FEATURES, 0.5))
