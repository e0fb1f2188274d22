"""Adaptive reasoning depth (policies/halting.py, lares_rl/halting.py): the halting rule, that the
work really shrinks, determinism, and one clear error per bad input."""

from __future__ import annotations

import math

import pytest
import torch

from lares_rl.core.errors import LaresError
from lares_rl.data.synthetic import successor_log
from lares_rl.eval.adaptive_depth import check_halting, check_halting_applies, format_histogram, steps_histogram
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.policies.halting import encode_until_settled
from lares_rl.policies.reasoner import LaresReasoner
from tests.synthetic import random_histories, tiny_reasoner

N, L = 30, 8


def _policy(**kwargs) -> LaresReasoner:
    return tiny_reasoner(N, L, **kwargs)


def _batch(batch: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    return random_histories(batch, N, L, seed=3)


def _trajectory(policy: LaresReasoner, seq, lengths, k: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return policy.encode(seq, lengths, k=k)  # [B, k, d]


def _relative_changes(states: torch.Tensor) -> torch.Tensor:
    """[B, k - 1]: ||h_i - h_{i-1}|| / ||h_i|| for i = 2..k."""
    return (states[:, 1:] - states[:, :-1]).norm(dim=-1) / states[:, 1:].norm(dim=-1)


@torch.no_grad()
def test_each_user_stops_at_its_first_settled_step_with_that_steps_state():
    policy, (seq, lengths) = _policy(), _batch()
    states = _trajectory(policy, seq, lengths, k=6)
    changes = _relative_changes(states)
    ordered = changes[:, 1].sort().values
    tol = float(ordered[len(ordered) // 2 - 1 : len(ordered) // 2 + 1].mean())  # between two users: half settle at step 3, the others later
    torch.manual_seed(1)
    final, steps = encode_until_settled(policy, seq, lengths, tol, 6)
    below = changes < tol
    expected = torch.where(below.any(1), below.float().argmax(1) + 2, 6)
    assert torch.equal(steps, expected) and len(steps.unique()) > 1
    torch.testing.assert_close(final, states[torch.arange(len(steps)), steps - 1], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_a_tolerance_no_user_reaches_gives_the_fixed_depth():
    policy, (seq, lengths) = _policy(), _batch()
    torch.manual_seed(1)
    final, steps = encode_until_settled(policy, seq, lengths, 1e-30, 4)
    assert torch.equal(steps, torch.full_like(steps, 4))
    torch.testing.assert_close(final, _trajectory(policy, seq, lengths, k=4)[:, -1], rtol=0, atol=0)


@torch.no_grad()
def test_halted_users_leave_the_batch_so_later_steps_see_fewer_rows_and_columns():
    policy, (seq, lengths) = _policy(), _batch()
    seen: list[tuple[int, int]] = []
    step = policy.core_step

    def counting_step(thought, context, valid):
        seen.append(tuple(thought.shape[:2]))
        return step(thought, context, valid)

    policy.core_step = counting_step
    tol = float(_relative_changes(_trajectory(policy, seq, lengths, k=6))[:, 1].median())
    seen.clear()
    torch.manual_seed(1)
    _, steps = encode_until_settled(policy, seq, lengths, tol, 6)
    rows = [r for r, _ in seen]
    assert rows[0] == len(lengths) and rows == sorted(rows, reverse=True) and rows[-1] < rows[0]
    assert sum(rows) == int(steps.sum())  # exactly one core row-step per step a user took
    assert all(width <= L for _, width in seen)


def test_seeded_calls_replay_and_gradients_reach_the_core():
    policy, (seq, lengths) = _policy(), _batch()
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(encode_until_settled(policy, seq, lengths, 0.3, 5))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    runs[0][0].pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.core_block.parameters() if p.dim() > 1)


@pytest.mark.parametrize("tol", [0, -0.1, math.nan, math.inf, "0.1", True])
def test_bad_tolerance_is_one_error_naming_the_key(tol):
    with pytest.raises(LaresError, match=r"^eval\.halt_tol=.* is invalid"):
        check_halting(tol, None, "eval.halt_tol", "eval.halt_k_max")
    with pytest.raises(ValueError, match="tolerance"):
        encode_until_settled(_policy(), *_batch(2), tol, 4)


@pytest.mark.parametrize("k_max", [0, -2, 1.5])
def test_bad_k_max_is_one_error_naming_the_key(k_max):
    with pytest.raises(LaresError, match=r"^eval\.halt_k_max=.* is invalid"):
        check_halting(0.1, k_max, "eval.halt_tol", "eval.halt_k_max")
    with pytest.raises(LaresError, match="eval.halt_k_max"):
        EvalConfig(halt_tol=0.1, halt_k_max=k_max).validate()


def test_k_max_without_a_tolerance_is_refused_not_ignored():
    with pytest.raises(LaresError, match="eval.halt_k_max=3 has no effect without eval.halt_tol"):
        EvalConfig(halt_k_max=3).validate()


def test_halting_on_a_policy_without_a_reasoning_core_names_the_key():
    sasrec = _policy(n_core_layers=0)
    with pytest.raises(LaresError, match=r"eval\.halt_tol=0.1 needs a policy with a reasoning core"):
        check_halting_applies(sasrec, 0.1, "eval.halt_tol")
    with pytest.raises(ValueError, match="reasoning core"):
        encode_until_settled(sasrec, *_batch(2), 0.1, 4)
    check_halting_applies(sasrec, None, "eval.halt_tol")  # off: nothing to refuse


def test_evaluation_reports_mean_steps_and_every_users_steps():
    data = successor_log(users=40, items=N, min_len=4, max_len=12).data
    policy, cpu = _policy(), torch.device("cpu")
    fixed = evaluate_policy(policy, data, "valid", L, EvalConfig(k=3, batch_size=16), cpu)
    assert "mean_steps" not in fixed  # the default (fixed depth) output is unchanged
    steps: list[int] = []
    never = evaluate_policy(policy, data, "valid", L, EvalConfig(k=3, halt_tol=1e-30, batch_size=16), cpu, steps_out=steps)
    assert never.pop("mean_steps") == 3.0 and steps == [3] * 40
    for name, value in fixed.items():  # nobody halts early: the fixed-depth numbers, same seeded T0
        assert never[name] == pytest.approx(value, abs=1e-9), name
    steps.clear()
    adaptive = evaluate_policy(policy, data, "valid", L, EvalConfig(halt_tol=0.5, halt_k_max=6, batch_size=16), cpu, steps_out=steps)
    assert len(steps) == 40 and adaptive["mean_steps"] == pytest.approx(sum(steps) / 40) and max(steps) <= 6


def test_histogram_counts_and_formats():
    histogram = steps_histogram(torch.tensor([3, 2, 3, 3]))
    assert histogram == {2: 1, 3: 3} and list(histogram) == [2, 3]
    assert format_histogram(histogram) == "steps taken: 2: 1 users (25.0%), 3: 3 (75.0%)"
