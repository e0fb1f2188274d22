"""The inference fast path of the reasoner: row chunks and a final layer that computes only the
read position. Both must give what the plain full-width pass gives (up to float rounding), for
any chunk size, and must never touch training or gradient passes."""

from __future__ import annotations

import pytest
import torch

import lares_rl.policies.reasoner as reasoner_module
from lares_rl.policies.backbones import LayerStack
from lares_rl.policies.halting import encode_until_settled
from lares_rl.policies.layers import FMLPLayer, TransformerLayer
from lares_rl.policies.reasoner import LaresReasoner, inference_chunk_rows
from tests.synthetic import random_histories, tiny_reasoner

N, L = 40, 9


def _policy(**kwargs) -> LaresReasoner:
    return tiny_reasoner(N, L, **kwargs)


def _batch(batch: int = 37) -> tuple[torch.Tensor, torch.Tensor]:
    return random_histories(batch, N, L, seed=5)


def _reference_states(policy: LaresReasoner, seq, lengths, k: int) -> torch.Tensor:
    """The plain pass: autograd on disables both shortcuts."""
    torch.manual_seed(11)
    with torch.enable_grad():
        return policy.encode(seq, lengths, k).detach()


def _inference_states(policy: LaresReasoner, seq, lengths, k: int) -> torch.Tensor:
    torch.manual_seed(11)
    with torch.no_grad():
        return policy.encode(seq, lengths, k)


@pytest.mark.parametrize("chunk_positions", [1, 20, 64, 10**9])
@pytest.mark.parametrize("kwargs", [{}, {"n_core_layers": 0}, {"aggregation": "concat", "n_core_layers": 1}])
def test_inference_equals_the_plain_pass_for_any_chunk_size(monkeypatch, chunk_positions, kwargs):
    policy = _policy(**kwargs)
    seq, lengths = _batch()
    expected = _reference_states(policy, seq, lengths, 3)
    monkeypatch.setattr(reasoner_module, "INFERENCE_CHUNK_POSITIONS", chunk_positions)
    got = _inference_states(policy, seq, lengths, 3)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_chunks_really_split_the_batch(monkeypatch):
    policy = _policy()
    seq, lengths = _batch()
    monkeypatch.setattr(reasoner_module, "INFERENCE_CHUNK_POSITIONS", 2 * L)
    seen: list[int] = []
    policy.pre_block.register_forward_hook(lambda module, args, out: seen.append(out.shape[0]))
    with torch.no_grad():
        policy.encode(seq, lengths, 2)
    assert len(seen) > 1 and sum(seen) == len(lengths) and max(seen) <= 2


def test_no_chunks_when_training_or_with_gradients():
    policy = _policy()
    with torch.no_grad():
        assert inference_chunk_rows(policy, 10**6, L) is not None
        assert inference_chunk_rows(policy, 1, L) is None
        policy.train()
        assert inference_chunk_rows(policy, 10**6, L) is None
    policy.eval()
    with torch.enable_grad():
        assert inference_chunk_rows(policy, 10**6, L) is None


def test_training_pass_is_unchanged_by_the_inference_path():
    """Train mode draws dropout in the same order as before: two seeded calls agree and the
    states of every step are read from full-width passes (gradients reach the final layer's
    other positions' weights the same way)."""
    policy = _policy().train()
    seq, lengths = _batch()
    torch.manual_seed(2)
    first = policy.encode(seq, lengths, 3)
    torch.manual_seed(2)
    second = policy.encode(seq, lengths, 3)
    torch.testing.assert_close(first, second)
    first.sum().backward()
    assert all(p.grad is not None for p in policy.core_block.parameters())


@pytest.mark.parametrize(
    "layers",
    [
        [TransformerLayer(16, 2, 32, 0.0), TransformerLayer(16, 2, 32, 0.0)],
        [TransformerLayer(16, 2, 32, 0.0), FMLPLayer(16, 32, 0.0, L)],  # no forward_at: full pass, then gather
        [],
    ],
)
def test_layer_stack_forward_at_reads_what_forward_computes(layers):
    torch.manual_seed(4)
    stack = LayerStack(layers).eval()
    x = torch.randn(6, L, 16)
    lengths = torch.tensor([1, 3, L, 5, 2, L])
    valid = torch.arange(L)[None] < lengths[:, None]
    rows, last = torch.arange(6), lengths - 1
    with torch.no_grad():
        torch.testing.assert_close(stack.forward_at(x, valid, rows, last), stack(x, valid)[rows, last], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_positions", [1, 30, 10**9])
def test_halting_gives_the_same_states_and_steps_for_any_chunk_size(monkeypatch, chunk_positions):
    policy = _policy()
    seq, lengths = _batch()
    torch.manual_seed(8)
    with torch.no_grad():
        expected_states, expected_steps = encode_until_settled(policy, seq, lengths, 0.3, 6)
    monkeypatch.setattr(reasoner_module, "INFERENCE_CHUNK_POSITIONS", chunk_positions)
    torch.manual_seed(8)
    with torch.no_grad():
        states, steps = encode_until_settled(policy, seq, lengths, 0.3, 6)
    assert torch.equal(steps, expected_steps)
    torch.testing.assert_close(states, expected_states, rtol=1e-5, atol=1e-5)


def test_a_users_state_does_not_depend_on_how_many_users_share_the_call():
    """Distributed RPT relies on a row's state being the same in any batch, a batch of one
    included (a one-row product would otherwise take a kernel with other rounding). To float32
    rounding, not bitwise: on some CPUs (seen on an AMX machine, at fa10f41 too) the BLAS picks
    another kernel for batches of one and two, and states then differ by ~1e-8."""
    policy = _policy()
    seq, lengths = _batch(12)
    with torch.no_grad():
        torch.manual_seed(3)
        t0 = policy.initial_thought(torch.empty(12, L, 16))
        together = policy.encode(seq, lengths, 3, t0=t0)
        for size in (1, 2, 5):
            torch.testing.assert_close(policy.encode(seq[:size], lengths[:size], 3, t0=t0[:size]), together[:size], rtol=0, atol=1e-6)
