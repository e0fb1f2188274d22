"""RPT slates from the chunked running top-K (``eval.item_chunk``): the actor of the top-K
explorations (latent, gaussian) gives exactly the full-catalog slates and rewards without the
[B, N + 1] score matrix, and a short RPT run is the same run either way."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lares_rl.policies.actor import make_slate_actor
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.rewards import ndcg

N, L, B, K, G = 30, 6, 16, 5, 4


def _policy() -> LaresReasoner:
    torch.manual_seed(0)
    return LaresReasoner(N, max_len=L, d_model=16, n_heads=2, inner_size=32, dropout=0.2)


def _observation() -> TensorDict:
    g = torch.Generator().manual_seed(3)
    length = torch.randint(1, L + 1, (B,), generator=g)
    items = torch.randint(1, N + 1, (B, L), generator=g) * (torch.arange(L) < length[:, None])
    return TensorDict({"history": {"items": items, "length": length}}, batch_size=[B])


@pytest.mark.parametrize(
    "exploration, options",
    [("latent", {}), ("gaussian", {"latent_noise": False, "antithetic": True}), ("gaussian", {"latent_noise": True})],
)
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_slates_and_rewards_equal_the_full_catalog_ones(exploration, options, chunk):
    policy, td = _policy(), _observation()
    full = make_slate_actor(policy, K, exploration, seed=5, **options)
    chunked = make_slate_actor(policy, K, exploration, seed=5, item_chunk=chunk, **options)
    assert isinstance(chunked, TensorDictSequential)
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        one, two = full(td.clone()), chunked(td.clone())
    assert "logits" not in two.keys()  # no [B, N + 1] matrix was kept
    assert torch.equal(one["action"], two["action"])
    assert torch.equal(one["num_steps"], two["num_steps"]) and torch.equal(one["rollout_seed"], two["rollout_seed"])
    assert torch.equal(one["action_log_prob"], two["action_log_prob"])
    target = torch.randint(1, N + 1, (B,), generator=torch.Generator().manual_seed(9))
    assert torch.equal(ndcg(one["action"], target, k=K), ndcg(two["action"], target, k=K))


@pytest.mark.parametrize("exploration", ["categorical", "plackett_luce"])
def test_item_sampling_keeps_the_full_catalog_distribution(exploration):
    """Sampling from the softmax over the whole catalog needs every score: no chunking there."""
    actor = make_slate_actor(_policy(), K, exploration, seed=0, item_chunk=7)
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        out = actor(_observation())
    assert out["logits"].shape == (B, N + 1)


@pytest.mark.slow
def test_an_rpt_run_with_item_chunks_is_the_full_catalog_run(tmp_path):
    """Through the CLI (latent_pg, the default): the same rewards, losses and weights."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.synthetic import write_sequential_csv
    from tests.test_cli import run_cli

    path = write_sequential_csv(tmp_path / "log.csv", users=40, items=30, length=10, seed=0)
    data = [
        "dataset=custom",
        f"dataset.path={path}",
        "dataset.user_col=uid",
        "dataset.item_col=sku",
        "dataset.time_col=ts",
        "dataset.max_len=8",
        "progress=false",
        "device=cpu",
    ]
    assert run_cli(tmp_path, "spt", *data, "policy.d_model=16", "policy.inner_size=32", "spt.epochs=1", "hydra.run.dir=spt").returncode == 0
    rpt = [
        *data,
        f"checkpoint={tmp_path / 'spt' / 'checkpoints' / 'spt_best.pt'}",
        "rpt.histories_per_batch=40",
        "rpt.epochs=1",
        "rpt.batches_per_epoch=2",
        "rpt.slate_size=10",
        "cache_dir=none",
    ]
    for name, chunk in (("full", "null"), ("chunked", "7")):
        result = run_cli(tmp_path, "rpt", *rpt, f"eval.item_chunk={chunk}", f"hydra.run.dir={name}")
        assert result.returncode == 0, result.stderr[-3000:]
    curves = {}
    for name in ("full", "chunked"):
        events = EventAccumulator(str(tmp_path / name / "tb" / "rpt"))
        events.Reload()
        curves[name] = {
            tag: [e.value for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]
            if "/losses/" in tag or tag.endswith("reward_mean")
        }
    assert curves["full"] and curves["full"] == curves["chunked"]
    weights = [
        torch.load(tmp_path / name / "checkpoints" / "rpt_last.pt", weights_only=False)["policy_state"] for name in ("full", "chunked")
    ]
    assert all(torch.equal(value, weights[1][key]) for key, value in weights[0].items())
