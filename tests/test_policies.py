import pytest
import torch

from lares_rl.core.checkpoint import build_policy
from lares_rl.core.errors import LaresError
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.policies.steps import sample_steps

N, L = 30, 8


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 3, 8, 5])
    seq = torch.randint(1, N + 1, (4, L), generator=g)
    seq[torch.arange(L) >= lengths[:, None]] = 0
    return seq, lengths


@pytest.mark.parametrize("backbone", ["sasrec", "fmlp", "bsarec"])
@pytest.mark.parametrize("aggregation", ["add", "concat", "gate"])
def test_shapes_and_padding_never_leaks(backbone, aggregation):
    torch.manual_seed(0)
    model = LaresReasoner(N, L, backbone=backbone, aggregation=aggregation, t0_init="zero").eval()
    seq, lengths = batch()
    states = model.encode(seq, lengths, k=3)
    assert states.shape == (4, 3, 64)
    scores = model.scores(states[:, -1])
    assert scores.shape == (4, N + 1) and torch.isinf(scores[:, 0]).all()
    garbage = seq.clone()
    pad = torch.arange(L) >= lengths[:, None]
    garbage[pad] = torch.randint(1, N + 1, (int(pad.sum()),))
    assert torch.allclose(model.encode(garbage, lengths, k=3), states, atol=1e-5)


def test_sasrec_is_the_reasoner_without_core():
    model = LaresReasoner(N, L, n_core_layers=0, step_sampler="none", t0_init="zero")
    seq, lengths = batch()
    assert not model.recurrent and model.sample_steps() == 0
    assert model.encode(seq, lengths).shape == (4, 1, 64)


def test_core_weights_are_shared_across_steps():
    model = LaresReasoner(N, L).eval()
    core_params = sum(p.numel() for p in model.core_block.parameters())
    assert core_params > 0
    seq, lengths = batch()
    before = model.encode(seq, lengths, k=4, t0=torch.zeros(4, L, 64))
    with torch.no_grad():
        model.core_block.layers[0].ffn.fc2.weight.mul_(3.0)
    after = model.encode(seq, lengths, k=4, t0=torch.zeros(4, L, 64))
    assert all(not torch.allclose(before[:, i], after[:, i]) for i in range(4))
    assert len(list(model.core_block.parameters())) == len(list(model.core_block.layers.parameters()))


def test_replay_with_same_k_and_t0_is_identical_in_eval_mode():
    model = LaresReasoner(N, L).eval()
    seq, lengths = batch()
    t0 = model.initial_thought(torch.zeros(4, L, 64))
    assert t0.abs().max() <= 3 * 3.0 + 1e-6 and t0.std() > 0.5
    assert torch.equal(model.encode(seq, lengths, k=5, t0=t0), model.encode(seq, lengths, k=5, t0=t0))
    # default t0 = normal keeps noise at evaluation; normal_train_only is deterministic there
    assert not torch.equal(model.encode(seq, lengths, k=2), model.encode(seq, lengths, k=2))
    quiet = LaresReasoner(N, L, t0_init="normal_train_only").eval()
    assert torch.equal(quiet.encode(seq, lengths), quiet.encode(seq, lengths))


def test_gradient_flows_through_every_step():
    model = LaresReasoner(N, L, dropout=0.0)
    seq, lengths = batch()
    t0 = torch.zeros(4, L, 64, requires_grad=True)
    states = model.encode(seq, lengths, k=6, t0=t0)
    # A fixed random readout: a plain sum of a post-LN state is identically zero, so its gradient is only float noise.
    readout = torch.randn(states.shape[-1], generator=torch.Generator().manual_seed(0))
    (states[:, -1] @ readout).sum().backward()
    assert t0.grad.abs().sum() > 1e-6  # the loss on step 6 reaches T0 through all six applications
    assert all(p.grad is not None for p in model.core_block.parameters())


def test_poisson_lognormal_sampler_matches_formula():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_steps("poisson_lognormal", 4, 0.5, g) for _ in range(20000)]).float()
    assert draws.min() >= 1 and draws.max() <= 12
    assert abs(draws.mean().item() - 4.9) < 0.1
    # reference distribution computed directly from the formula
    mu = torch.log(torch.tensor(4.0)) - 0.125
    tau = torch.exp(mu + 0.5 * torch.randn(200000, generator=g))
    reference = torch.clamp(torch.poisson(tau, generator=g) + 1, max=12)
    assert abs(draws.mean() - reference.mean()) < 0.06
    assert abs(draws.std() - reference.std()) < 0.06


def test_other_samplers_and_eval_depth():
    g = torch.Generator().manual_seed(0)
    uniform = [sample_steps("uniform", 4, generator=g) for _ in range(500)]
    assert min(uniform) == 1 and max(uniform) == 8
    assert sample_steps("constant", 4) == 4 and sample_steps("none", 4) == 1
    model = LaresReasoner(N, L, step_sampler="uniform").eval()
    assert model.sample_steps() == 4


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="policy.aggregation"):
        LaresReasoner(N, L, aggregation="mean")
    with pytest.raises(ValueError, match="policy.backbone"):
        LaresReasoner(N, L, backbone="lstm")


def test_user_backbone_by_dotted_path():
    model = LaresReasoner(N, L, backbone="tests.plugins.gru_block.GRUBlock", n_pre_layers=1, n_core_layers=1)
    seq, lengths = batch()
    assert model.encode(seq, lengths, k=2).shape == (4, 2, 64)
    assert model.causal


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dropout": 1.5}, r"policy: dropout must be in \[0, 1\), got 1.5; check the keys under `policy`"),
        ({"d_model": 16, "n_heads": 3}, "policy: d_model=16 must be divisible by n_heads=3"),
        ({"core_backbone": "nope"}, "policy.core_backbone='nope' is unknown"),
        ({"backbone": "nope"}, "policy.backbone='nope' is unknown"),
    ],
)
def test_bad_policy_config_names_the_policy_section(options, message):
    with pytest.raises(LaresError, match=message):
        build_policy(options, 10, 5)
