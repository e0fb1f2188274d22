"""RPT learns: the Gaussian latent policy gradient (its formula, its actor), the gradient-direction
check on a log with a known sequential signal, the probe diagnostics, and the bad input that
would leave RPT without a learning signal or poison it mid-run."""

import copy

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lares_rl.core.errors import LaresError
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.policies.actor import make_slate_actor
from lares_rl.policies.gaussian_latent import latent_scale
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.rewards import make_reward
from lares_rl.rpt.algorithms.latent_pg import LatentPolicyGradientLoss
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.direction import direction_check
from lares_rl.rpt.loop import train_rpt
from lares_rl.rpt.losses import GroupAdvantage
from lares_rl.rpt.probe import check_learning_signal, probe_metrics
from tests.synthetic import spt_trained_on_successor_log

L = 12


def tiny_policy(num_items: int, seed: int = 0) -> LaresReasoner:
    torch.manual_seed(seed)
    return LaresReasoner(num_items, max_len=L, d_model=32, n_heads=2, inner_size=64, dropout=0.2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return spt_trained_on_successor_log(tmp_path_factory.mktemp("spt"), max_len=L)


def batch_of(policy, sigma: float = 0.1, rows: int = 6, group: int = 4) -> TensorDict:
    items = torch.randint(1, policy.num_items + 1, (rows, L))
    td = TensorDict({"history": {"items": items.repeat_interleave(group, 0), "length": torch.full((rows * group,), L)}}, [rows * group])
    actor = make_slate_actor(policy, 5, "gaussian", latent_noise=False, seed=0, latent_sigma=sigma)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        td = actor(td)
    td.set(("next", "target"), items[:, -1].repeat_interleave(group))
    td.set(("next", "reward"), torch.rand(rows * group, 1))
    return GroupAdvantage(group)(td)


def test_gaussian_actor_explores_only_when_random():
    policy = tiny_policy(30)
    td = batch_of(policy)
    assert td["latent_noise"].abs().sum() > 0 and td["action"].shape == (24, 5)
    actor = make_slate_actor(policy, 5, "gaussian", latent_noise=False, seed=0)
    plain = actor(td.select("history").clone())  # deterministic: the served model's own top-K
    assert plain["latent_noise"].abs().sum() == 0
    torch.testing.assert_close(plain["logits"], policy.scores(plain["user_state"]))


def test_antithetic_pairs_mirror_and_dedupe_shares_states_within_a_group():
    from lares_rl.policies.rollouts import run_rollouts

    policy = tiny_policy(30)
    td = TensorDict({"history": {"items": torch.randint(1, 31, (3, L)).repeat_interleave(4, 0), "length": torch.full((12,), L)}}, [12])
    actor = make_slate_actor(policy, 5, "gaussian", latent_noise=False, seed=0, antithetic=True)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        out = actor(td)
    noise = out["latent_noise"].reshape(6, 2, -1)
    torch.testing.assert_close(noise[:, 0], -noise[:, 1])
    states = out["user_state"].reshape(3, 4, -1)
    torch.testing.assert_close(states, states[:, :1].expand_as(states))  # one evaluation rollout per history
    replay = run_rollouts(policy, td["history", "items"], td["history", "length"], out["num_steps"], out["rollout_seed"], dedupe=True)
    torch.testing.assert_close(replay["final_state"], out["user_state"])  # the loss replays exactly what acted


def test_latent_policy_gradient_matches_reinforce():
    """First update: ratio 1, and d loss / d mu_i = -A_i eps_i / (s_i B) (REINFORCE on log N(h; mu, s^2))."""
    policy = tiny_policy(30)
    td = batch_of(policy, sigma=0.2)
    loss = LatentPolicyGradientLoss(policy, sigma=0.2)
    mu = td["user_state"].clone().requires_grad_(True)
    scale = latent_scale(mu, 0.2)
    action = td["user_state"] + scale * td["latent_noise"]
    log_ratio = (td["latent_noise"].pow(2).sum(-1) - ((action - mu) / scale).pow(2).sum(-1)) / 2
    direct = -(log_ratio.exp() * td["advantage"].reshape(-1)).mean()
    (grad_direct,) = torch.autograd.grad(direct, mu)
    expected = -td["advantage"].reshape(-1, 1) * td["latent_noise"] / (scale * len(mu))
    torch.testing.assert_close(grad_direct, expected)
    out = loss(td)
    torch.testing.assert_close(out["ratio_mean"], torch.tensor(1.0))
    torch.testing.assert_close(out["loss_policy"], direct.detach(), rtol=1e-5, atol=1e-6)
    out["loss_policy"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())


def test_latent_policy_gradient_kl_term_is_zero_at_the_reference():
    policy = tiny_policy(30)
    td = batch_of(policy)
    out = LatentPolicyGradientLoss(policy, sigma=0.1, reference=copy.deepcopy(policy).eval(), beta=0.5)(td)
    assert abs(out["kl_to_ref"].item()) < 1e-5 and "loss_kl" in out.keys()


@pytest.mark.parametrize(
    "algorithm", ["latent_pg", pytest.param("grpo", marks=pytest.mark.slow), pytest.param("ppo", marks=pytest.mark.slow)]
)
def test_repeated_updates_on_fixed_histories_raise_their_reward(trained, algorithm):
    """The gradient-direction check for every RPT algorithm offered."""
    data, spt_policy = trained
    settings = {
        "latent_pg": dict(algorithm="latent_pg", exploration="gaussian", latent_noise=False, group_size=8, slate_size=50, lr=2e-3),
        "grpo": dict(algorithm="grpo", group_size=8, slate_size=50, lr=2e-3),
        "ppo": dict(algorithm="ppo", exploration="plackett_luce", group_size=8, slate_size=10, lr=2e-3),
    }[algorithm]
    cfg = RPTConfig(**settings)
    cfg.validate()
    rows = torch.arange(0, len(data.train_rows(L)[2]), 11)[:96]
    curve = direction_check(
        copy.deepcopy(spt_policy), data, L, cfg, make_reward("ndcg", k=cfg.slate_size), rows, updates=12, device=torch.device("cpu")
    )
    assert curve["reward"][-1] > curve["reward"][0] * 1.05, curve["reward"]


def test_probe_metrics_start_at_zero_kl_and_report_rank(trained):
    data, policy = trained
    seqs, lengths, targets = data.train_rows(L)
    point = probe_metrics(
        policy, copy.deepcopy(policy), (seqs[:50], lengths[:50], targets[:50]), make_reward("ndcg", k=10), 10, torch.device("cpu")
    )
    assert point["kl_to_ref"] == pytest.approx(0.0, abs=1e-6)
    assert 0 <= point["target_rank"] < data.num_items and point["rewards"].shape == (50,)


def test_constant_reward_on_the_probe_is_refused_before_training():
    with pytest.raises(LaresError, match=r"reward .* is 0 on all 3 probe histories .* no learning signal"):
        check_learning_signal(torch.zeros(3), "my.reward")
    check_learning_signal(torch.tensor([0.0, 1.0]), "my.reward")


def nan_after_first_batch(env_batch: int):
    """A user reward that breaks on the second env batch (of ``env_batch`` slates), after RPT started
    and saved its state; the checks and probes before training see it behave."""
    calls = {"n": 0}

    def reward(slate, target):
        calls["n"] += len(target) == env_batch
        out = (slate[:, 0] == target).float() + 0.1 * (slate == target[:, None]).any(-1).float()
        return out if calls["n"] <= 1 else out * float("nan")

    return reward


def test_reward_that_turns_nan_mid_run_names_reward_and_batch_and_keeps_the_state(trained, tmp_path):
    data, spt_policy = trained
    cfg = RPTConfig(
        algorithm="latent_pg",
        exploration="gaussian",
        latent_noise=False,
        group_size=4,
        histories_per_batch=32,
        slate_size=10,
        epochs=1,
        batches_per_epoch=3,
        filter_top=50,
    )
    cfg.validate()
    with pytest.raises(
        LaresError,
        match=r"reward .*nan_after_first_batch.* non-finite .* \(RPT epoch 0, batch 2/3\); training stopped before this update\. The last good state is kept: .*rpt_last\.pt",
    ):
        train_rpt(
            policy=copy.deepcopy(spt_policy),
            policy_config={},
            data=data,
            max_len=L,
            cfg=cfg,
            reward_fn=nan_after_first_batch(32 * 4),
            eval_cfg=EvalConfig(),
            run_dir=tmp_path,
            device=torch.device("cpu"),
            seed=0,
            config={"dataset": {"name": "successor"}},
            progress=False,
        )
    assert (tmp_path / "checkpoints" / "rpt_last.pt").is_file() and (tmp_path / "checkpoints" / "rpt_best.pt").is_file()


def test_reward_of_the_wrong_shape_mid_run_is_named():
    from lares_rl.rewards.builtin import check_reward_output

    with pytest.raises(LaresError, match=r"reward .* returned a torch.int64 tensor of shape \(4,\) for 4 slates"):
        check_reward_output(make_reward("ndcg", k=3), torch.zeros(4, dtype=torch.long), 4)
    with pytest.raises(LaresError, match=r"shape \(2, 2\) for 4 slates"):
        check_reward_output(make_reward("ndcg", k=3), torch.zeros(2, 2), 4)


def test_filter_cache_computes_once_per_key(tmp_path):
    from lares_rl.rpt.filter import cached_filter

    calls = []

    def compute():
        calls.append(1)
        return torch.tensor([True, False, True])

    first = cached_filter(tmp_path, "digest_top100x3", compute)
    again = cached_filter(tmp_path, "digest_top100x3", compute)
    other = cached_filter(tmp_path, "digest_top50x3", compute)
    assert len(calls) == 2 and torch.equal(first, again) and torch.equal(first, other)
    assert torch.equal(cached_filter(None, "ignored", compute), first) and len(calls) == 3
