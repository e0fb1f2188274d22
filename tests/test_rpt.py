"""RPT pieces: group advantage, the GRPO-style loss (value + gradient vs a direct formula), key
renaming, a Collector round trip over NextItemEnv, the ClipPPOLoss path, the filter, bad input."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.objectives import ClipPPOLoss

from lares_rl.core.errors import LaresError
from lares_rl.data.sequences import SequenceData
from lares_rl.envs.batched_env import NextItemEnv
from lares_rl.policies.actor import make_slate_actor
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.policies.rollouts import replay_step_log_probs
from lares_rl.rewards import make_reward
from lares_rl.rewards.build import instantiate_reward
from lares_rl.rpt.algorithms import ALGORITHMS
from lares_rl.rpt.algorithms.grpo import GroupRelativeLoss, reference_log_probs
from lares_rl.rpt.algorithms.ppo import make_value_head
from lares_rl.rpt.config import ALGORITHMS as CONFIGURABLE
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.episodes import training_row_positions
from lares_rl.rpt.filter import top_k_filter
from lares_rl.rpt.losses import GroupAdvantage

N, L, G = 25, 6, 4


def tiny_policy(seed: int = 0, **kwargs) -> LaresReasoner:
    torch.manual_seed(seed)
    return LaresReasoner(N, max_len=L, d_model=16, n_heads=2, inner_size=32, dropout=0.2, **kwargs)


def tiny_data() -> SequenceData:
    rng = np.random.default_rng(0)
    return SequenceData.from_sequences([list(rng.integers(1, N + 1, size=int(rng.integers(6, 10)))) for _ in range(12)], num_items=N)


def make_env(data: SequenceData, histories: int = 3, slate: int = 5) -> NextItemEnv:
    users, target_pos = training_row_positions(data)
    return NextItemEnv(
        data.items,
        data.offsets,
        users,
        target_pos,
        target_pos + 1,
        N,
        batch_size=histories * G,
        max_len=L,
        slate_size=slate,
        group_size=G,
        reward_fn=make_reward("recall", k=slate),
        seed=0,
    )


def collected_batch(policy, exploration: str = "latent", histories: int = 3) -> TensorDict:
    """One real collected batch (env + actor through a Collector), flattened to [B]."""
    actor = make_slate_actor(policy, 5, exploration, seed=0)
    collector = Collector(
        make_env(tiny_data(), histories), actor, frames_per_batch=histories * G, total_frames=-1, auto_register_policy_transforms=False
    )
    batch = next(iter(collector)).reshape(-1)
    collector.shutdown()
    return batch


def test_group_advantage_matches_the_formula():
    reward = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.2, 0.9, 0.1])[:, None]
    td = GroupAdvantage(G)(TensorDict({"next": {"reward": reward}}, [12]))
    groups = reward.view(3, 4)
    expected = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)
    torch.testing.assert_close(td["advantage"], expected.reshape(12, 1))
    assert td["advantage"][4:8].abs().max() == 0
    assert td["group_zero_adv"].tolist() == [False] * 4 + [True] * 4 + [False] * 4
    with pytest.raises(ValueError, match="group_size"):
        GroupAdvantage(1)


def direct_objective(lp, mask, advantage, ref, beta):
    """The DESIGN formula written out row by row and step by step."""
    rows = []
    for g in range(lp.shape[0]):
        terms = [
            -(
                torch.exp(lp[g, j] - lp[g, j].detach()) * advantage[g]
                - beta * (torch.exp(ref[g, j] - lp[g, j]) - (ref[g, j] - lp[g, j]) - 1)
            )
            for j in range(lp.shape[1])
            if mask[g, j]
        ]
        rows.append(torch.stack(terms).mean())
    return torch.stack(rows).mean()


def test_group_relative_loss_value_and_gradient_match_the_formula():
    policy = tiny_policy()
    batch = collected_batch(policy)
    GroupAdvantage(G)(batch)
    reference = tiny_policy(seed=1).eval()
    reference_log_probs(reference, batch, batch["next", "target"])
    beta = 0.7
    loss = GroupRelativeLoss(policy, beta=beta)
    out = loss(batch)
    assert out.batch_size == torch.Size([]) and set(loss.out_keys) == set(out.keys())
    grads = torch.autograd.grad(out["loss_policy"] + out["loss_kl"], list(policy.parameters()), allow_unused=True)

    lp, mask = replay_step_log_probs(policy, batch, batch["next", "target"])
    expected = direct_objective(lp, mask, batch["advantage"].reshape(-1), batch["ref_step_log_prob"], beta)
    torch.testing.assert_close(out["loss_policy"] + out["loss_kl"], expected)
    expected_grads = torch.autograd.grad(expected, list(policy.parameters()), allow_unused=True, retain_graph=True)
    for got, want in zip(grads, expected_grads):
        if want is None:
            assert got is None or got.abs().max() == 0
        else:
            torch.testing.assert_close(got, want)
    assert out["ratio_mean"] == 1.0 and not out["kl_to_ref"].requires_grad
    # the policy term's gradient is -mean_g mean_j A_g grad lp
    policy_grad = torch.autograd.grad(loss(batch)["loss_policy"], policy.item_embedding.weight)[0]
    steps = mask.sum(1, keepdim=True)
    weighted = -((lp * mask / steps).sum(1) * batch["advantage"].reshape(-1)).mean()
    torch.testing.assert_close(policy_grad, torch.autograd.grad(weighted, policy.item_embedding.weight)[0])


def test_clipped_variant_equals_the_reference_on_the_first_epoch():
    policy = tiny_policy()
    batch = collected_batch(policy)
    GroupAdvantage(G)(batch)
    reference_log_probs(tiny_policy(seed=1).eval(), batch, batch["next", "target"])
    with torch.no_grad():
        batch["old_step_log_prob"] = replay_step_log_probs(policy, batch, batch["next", "target"])[0]
    plain, clipped = GroupRelativeLoss(policy)(batch), GroupRelativeLoss(policy, clip_epsilon=0.2)(batch)
    torch.testing.assert_close(plain["loss_policy"], clipped["loss_policy"])
    assert clipped["clip_fraction"] == 0 and "old_step_log_prob" in GroupRelativeLoss(policy, clip_epsilon=0.2).in_keys


def test_set_keys_renames_and_rejects_unknown_names():
    policy = tiny_policy()
    batch = collected_batch(policy)
    GroupAdvantage(G, advantage_key=("rpt", "adv"))(batch)
    reference_log_probs(policy, batch, batch["next", "target"])
    loss = GroupRelativeLoss(policy)
    with pytest.raises(KeyError, match="GroupAdvantage"):
        loss(batch)
    loss.set_keys(advantage=("rpt", "adv"))
    assert ("rpt", "adv") in loss.in_keys and "advantage" not in loss.in_keys
    assert torch.isfinite(loss(batch)["loss_policy"])
    with pytest.raises(ValueError, match="accepted keys are: advantage, target"):
        loss.set_keys(advantge="x")


def test_collector_round_trip_keeps_groups_contiguous():
    policy = tiny_policy()
    batch = collected_batch(policy, histories=3)
    for key in ["action", "num_steps", "rollout_seed", "action_log_prob", ("next", "reward"), ("next", "target")]:
        assert key in batch.keys(True), key
    assert batch.batch_size == torch.Size([3 * G]) and batch["action"].shape == (3 * G, 5)
    for key in ["group_id", ("history", "items"), ("history", "length"), ("next", "target")]:
        grouped = batch[key].reshape(3, G, -1)
        assert (grouped == grouped[:, :1]).all(), key
    assert len(set(batch["group_id"][::G].tolist())) == 3
    # the reward is the env's recall@5 of the actor's slate against the revealed target
    hit = (batch["action"] == batch["next", "target"][:, None]).any(1).float()
    torch.testing.assert_close(batch["next", "reward"].reshape(-1), hit)
    assert batch["num_steps"].unique().numel() > 1 and not batch["action_log_prob"].requires_grad


@pytest.mark.parametrize("advantage", ["group", "value"])
def test_clip_ppo_loss_path_runs_one_update(advantage):
    policy = tiny_policy()
    batch = collected_batch(policy, "plackett_luce")
    GroupAdvantage(G)(batch)
    actor = make_slate_actor(policy, 5, "plackett_luce", seed=0)
    critic = make_value_head(16) if advantage == "value" else None
    if critic is not None:
        batch["value_target"] = batch["next", "reward"]
    loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_bonus=False, critic_coeff=1.0 if critic else None)
    before = policy.item_embedding.weight.detach().clone()
    optimizer = torch.optim.Adam(loss.parameters(), lr=1e-2)
    out = loss(batch)
    assert {"loss_objective", "clip_fraction"} <= set(out.keys())
    assert out["clip_fraction"] == 0 and abs(out["kl_approx"]) < 1e-5  # replayed rollout == behaviour
    assert ("loss_critic" in out.keys()) == (critic is not None)
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    optimizer.step()
    assert not torch.equal(before, policy.item_embedding.weight)


def test_top_k_filter_keeps_reachable_targets():
    policy = tiny_policy()
    data = tiny_data()
    seqs, lengths, targets = data.train_rows(L)
    assert top_k_filter(policy, seqs, lengths, targets, top=N).all()
    keep_small = top_k_filter(policy, seqs, lengths, targets, top=3, passes=1, batch_size=7)
    keep_more = top_k_filter(policy, seqs, lengths, targets, top=3, passes=3, batch_size=7)
    assert torch.equal(keep_small, top_k_filter(policy, seqs, lengths, targets, top=3, passes=1, batch_size=7))
    assert (keep_more | ~keep_small).all() and 0 < keep_more.float().mean() < 1
    assert policy.training


def test_training_row_positions_match_train_rows():
    data = tiny_data()
    users, positions = training_row_positions(data)
    _, _, targets = data.train_rows(L)
    assert np.array_equal(data.items[positions], targets.numpy()) and len(users) == len(targets)


def test_bad_config_fails_before_training():
    with pytest.raises(LaresError, match=r"rpt.group_size must be >= 2 \(group advantage undefined\)"):
        RPTConfig(group_size=1).validate()
    with pytest.raises(LaresError, match="rpt.exploration"):
        RPTConfig(algorithm="ppo", exploration="latent").validate()
    with pytest.raises(LaresError, match="rpt.advantage"):
        RPTConfig(advantage="value").validate()
    reward = make_reward("ndcg", k=10)
    with pytest.raises(LaresError, match="rpt.slate_size"):
        RPTConfig(slate_size=N + 1).check_compatible(num_items=N, reward_fn=reward, recurrent=True)
    with pytest.raises(LaresError, match="reward.k"):
        RPTConfig(slate_size=5).check_compatible(num_items=N, reward_fn=make_reward("ndcg", k=N + 1), recurrent=True)
    with pytest.raises(LaresError, match="recurrent LARES policy"):
        RPTConfig().check_compatible(num_items=N, reward_fn=reward, recurrent=False)
    RPTConfig(exploration="plackett_luce").check_compatible(num_items=N, reward_fn=reward, recurrent=False)


def test_reward_from_hydra_node():
    fn = instantiate_reward(OmegaConf.create({"_target_": "lares_rl.rewards.recall", "_partial_": True, "k": 2}), N)
    assert fn(torch.tensor([[3, 4, 5]]), torch.tensor([5])).item() == 0.0
    with pytest.raises(LaresError, match="reward._target_='no.such.reward'"):
        instantiate_reward(OmegaConf.create({"_target_": "no.such.reward", "_partial_": True}), N)


def test_rollout_halting_config_names_its_key():
    with pytest.raises(LaresError, match=r"^rpt\.halt_tol=0\.0 is invalid"):
        RPTConfig(algorithm="latent_pg", exploration="gaussian", latent_noise=False, halt_tol=0.0).validate()
    with pytest.raises(LaresError, match=r"^rpt\.halt_k_max=0 is invalid"):
        RPTConfig(algorithm="latent_pg", exploration="gaussian", latent_noise=False, halt_tol=0.1, halt_k_max=0).validate()
    with pytest.raises(LaresError, match=r"^rpt\.halt_tol: halts evaluation-mode rollouts"):
        RPTConfig(halt_tol=0.1).validate()  # grpo: latent exploration samples k
    with pytest.raises(LaresError, match=r"^rpt\.halt_tol: 0\.1 needs a policy with a reasoning core"):
        RPTConfig(exploration="plackett_luce", latent_noise=False, halt_tol=0.1).check_compatible(
            num_items=N, reward_fn=make_reward("ndcg", k=10), recurrent=False
        )
    RPTConfig(algorithm="latent_pg", exploration="gaussian", latent_noise=False, halt_tol=0.1).validate()


def test_every_configurable_algorithm_has_its_module_in_the_registry():
    assert set(ALGORITHMS) == set(CONFIGURABLE)
