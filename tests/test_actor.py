"""The TorchRL slate actor: keys and shapes, exact rollout replay, exploration modes, slate distributions."""

import itertools

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lares_rl.policies.actor import make_slate_actor
from lares_rl.policies.catalog_softmax import final_entropy
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.policies.rollouts import replay_step_log_probs, run_rollouts
from lares_rl.policies.slates import CategoricalSlate, PlackettLuceSlate
from tests.synthetic import tiny_reasoner

N, L, B, K = 30, 6, 12, 4


def tiny_policy(**kwargs) -> LaresReasoner:
    """In training mode, dropout 0.3 unless told otherwise: the actor explores as during RPT."""
    return tiny_reasoner(N, L, **({"dropout": 0.3} | kwargs)).train()


def observation(batch: int = B, seed: int = 1) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    length = torch.randint(1, L + 1, (batch,), generator=g)
    items = torch.randint(1, N + 1, (batch, L), generator=g) * (torch.arange(L) < length[:, None])
    return TensorDict({"history": {"items": items, "length": length}}, batch_size=[batch])


def explore(actor, td):
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        return actor(td.clone())


@pytest.mark.parametrize("exploration", ["latent", "categorical", "plackett_luce"])
def test_output_keys_and_shapes(exploration):
    actor = make_slate_actor(tiny_policy(), K, exploration, seed=0)
    out = explore(actor, observation())
    assert out["action"].shape == (B, K) and out["action"].dtype == torch.int64
    assert ((out["action"] >= 1) & (out["action"] <= N)).all()
    assert all(len(set(row)) == K for row in out["action"].tolist())  # distinct items, no padding
    assert out["num_steps"].shape == (B,) and (out["num_steps"] >= 1).all()
    assert out["rollout_seed"].dtype == torch.int64 and (out["rollout_seed"] >= 0).all()
    assert out["action_log_prob"].shape == (B,) and out["logits"].shape == (B, N + 1)
    assert len(set(out["num_steps"].tolist())) > 1  # each rollout draws its own k
    if exploration == "latent":
        assert torch.equal(out["action"], out["logits"].topk(K).indices) and (out["action_log_prob"] == 0).all()
    assert set(actor.out_keys) >= {"action", "action_log_prob", "num_steps", "rollout_seed"}
    assert actor.module[0].policy.training  # the caller's mode is restored


def test_replay_is_exact_in_train_mode_and_seeds_matter():
    policy = tiny_policy()
    policy.train()
    out = explore(make_slate_actor(policy, K, seed=0), observation())
    target = torch.randint(1, N + 1, (B,), generator=torch.Generator().manual_seed(2))
    lp1, mask = replay_step_log_probs(policy, out, target)
    lp2, _ = replay_step_log_probs(policy, out, target)
    assert lp1.requires_grad and torch.equal(lp1, lp2)
    assert torch.equal(mask.sum(1), out["num_steps"]) and (lp1[~mask] == 0).all() and (lp1[mask] < 0).all()
    # the replayed final step reproduces the scores the actor acted on
    final = lp1.gather(1, (out["num_steps"] - 1)[:, None]).squeeze(1)
    torch.testing.assert_close(final, torch.log_softmax(out["logits"], -1).gather(1, target[:, None]).squeeze(1))
    other = out.clone()
    other["rollout_seed"] = other["rollout_seed"] + 1
    lp3, _ = replay_step_log_probs(policy, other, target)
    assert not torch.allclose(lp1[mask], lp3[mask])  # new noise and dropout masks
    # replay never touches the global RNG stream
    torch.manual_seed(5)
    replay_step_log_probs(policy, out, target)
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(1))


def test_deterministic_mode_uses_eval_depth_and_top_k():
    policy = tiny_policy(mean_recurrence=3)
    actor = make_slate_actor(policy, K, "plackett_luce", seed=0)
    td = observation()
    first, second = actor(td.clone()), actor(td.clone())  # no exploration context: deterministic
    assert (first["num_steps"] == 3).all() and (first["rollout_seed"] < 0).all()
    assert torch.equal(first["action"], first["logits"].topk(K).indices)
    assert torch.equal(first["action"], second["action"])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert torch.equal(actor(td.clone())["action"], first["action"])


def test_deterministic_call_replays_a_recorded_rollout():
    """What ClipPPOLoss sees: DETERMINISTIC + recorded keys -> the same logits as at collection."""
    actor = make_slate_actor(tiny_policy(), K, "categorical", seed=0)
    out = explore(actor, observation())
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        replay = actor.get_dist(out.clone())
    assert torch.equal(replay.logits, out["logits"])
    torch.testing.assert_close(replay.log_prob(out["action"]), out["action_log_prob"])


def all_slates(n: int, k: int) -> torch.Tensor:
    return torch.tensor(list(itertools.permutations(range(1, n + 1), k)))


