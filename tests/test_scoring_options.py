"""The policy options of the authors' RecBole 3.0 port: cosine / temperature scoring and pre-LN
layers, for LARES and SASRec alike; their defaults leave today's numbers untouched."""

import pytest
import torch
import torch.nn.functional as F
from synthetic import random_histories, tiny_reasoner

from lares_rl.catalog.topk import chunked_top_k
from lares_rl.core.checkpoint import build_policy
from lares_rl.core.errors import LaresError
from lares_rl.policies.reasoner import LaresReasoner

N, L = 30, 8
SASREC = dict(n_core_layers=0, step_sampler="none", t0_init="zero")
KINDS = {"lares": {}, "sasrec": SASREC, "bsarec": dict(backbone="bsarec")}
# Recorded with the code before these options existed (commit 7097730): every user's eval-mode
# score sum over items 1..N, and one training-mode cross-entropy, both seed-fixed.
BEFORE = {
    "lares": ([0.36427, -0.21128, -0.5761, 0.44498, 0.08315, 0.43411], 3.352346),
    "sasrec": ([-0.23248, 0.53606, 0.40475, 0.79187, 0.95782, 0.30874], 3.351338),
    "bsarec": ([0.37825, 0.52046, -0.24953, 0.59053, 0.01053, 0.5763], 3.386426),
}


def eval_and_train_outputs(model: LaresReasoner) -> tuple[torch.Tensor, torch.Tensor]:
    seq, lengths = random_histories(6, N, L, seed=1)
    with torch.no_grad():
        torch.manual_seed(0)
        scores = model.eval()(seq, lengths)
    model.train()
    torch.manual_seed(0)
    loss = F.cross_entropy(model.scores(model.encode(seq, lengths)[:, -1]), seq[:, 0])
    return scores, loss


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_defaults_reproduce_the_numbers_from_before_the_options(kind):
    scores, loss = eval_and_train_outputs(tiny_reasoner(N, L, **KINDS[kind]))
    rows, before_loss = BEFORE[kind]
    assert torch.allclose(scores[:, 1:].sum(1), torch.tensor(rows), atol=1e-4)
    assert loss.item() == pytest.approx(before_loss, abs=1e-5)
    explicit = tiny_reasoner(N, L, layer_norm="post", score_similarity="dot", score_temperature=1.0, **KINDS[kind])
    assert explicit.state_dict().keys() == tiny_reasoner(N, L, **KINDS[kind]).state_dict().keys()  # checkpoints still load
    explicit_scores, explicit_loss = eval_and_train_outputs(explicit)
    assert torch.equal(explicit_scores, scores) and torch.equal(explicit_loss, loss)


@pytest.mark.parametrize("kind", ["lares", "sasrec"])
@pytest.mark.parametrize("similarity,tau", [("cosine", 0.07), ("cosine", 1.0), ("dot", 0.5)])
def test_scores_are_the_similarity_over_the_temperature(kind, similarity, tau):
    model = tiny_reasoner(N, L, score_similarity=similarity, score_temperature=tau, **KINDS[kind])
    states = torch.randn(5, 16)
    table = model.item_embedding.weight.detach()
    if similarity == "cosine":
        expected = F.normalize(states, dim=-1) @ F.normalize(table, dim=-1).T / tau
    else:
        expected = states @ table.T / tau
    with torch.no_grad():
        scores = model.scores(states)
        queries, operand_table = model.score_operands(states)
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()  # padding never recommended
    assert torch.allclose(scores[:, 1:], expected[:, 1:], atol=1e-5)
    assert torch.allclose((queries @ operand_table.T)[:, 1:], scores[:, 1:], atol=1e-6)  # what a fused CE gets
    if similarity == "cosine":
        assert scores[:, 1:].abs().max() <= 1 / tau + 1e-4


@pytest.mark.parametrize("similarity,tau", [("cosine", 0.07), ("dot", 1.0)])
def test_item_scores_and_chunked_ranking_agree_with_full_scores(similarity, tau):
    model = tiny_reasoner(N, L, score_similarity=similarity, score_temperature=tau)
    seq, lengths = random_histories(7, N, L, seed=2)
    with torch.no_grad():
        states = model.encode(seq, lengths, k=2)[:, -1]
        full = model.scores(states)
        ids = torch.tensor([3, 1, 17, 30])
        assert torch.allclose(model.item_scores(states, slice(1, N + 1)), full[:, 1:], atol=1e-5)
        assert torch.allclose(model.item_scores(states, ids), full[:, ids], atol=1e-5)
        values, top, _ = chunked_top_k(states, model.item_scores, N, 10, chunk=7)
    expected_values, expected_top = full.topk(10, dim=1)
    assert torch.equal(top, expected_top) and torch.allclose(values, expected_values, atol=1e-5)


