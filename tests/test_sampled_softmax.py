"""L_rec over sampled / in-batch negatives (lares_rl/sampled_softmax.py) and its SPT wiring."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from lares_rl.catalog.sampled_softmax import SampledSoftmax
from lares_rl.core.errors import LaresError
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.losses import recommendation_loss
from tests.cli_process import run_in_process

ITEMS, D = 30, 8


def _table_and_counts():
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(ITEMS + 1, D, generator=generator)
    counts = torch.cat([torch.zeros(1), torch.arange(ITEMS, 0, -1).float() ** 2]).long()  # skewed popularity
    return table, counts


def test_in_batch_loss_is_the_direct_formula_with_inclusion_probability_log_q():
    table, counts = _table_and_counts()
    softmax = SampledSoftmax("in_batch", counts, 1, "popularity", logq_correction=True)
    states = torch.randn(5, D, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([3, 7, 3, 12, 1])
    got = softmax.loss(states, targets, lambda s, items: s @ table[items].T)
    unique = torch.tensor([1, 3, 7, 12])
    p = (counts.double() + 1)[unique] / (counts[1:].double() + 1).sum()
    log_q = torch.log(1 - (1 - p) ** len(targets)).float()
    want = F.cross_entropy(states @ table[unique].T - log_q, torch.tensor([1, 2, 1, 3, 0]))
    assert torch.isclose(got, want, atol=1e-6)


def test_sampled_negatives_that_hit_the_target_are_masked(monkeypatch):
    table, counts = _table_and_counts()
    softmax = SampledSoftmax("sampled", counts, 3, "uniform", logq_correction=False)
    monkeypatch.setattr(softmax, "draw", lambda count, device: torch.tensor([4, 9, 4]))
    states = torch.randn(2, D, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([4, 2])
    got = softmax.loss(states, targets, lambda s, items: s @ table[items].T)
    row0 = torch.stack([states[0] @ table[4], states[0] @ table[9]])  # both copies of the target dropped
    row1 = torch.stack([states[1] @ table[2], states[1] @ table[4], states[1] @ table[9], states[1] @ table[4]])
    want = (-torch.log_softmax(row0, 0)[0] - torch.log_softmax(row1, 0)[0]) / 2
    assert torch.isclose(got, want, atol=1e-6)


def _gradient(loss_fn, states):
    states = states.clone().requires_grad_(True)
    loss_fn(states).backward()
    return states.grad.flatten()


def test_log_q_correction_makes_popularity_sampled_gradients_match_the_full_softmax():
    """The point of log-Q: with popularity-drawn negatives, the corrected gradient estimates the full
    softmax's; without it, popular items are over-penalised and the direction is off."""
    table, counts = _table_and_counts()
    states = torch.randn(4, D, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([30, 25, 2, 17])
    scorer = lambda s, items: s @ table[items].T  # noqa: E731
    full = _gradient(lambda s: F.cross_entropy((s @ table.T)[:, 1:], targets - 1), states)
    errors = {}
    for corrected in (True, False):
        torch.manual_seed(0)
        softmax = SampledSoftmax("sampled", counts, 20000, "popularity", logq_correction=corrected)
        errors[corrected] = ((_gradient(lambda s: softmax.loss(s, targets, scorer), states) - full).norm() / full.norm()).item()
    assert errors[True] < 0.05  # measured 0.022; more negatives shrink it further
    assert errors[False] > 0.1  # measured 0.14, and it does not shrink with more negatives: a bias, not noise


def test_draws_follow_the_proposal():
    _, counts = _table_and_counts()
    torch.manual_seed(0)
    drawn = SampledSoftmax("sampled", counts, 1, "popularity", True).draw(200_000, torch.device("cpu"))
    share = torch.bincount(drawn, minlength=ITEMS + 1)[1:].double() / len(drawn)
    want = (counts[1:].double() + 1) / (counts[1:].double() + 1).sum()
    assert torch.allclose(share, want, atol=3e-3)
    uniform = SampledSoftmax("sampled", counts, 1, "uniform", True).draw(1000, torch.device("cpu"))
    assert uniform.min() >= 1 and uniform.max() <= ITEMS


def test_recommendation_loss_uses_the_candidate_softmax_in_dense_mode_too():
    torch.manual_seed(0)
    model = LaresReasoner(ITEMS, 6, d_model=16, inner_size=32, dropout=0.0, t0_init="zero", step_sampler="constant", mean_recurrence=2)
    seq = torch.tensor([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 0, 0]])
    lengths = torch.tensor([3, 4])
    dense_targets = torch.tensor([[2, 3, 9, 0, 0, 0], [5, 6, 7, 11, 0, 0]])
    softmax = SampledSoftmax("in_batch", torch.ones(ITEMS + 1, dtype=torch.long), 1, "popularity", logq_correction=False)
    loss, _ = recommendation_loss(model, seq, lengths, dense_targets, k=2, softmax=softmax)
    states = model.encode(seq, lengths, k=2, all_positions=True)[:, -1][dense_targets[:, :4] > 0]
    flat = dense_targets[:, :4][dense_targets[:, :4] > 0]
    unique, label = torch.unique(flat, return_inverse=True)
    assert torch.isclose(loss, F.cross_entropy(states @ model.item_embedding.weight[unique].T, label), atol=1e-6)


@pytest.mark.parametrize(
    "key,value", [("negatives", "softmax"), ("num_negatives", 0), ("negative_proposal", "zipf"), ("logq_correction", "yes")]
)
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(LaresError, match=f"spt.{key}"):
        SPTConfig(**{key: value}).validate()


def test_more_negatives_than_items_is_refused_by_name():
    model = LaresReasoner(ITEMS, 6, d_model=16, inner_size=32)
    with pytest.raises(LaresError, match="spt.num_negatives.*30 items"):
        SPTConfig(negatives="sampled", num_negatives=ITEMS).rec_softmax(model, torch.tensor([1, 2]))
    assert SPTConfig().rec_softmax(model, torch.tensor([1, 2])) is None


@pytest.mark.parametrize("negatives", ["sampled", "in_batch"])
def test_spt_cli_trains_with_candidate_softmax_and_chunked_evaluation(tmp_path, custom_data_args, negatives, monkeypatch, capsys):
    code, _, err = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        "spt",
        *custom_data_args,
        "spt.epochs=2",
        "spt.batch_size=64",
        "spt.mode=dense",
        "policy.d_model=16",
        "policy.inner_size=32",
        f"spt.negatives={negatives}",
        "spt.num_negatives=16",
        "eval.item_chunk=7",
        "hydra.run.dir=run",
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["lares"]["ndcg@10"])
