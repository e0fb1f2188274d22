import math

import pytest
import torch
import torch.nn.functional as F

from lares_rl.data import SequenceData
from lares_rl.spt import SameTargetIndex, SPTConfig, epoch_order, info_nce, recommendation_loss, spt_loss
from lares_rl.policies.reasoner import LaresReasoner


def test_info_nce_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    direct = 0.0
    for i in range(5):
        logits = [float(x[i] @ y[j]) / 0.5 for j in range(5)]
        direct += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    assert math.isclose(info_nce(x, y, "dot", 0.5).item(), direct / 5, rel_tol=1e-5)
    xn, yn = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    assert torch.isclose(info_nce(x, y, "cosine", 0.07), info_nce(xn, yn, "dot", 0.07))


def test_same_target_index_draws_other_rows_with_same_target():
    targets = torch.tensor([3, 1, 3, 2, 3, 1, 7])
    index = SameTargetIndex(targets)
    g = torch.Generator().manual_seed(0)
    seen = {i: set() for i in range(len(targets))}
    for _ in range(200):
        rows = torch.arange(len(targets))
        for row, pos in zip(rows.tolist(), index.sample(rows, g).tolist()):
            assert targets[pos] == targets[row]
            seen[row].add(pos)
    assert seen[0] == {2, 4} and seen[1] == {5} and seen[3] == {3} and seen[6] == {6}


def _tiny_model(**kw):
    torch.manual_seed(0)
    return LaresReasoner(20, 6, d_model=16, inner_size=32, **kw)


def test_spt_terms_match_direct_computation(monkeypatch):
    model = _tiny_model(dropout=0.0, t0_init="zero", step_sampler="constant", mean_recurrence=3)
    seq = torch.tensor([[1, 2, 3, 0, 0, 0], [4, 5, 0, 0, 0, 0], [6, 7, 8, 9, 0, 0]])
    lengths = torch.tensor([3, 2, 4])
    targets = torch.tensor([4, 6, 10])
    pos_seq = torch.tensor([[2, 3, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0], [7, 8, 9, 0, 0, 0]])
    pos_len = torch.tensor([2, 1, 3])
    monkeypatch.setattr(torch, "randint", lambda low, high, size, **kw: torch.tensor(2))  # SLA step j = 2
    cfg = SPTConfig(alpha=0.1, gamma=0.5)
    terms = spt_loss(model, (seq, lengths, targets), (pos_seq, pos_len), cfg)
    steps = model.encode(seq, lengths, k=3)
    h_a, h_p, h_j = steps[:, -1], model.encode(pos_seq, pos_len, k=3)[:, -1], steps[:, 1]
    rec = F.cross_entropy((h_a @ model.item_embedding.weight.T)[:, 1:], targets - 1)
    tla = (info_nce(h_a, h_p, "dot", 1.0) + info_nce(h_p, h_a, "dot", 1.0)) / 2
    sla = (info_nce(h_a, h_j, "dot", 1.0) + info_nce(h_j, h_a, "dot", 1.0)) / 2
    assert torch.isclose(terms["loss_rec"], rec, atol=1e-6)
    assert torch.isclose(terms["loss_tla"], 0.1 * tla, atol=1e-6)
    assert torch.isclose(terms["loss_sla"], 0.5 * sla, atol=1e-6)
    assert terms["k"].item() == 3 and terms["k_prime"].item() == 3


def test_ablations_drop_terms_and_sasrec_trains_on_rec_only():
    batch = (torch.tensor([[1, 2, 0, 0, 0, 0]] * 2), torch.tensor([2, 2]), torch.tensor([3, 4]))
    positive = batch[:2]
    assert set(k for k in spt_loss(_tiny_model(), batch, positive, SPTConfig(alpha=0.0)) if k.startswith("loss_")) <= {"loss_rec", "loss_sla"}
    no_sla = spt_loss(_tiny_model(), batch, positive, SPTConfig(gamma=0.0))
    assert "loss_sla" not in no_sla and "loss_tla" in no_sla
    sasrec = _tiny_model(n_core_layers=0, step_sampler="none", t0_init="zero")
    assert [k for k in spt_loss(sasrec, batch, positive, SPTConfig()) if k.startswith("loss_")] == ["loss_rec"]


@pytest.mark.parametrize("core_layers", [0, 2])
@pytest.mark.parametrize("max_len,stride", [(6, 1), (10, 10)])
def test_dense_windows_give_the_same_loss_as_rows(core_layers, max_len, stride):
    """Causal masking makes one dense pass equal to scoring every prefix row separately, whenever
    the window gives each target the same context as its row (stride 1, or one window per user)."""
    sequences = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [3, 5, 7, 9, 11, 13], [2, 4, 6, 8, 10, 12, 14, 16, 18, 19, 20]]
    data = SequenceData.from_sequences(sequences, num_items=20)
    model = LaresReasoner(20, max_len, d_model=16, inner_size=32, n_core_layers=core_layers, t0_init="zero", step_sampler="constant" if core_layers else "none").eval()
    rows = data.train_rows(max_len)
    windows = data.train_windows(max_len, stride)
    row_loss, _ = recommendation_loss(model, *rows)
    dense_loss, _ = recommendation_loss(model, *windows)
    assert torch.isclose(row_loss, dense_loss, atol=1e-5)


def test_bucketed_epoch_order_covers_every_row_once_and_tightens_batch_widths():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 21, (1000,), generator=g)
    plain = epoch_order(lengths, 32, False, torch.Generator().manual_seed(1))
    assert torch.equal(plain, torch.randperm(1000, generator=torch.Generator().manual_seed(1)))  # the reference order
    bucketed = epoch_order(lengths, 32, True, torch.Generator().manual_seed(1), pool_batches=8)
    assert torch.equal(bucketed.sort().values, torch.arange(1000))
    width = lambda order: sum(int(lengths[b].max()) for b in order.split(32))  # noqa: E731
    assert width(bucketed) < 0.75 * width(plain)
    again = epoch_order(lengths, 32, True, torch.Generator().manual_seed(1), pool_batches=8)
    assert torch.equal(bucketed, again)
