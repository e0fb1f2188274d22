"""The fused full-catalog cross-entropy equals F.cross_entropy over the whole masked logit matrix
(loss and both gradients), and SPT's recommendation loss gives the same numbers through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lares_rl.catalog.fused_ce import FASTER_FROM_ITEMS, catalog_cross_entropy
from lares_rl.core.errors import LaresError
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.losses import recommendation_loss, spt_loss, uses_fused_catalog

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def full_cross_entropy(states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, **options) -> torch.Tensor:
    """Today's path: ``policy.scores`` (padding column at -inf), then F.cross_entropy."""
    logits = states @ table.T
    logits[..., 0] = float("-inf")
    return F.cross_entropy(logits, targets, **options)


def loss_and_grads(fn, states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, **options):
    states, table = states.detach().clone().requires_grad_(), table.detach().clone().requires_grad_()
    loss = fn(states, table, targets, **options)
    grads = torch.autograd.grad(loss.sum(), (states, table))
    return loss.detach(), *grads


def inputs(n: int, items: int, d: int = 8, dtype=torch.float64, device: str = "cpu", seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(n, d, generator=generator, dtype=dtype).to(device)
    table = torch.randn(items + 1, d, generator=generator, dtype=dtype).to(device)
    targets = torch.randint(1, items + 1, (n,), generator=generator).to(device)
    return states, table, targets


def assert_same(fused, full, atol: float, rtol: float) -> None:
    for a, b in zip(fused, full):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunk", [1, 7, 10, 64, 1000])  # 100 items: not a multiple (7, 64), a divisor (10), above it (1000)
def test_same_loss_and_gradients_as_full_logits(device: str, chunk: int) -> None:
    states, table, targets = inputs(37, 100, device=device)
    fused = loss_and_grads(lambda *a: catalog_cross_entropy(*a, chunk=chunk), states, table, targets)
    assert_same(fused, loss_and_grads(full_cross_entropy, states, table, targets), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_matches_to_float_tolerance(device: str) -> None:
    states, table, targets = inputs(300, 5000, d=32, dtype=torch.float32, device=device)
    fused = loss_and_grads(lambda *a: catalog_cross_entropy(*a, chunk=512), states, table, targets)
    assert_same(fused, loss_and_grads(full_cross_entropy, states, table, targets), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_padding_targets_are_ignored_as_cross_entropy_ignores_them(reduction: str) -> None:
    states, table, targets = inputs(20, 30)
    targets[::3] = -100
    fused = loss_and_grads(lambda *a: catalog_cross_entropy(*a, chunk=8, reduction=reduction), states, table, targets)
    full = loss_and_grads(full_cross_entropy, states, table, targets, reduction=reduction)
    assert_same(fused, full, atol=1e-12, rtol=1e-10)
    assert fused[1][::3].abs().max() == 0  # ignored rows get no gradient


def test_another_ignore_index_and_every_row_ignored() -> None:
    states, table, targets = inputs(6, 10)
    targets[:2] = -1
    options = dict(ignore_index=-1)
    assert_same(
        loss_and_grads(lambda *a, **o: catalog_cross_entropy(*a, chunk=3, **o), states, table, targets, **options),
        loss_and_grads(full_cross_entropy, states, table, targets, **options),
        atol=1e-12,
        rtol=1e-10,
    )
    targets[:] = -100
    fused, full = catalog_cross_entropy(states, table, targets), full_cross_entropy(states, table, targets)
    assert fused.isnan() and full.isnan()  # a mean over no rows, as F.cross_entropy has it


def test_ties_and_repeated_targets() -> None:
    """Equal items (identical rows, so every score ties with its twin) and many rows sharing one
    target (whose table gradient is a sum over those rows)."""
    states, table, targets = inputs(25, 40)
    table[21:] = table[1:21]
    states[10:] = states[0]
    targets[5:15] = 7
    fused = loss_and_grads(lambda *a: catalog_cross_entropy(*a, chunk=6), states, table, targets)
    assert_same(fused, loss_and_grads(full_cross_entropy, states, table, targets), atol=1e-12, rtol=1e-10)


def test_padding_item_is_never_scored_and_gets_no_gradient() -> None:
    states, table, targets = inputs(12, 15)
    table[0] = 50.0  # would dominate every softmax if it were scored
    fused = loss_and_grads(lambda *a: catalog_cross_entropy(*a, chunk=4), states, table, targets)
    assert_same(fused, loss_and_grads(full_cross_entropy, states, table, targets), atol=1e-12, rtol=1e-10)
    assert fused[2][0].abs().max() == 0
    targets[3] = 0  # a padding target: infinite loss, and the gradient the -inf column passes (none)
    fused = loss_and_grads(lambda *a: catalog_cross_entropy(*a, chunk=4, reduction="none"), states, table, targets)
    full = loss_and_grads(full_cross_entropy, states, table, targets, reduction="none")
    assert fused[0][3] == full[0][3] == float("inf")
    assert_same(fused, full, atol=1e-12, rtol=1e-10)


def test_gradient_of_one_input_only() -> None:
    states, table, targets = inputs(9, 20)
    table.requires_grad_()
    (grad,) = torch.autograd.grad(catalog_cross_entropy(states, table, targets, chunk=6), table)
    (expected,) = torch.autograd.grad(full_cross_entropy(states, table, targets), table)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize(
    ("states", "table", "targets", "options", "message"),
    [
        (torch.zeros(4, 8), torch.zeros(10, 6), torch.ones(4, dtype=torch.long), {}, "share d"),
        (torch.zeros(4, 8), torch.zeros(10, 8), torch.ones(5, dtype=torch.long), {}, "one per state"),
        (torch.zeros(4, 8), torch.zeros(10, 8), torch.ones(4), {}, "integer item ids"),
        (torch.zeros(4, 8), torch.zeros(1, 8), torch.ones(4, dtype=torch.long), {}, "at least one item"),
        (torch.zeros(4, 8), torch.zeros(10, 8, dtype=torch.float64), torch.ones(4, dtype=torch.long), {}, "dtype and device"),
        (torch.zeros(4, 8), torch.zeros(10, 8), torch.ones(4, dtype=torch.long), {"chunk": 0}, "chunk must be a positive"),
        (torch.zeros(4, 8), torch.zeros(10, 8), torch.ones(4, dtype=torch.long), {"chunk": -3}, "chunk must be a positive"),
        (torch.zeros(4, 8), torch.zeros(10, 8), torch.ones(4, dtype=torch.long), {"reduction": "avg"}, "reduction must be"),
        (torch.zeros(4, 8), torch.zeros(10, 8), torch.tensor([1, 2, 10, 3]), {}, "item ids in 0..9"),
    ],
)
def test_bad_input_gets_a_clear_error(states, table, targets, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        catalog_cross_entropy(states, table, targets, **options)


# ----------------------------------------------------------------------------- SPT's recommendation loss


def _model(**options) -> LaresReasoner:
    torch.manual_seed(0)
    return LaresReasoner(num_items=50, max_len=6, d_model=16, n_heads=2, inner_size=32, dropout=0.0, **options).double()


def _batch() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    seq = torch.randint(1, 51, (8, 6), generator=generator)
    lengths = torch.tensor([6, 5, 4, 6, 3, 2, 6, 1])
    seq[torch.arange(6) >= lengths.view(-1, 1)] = 0
    dense = torch.randint(1, 51, (8, 6), generator=generator) * (torch.arange(6) < lengths.view(-1, 1))
    return seq, lengths, dense


@pytest.mark.parametrize("options", [{}, {"n_core_layers": 0, "step_sampler": "none", "t0_init": "zero"}])
@pytest.mark.parametrize("dense", [False, True])
def test_recommendation_loss_is_the_same_through_the_fused_path(options: dict, dense: bool) -> None:
    """LARES and SASRec, prefix rows and dense windows: the same L_rec and parameter gradients."""
    seq, lengths, dense_targets = _batch()
    targets = dense_targets if dense else dense_targets[torch.arange(8), lengths - 1]
    results = []
    for catalog_loss in ("full", "fused"):
        model = _model(**options)
        loss, _ = recommendation_loss(model, seq, lengths, targets, k=2 if model.recurrent else None, catalog_loss=catalog_loss)
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)))
    (full, full_grads), (fused, fused_grads) = results
    torch.testing.assert_close(fused, full, atol=1e-12, rtol=1e-10)
    for a, b in zip(fused_grads, full_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_spt_loss_follows_the_config_key() -> None:
    seq, lengths, dense_targets = _batch()
    batch, positive = (seq, lengths, dense_targets), (seq, lengths)
    terms = {}
    for catalog_loss in ("full", "fused"):
        torch.manual_seed(3)
        terms[catalog_loss] = spt_loss(_model(), batch, positive, SPTConfig(catalog_loss=catalog_loss))
    for name in terms["full"]:
        torch.testing.assert_close(terms["fused"][name], terms["full"][name], atol=1e-12, rtol=1e-10)


def test_fused_path_never_builds_the_catalog_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``fused`` ``policy.scores`` (the [n, N + 1] matrix) is not called; with ``full`` it is."""
    seq, lengths, dense_targets = _batch()
    model = _model()
    calls = []
    monkeypatch.setattr(model, "scores", lambda states: calls.append(states.shape) or LaresReasoner.scores(model, states))
    recommendation_loss(model, seq, lengths, dense_targets, k=1, catalog_loss="fused")
    assert calls == []
    recommendation_loss(model, seq, lengths, dense_targets, k=1, catalog_loss="full")
    assert len(calls) == 1


def test_a_policy_without_score_operands_takes_the_full_path() -> None:
    seq, lengths, dense_targets = _batch()

    class OnlyScores(torch.nn.Module):
        """A custom policy with whole-catalog scores alone: nothing for the fused path to chunk."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = _model()

        def encode(self, *args, **kwargs):
            return self.inner.encode(*args, **kwargs)

        def scores(self, states):
            return self.inner.scores(states)

    policy = OnlyScores()
    torch.manual_seed(4)  # the same T0 noise for both passes
    full, _ = recommendation_loss(policy.inner, seq, lengths, dense_targets, k=1, catalog_loss="full")
    torch.manual_seed(4)
    fused, _ = recommendation_loss(policy, seq, lengths, dense_targets, k=1, catalog_loss="fused")
    torch.testing.assert_close(fused, full)


def test_auto_is_fused_from_the_catalog_size_where_that_is_faster() -> None:
    """The default, ``auto``, keeps the full matrix on small catalogs (ML-100K's 1,349 items: the
    same speed, so the same numbers as before), and fuses from ``FASTER_FROM_ITEMS`` on."""
    assert SPTConfig().catalog_loss == "auto"
    small, large = (
        LaresReasoner(num_items=n, max_len=4, d_model=8, n_heads=2, inner_size=8) for n in (FASTER_FROM_ITEMS - 1, FASTER_FROM_ITEMS)
    )
    assert not uses_fused_catalog(small, "auto") and uses_fused_catalog(large, "auto")
    assert uses_fused_catalog(small, "fused") and not uses_fused_catalog(large, "full")


def test_config_rejects_an_unknown_catalog_loss() -> None:
    with pytest.raises(LaresError, match="spt.catalog_loss.*auto, fused or full"):
        SPTConfig(catalog_loss="chunked").validate()