def test_plackett_luce_is_a_distribution_over_slates():
    logits = torch.tensor([float("-inf"), 1.0, -0.5, 2.0, 0.3])
    dist = PlackettLuceSlate(logits, slate_size=2)
    slates = all_slates(4, 2)
    probs = dist.log_prob(slates).exp()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    p = torch.softmax(logits, 0)
    a, b = 3, 1
    torch.testing.assert_close(dist.log_prob(torch.tensor([a, b])).exp(), p[a] * p[b] / (1 - p[a]))
    torch.manual_seed(0)
    samples = PlackettLuceSlate(logits.expand(20000, 5), 2).sample()
    assert (samples > 0).all()
    first = torch.bincount(samples[:, 0], minlength=5).float() / 20000
    torch.testing.assert_close(first, p, atol=0.015, rtol=0)
    assert torch.equal(dist.deterministic_sample, torch.tensor([3, 1]))


def test_categorical_slate_samples_the_first_slot_and_fills_by_top_k():
    logits = torch.tensor([float("-inf"), 1.0, -0.5, 2.0, 0.3])
    dist = CategoricalSlate(logits.expand(5000, 5), slate_size=3)
    torch.manual_seed(0)
    slates = dist.sample()
    for slate in slates[:50].tolist():
        rest = [i for i in [3, 1, 4, 2] if i != slate[0]][:2]
        assert slate[1:] == rest
    torch.testing.assert_close(dist.log_prob(slates), torch.log_softmax(logits, 0)[slates[:, 0]])
    first = torch.bincount(slates[:, 0], minlength=5).float() / 5000
    torch.testing.assert_close(first, torch.softmax(logits, 0), atol=0.02, rtol=0)


def test_sasrec_and_bad_arguments():
    sasrec = tiny_policy(n_core_layers=0, step_sampler="none", t0_init="zero", mean_recurrence=1)
    out = explore(make_slate_actor(sasrec, K, "plackett_luce", seed=0), observation())
    assert (out["num_steps"] == 1).all()
    with pytest.raises(ValueError, match="slate_size"):
        make_slate_actor(tiny_policy(), N + 1)
    with pytest.raises(ValueError, match="exploration"):
        make_slate_actor(tiny_policy(), K, "epsilon")


def test_item_sampling_without_latent_noise_explores_only_the_slate():
    actor = make_slate_actor(tiny_policy(mean_recurrence=2), K, "plackett_luce", latent_noise=False, seed=0)
    td = observation()
    first, second = explore(actor, td), explore(actor, td)
    assert (first["num_steps"] == 2).all() and (first["rollout_seed"] < 0).all()
    assert torch.equal(first["logits"], second["logits"]) and not torch.equal(first["action"], second["action"])
    with pytest.raises(ValueError, match="latent_noise"):
        make_slate_actor(tiny_policy(), K, "latent", latent_noise=False)


def test_final_entropy_has_a_finite_gradient_with_a_padding_column():
    logits = torch.tensor([[float("-inf"), 0.3, -1.0, 2.0]], requires_grad=True)
    final_entropy(logits).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0] == 0


def test_halting_rollouts_record_the_steps_taken_and_replay_exactly():
    """rpt.halt_tol: evaluation rollouts stop per row; the loss's replay halts the same way, so the
    Gaussian latent policy's ratio is exactly 1 on the first update."""
    from lares_rl.rpt.algorithms.latent_pg import LatentPolicyGradientLoss

    policy = tiny_policy(mean_recurrence=3)
    td = observation(batch=16)
    tol = 0.35  # between the per-row changes of this tiny model: rows halt at different steps
    actor = make_slate_actor(policy, K, "gaussian", latent_noise=False, seed=0, halting=(tol, 6))
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        out = actor(td.clone())
    steps = out["num_steps"]
    assert steps.min() >= 2 and steps.max() <= 6 and len(steps.unique()) > 1
    replay = run_rollouts(
        policy, td["history", "items"], td["history", "length"], steps, out["rollout_seed"], dedupe=True, halting=(tol, 6)
    )
    assert torch.equal(replay["num_steps"], steps)
    torch.testing.assert_close(replay["final_state"], out["user_state"], rtol=0, atol=0)
    out.set("advantage", torch.randn(16, 1))
    out.set(("next", "target"), torch.randint(1, N + 1, (16,)))
    terms = LatentPolicyGradientLoss(policy, sigma=0.1, halting=(tol, 6))(out)
    torch.testing.assert_close(terms["ratio_mean"], torch.tensor(1.0))
    terms["loss_policy"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.core_block.parameters())


def test_halting_leaves_train_mode_rollouts_at_their_sampled_depth():
    policy = tiny_policy()
    td = observation()
    ks = torch.tensor([1, 2, 3, 4] * 3)
    seeds = torch.full((B,), 7)
    fixed = run_rollouts(policy, td["history", "items"], td["history", "length"], ks, seeds)
    halted = run_rollouts(policy, td["history", "items"], td["history", "length"], ks, seeds, halting=(10.0, 6))
    assert torch.equal(halted["num_steps"], ks) and torch.equal(halted["final_state"], fixed["final_state"])
    with pytest.raises(ValueError, match="final-step outputs only"):
        run_rollouts(
            policy, td["history", "items"], td["history", "length"], ks, -1 - seeds, torch.ones(B, dtype=torch.int64), halting=(0.1, 4)
        )