def test_cosine_training_gradient_reaches_states_and_items():
    model = tiny_reasoner(N, L, score_similarity="cosine", score_temperature=0.07).train()
    seq, lengths = random_histories(8, N, L, seed=3)
    F.cross_entropy(model.scores(model.encode(seq, lengths)[:, -1]), seq[:, 0]).backward()
    grad = model.item_embedding.weight.grad
    assert torch.isfinite(grad).all() and grad[1:].abs().sum() > 0
    assert grad[0].abs().sum() == 0  # the padding row stays out of the loss


@pytest.mark.parametrize("backbone", ["sasrec", "fmlp", "bsarec"])
@pytest.mark.parametrize("core", [2, 0])
def test_pre_ln_differs_from_post_ln_and_keeps_padding_out(backbone, core):
    kwargs = dict(backbone=backbone, n_core_layers=core, t0_init="zero", **({} if core else {"step_sampler": "none"}))
    post = tiny_reasoner(N, L, **kwargs)
    with torch.no_grad():  # weights as after training: at the 0.02 init every sublayer's update is too small to tell LN placements apart
        for name, weight in post.named_parameters():
            if "norm" not in name and name != "item_embedding.weight":
                weight.normal_(0.0, 0.3)
    pre = tiny_reasoner(N, L, layer_norm="pre", **kwargs)
    missing, unexpected = pre.load_state_dict(post.state_dict(), strict=False)
    assert not unexpected and missing and all(key.endswith(("norm.weight", "norm.bias")) for key in missing)  # only the final LNs
    seq, lengths = random_histories(6, N, L, seed=4)
    with torch.no_grad():
        states = pre.encode(seq, lengths, k=2)
        assert not torch.allclose(states, post.encode(seq, lengths, k=2), atol=1e-3)
        garbage = seq.clone()
        pad = torch.arange(L) >= lengths[:, None]
        garbage[pad] = torch.randint(1, N + 1, (int(pad.sum()),))
        assert torch.allclose(pre.encode(garbage, lengths, k=2), states, atol=1e-5)
    with torch.enable_grad():  # autograd on: the plain full-width pass instead of the read-position shortcut
        assert torch.allclose(pre.encode(seq, lengths, k=2), states, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        dict(layer_norm="pre"),
        dict(layer_norm="pre", n_core_layers=0, step_sampler="none"),
        dict(score_similarity="cosine", score_temperature=0.1),
    ],
)
def test_the_options_train(options):
    """A fixed batch of item-ring histories (next item = last + 1): a few Adam steps cut the loss."""
    torch.manual_seed(0)
    model = LaresReasoner(N, L, d_model=16, n_heads=2, inner_size=32, dropout=0.1, t0_init="zero", **options).train()
    starts = torch.arange(64) % N
    lengths = torch.full((64,), L)
    seq = (starts[:, None] + torch.arange(L)) % N + 1
    targets = (starts + L) % N + 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model.scores(model.encode(seq, lengths)[:, -1]), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_padding_embedding_stays_zero_under_training():
    """The port zeroes the padding row; here padding_idx=0 keeps it zero through weight decay and updates."""
    model = tiny_reasoner(N, L, layer_norm="pre", score_similarity="cosine", score_temperature=0.07).train()
    assert model.item_embedding.weight[0].abs().sum() == 0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.1)
    seq, lengths = random_histories(8, N, L, seed=5)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model.scores(model.encode(seq, lengths)[:, -1]), seq[:, 0]).backward()
        optimizer.step()
    assert model.item_embedding.weight[0].abs().sum() == 0


@pytest.mark.parametrize(
    "key,value",
    [("layer_norm", "middle"), ("score_similarity", "cos"), ("score_temperature", 0.0), ("score_temperature", -1.0)],
)
def test_bad_option_is_one_error_naming_the_key(key, value):
    config = {"_target_": "lares_rl.policies.reasoner.LaresReasoner", "d_model": 16, "n_heads": 2, key: value}
    with pytest.raises(LaresError, match=f"policy.{key}="):
        build_policy(config, N, L)


@pytest.mark.parametrize("similarity,tau", [("cosine", 0.07), ("dot", 1.0)])
def test_a_null_score_temperature_takes_the_similaritys_own(similarity, tau):
    """So a search can switch policy.score_similarity alone (with --policy-set score_temperature=null)
    instead of pairing each similarity with its temperature by hand."""
    config = {"_target_": "lares_rl.policies.reasoner.LaresReasoner", "d_model": 16, "n_heads": 2, "score_similarity": similarity}
    assert build_policy({**config, "score_temperature": None}, N, L).score_temperature == tau
