"""The paired bootstrap behind `lares-rl run`'s table: per-user values from the evaluation pass
itself, and an interval that covers the change and narrows with more users."""

import numpy as np
import pytest
import torch

from lares_rl.data.sequences import SequenceData
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.eval.paired import change_with_interval, paired_bootstrap, per_user_metric
from lares_rl.policies.reasoner import LaresReasoner

N, L = 40, 6


def _data() -> SequenceData:
    rng = np.random.default_rng(0)
    return SequenceData.from_sequences([list(rng.integers(1, N + 1, size=int(rng.integers(6, 12)))) for _ in range(30)], num_items=N)


@pytest.mark.parametrize(
    "cfg",
    [EvalConfig(), EvalConfig(exclude_history=True), EvalConfig(item_chunk=7, batch_size=8)],
    ids=["full", "history-masked", "chunked"],
)
def test_per_user_values_average_to_the_evaluation_mean(cfg):
    torch.manual_seed(0)
    policy = LaresReasoner(N, max_len=L, d_model=16, n_heads=2, inner_size=32)
    data, device = _data(), torch.device("cpu")
    for metric in ("ndcg@10", "recall@5"):
        values = per_user_metric(policy, data, "test", L, cfg, device, metric)
        assert values.shape == (data.num_users,)
        mean = evaluate_policy(policy, data, "test", L, cfg, device)[metric]
        assert abs(float(values.mean()) - mean) < 1e-12, metric


def test_paired_bootstrap_interval_covers_the_change_and_shrinks_with_more_users():
    generator = torch.Generator().manual_seed(0)
    before = (torch.rand(400, generator=generator) < 0.1).double()
    after = torch.where(torch.rand(400, generator=generator) < 0.05, 1.0, before)  # a few more hits
    small = paired_bootstrap(before, after, resamples=500)
    assert small["ci_low"] <= small["change"] <= small["ci_high"] and small["change"] > 0
    large = paired_bootstrap(before.repeat(16), after.repeat(16), resamples=500)
    assert (
        large["ci_high"] - large["ci_low"] < 0.5 * (small["ci_high"] - small["ci_low"]) and large["p_not_better"] <= small["p_not_better"]
    )
    same = paired_bootstrap(before, before, resamples=100)
    assert same["change"] == same["ci_low"] == same["ci_high"] == 0.0 and same["p_not_better"] == 1.0
    assert change_with_interval(small).startswith(f"{100 * small['change']:+.1f}% (95%: ")


def test_unpaired_values_are_refused():
    with pytest.raises(ValueError, match="one value per user on both sides"):
        paired_bootstrap(torch.zeros(5), torch.zeros(6))
