import math

import torch

from lares_rl.metrics.ranking import evaluate_scores, mask_history, metrics_from_ranks, target_ranks


def brute_force(scores: torch.Tensor, targets: torch.Tensor, ks) -> dict[str, float]:
    """Reference: loop over users and items; ties count against the target."""
    totals = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg", "mrr") for k in ks}
    for row, target in zip(scores.tolist(), targets.tolist()):
        rank = sum(1 for item in range(1, len(row)) if item != target and row[item] >= row[target])
        for k in ks:
            if rank < k:
                totals[f"recall@{k}"] += 1
                totals[f"ndcg@{k}"] += 1 / math.log2(rank + 2)
                totals[f"mrr@{k}"] += 1 / (rank + 1)
    return {name: value / len(targets) for name, value in totals.items()}


def test_metrics_match_brute_force_with_ties():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (64, 31), generator=generator).float()  # many ties
    scores[:, 0] = float("-inf")
    targets = torch.randint(1, 31, (64,), generator=generator)
    ks = (1, 5, 10, 20)
    got = {n: v.mean().item() for n, v in metrics_from_ranks(target_ranks(scores, targets), ks).items()}
    want = brute_force(scores, targets, ks)
    for name in want:
        assert math.isclose(got[name], want[name], rel_tol=1e-9), name


def test_constant_scores_rank_target_last():
    scores = torch.zeros(3, 11)
    scores[:, 0] = float("-inf")
    assert target_ranks(scores, torch.tensor([1, 5, 10])).tolist() == [9, 9, 9]


def test_padding_never_competes():
    scores = torch.tensor([[float("-inf"), 0.5, 0.1, 0.2]])
    assert target_ranks(scores, torch.tensor([1])).item() == 0


def test_mask_history_and_batching_are_consistent():
    generator = torch.Generator().manual_seed(1)
    n_users, n_items = 37, 20
    table = torch.randn(n_users, n_items + 1, generator=generator)
    targets = torch.randint(1, n_items + 1, (n_users,), generator=generator)
    seen = [torch.randperm(n_items, generator=generator)[: i % 4] + 1 for i in range(n_users)]
    seen = [s[s != t] for s, t in zip(seen, targets)]
    indptr = torch.tensor([0] + [len(s) for s in seen]).cumsum(0)
    items = torch.cat(seen)
    rows = torch.arange(n_users)

    def score_fn(seq, lengths):
        out = table[seq[:, 0]].clone()
        out[:, 0] = float("-inf")
        return out

    seqs, lengths = rows.view(-1, 1), torch.ones(n_users, dtype=torch.long)
    full = evaluate_scores(score_fn, seqs, lengths, targets, history=(indptr, items), batch_size=n_users)
    batched = evaluate_scores(score_fn, seqs, lengths, targets, history=(indptr, items), batch_size=5)
    for name in full:
        assert math.isclose(full[name], batched[name], rel_tol=1e-12)
    masked = table.clone()
    masked[:, 0] = float("-inf")
    mask_history(masked, indptr, items)
    reference = brute_force(masked, targets, (5, 10, 20))
    assert all(math.isclose(reference[name], full[name], rel_tol=1e-9) for name in full)
    assert full["recall@10"] >= evaluate_scores(score_fn, seqs, lengths, targets)["recall@10"]


def test_nan_scores_count_against_the_target():
    """A diverged model must score 0, not a perfect hit (``>= NaN`` is all False)."""
    nan = float("nan")
    scores = torch.tensor([[float("-inf"), nan, 0.5, 0.1], [float("-inf"), 0.9, nan, 0.2], [float("-inf"), nan, nan, nan]])
    assert target_ranks(scores, torch.tensor([1, 1, 2])).tolist() == [2, 1, 2]
    values = metrics_from_ranks(target_ranks(scores, torch.tensor([1, 1, 2])), (1,))
    assert values["recall@1"].tolist() == [0.0, 0.0, 0.0] and all(math.isfinite(v) for v in values["ndcg@1"].tolist())


def test_a_repeated_target_is_not_masked_as_history():
    """Repeat consumption: the next item was also seen before; masking history keeps it scored."""
    table = torch.tensor([[float("-inf"), 0.9, 0.5, 0.1]])  # item 1 is the best and the target

    def score_fn(seq, lengths):
        return table.clone()

    history = (torch.tensor([0, 2]), torch.tensor([1, 2]))  # seen: items 1 and 2
    got = evaluate_scores(
        score_fn, torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long), torch.tensor([1]), ks=(1,), history=history
    )
    assert got["recall@1"] == 1.0


def test_ranks_counted_in_row_blocks_equal_the_whole_matrix_count(monkeypatch):
    """Blocks of 1, 3 (a ragged last block) and all rows give the pessimistic rank of one pass over
    the whole matrix: ties, NaN items, a NaN target and a -inf (masked) target included."""
    generator = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (10, 9), generator=generator).float()
    scores[:, 0] = float("-inf")
    targets = torch.randint(1, 9, (10,), generator=generator)
    scores[2, 3] = float("nan")
    scores[4, targets[4]] = float("nan")
    scores[6, targets[6]] = float("-inf")
    items, target_scores = scores[:, 1:], scores.gather(1, targets.view(-1, 1))
    whole = ((items >= target_scores) | items.isnan()).sum(dim=1) - 1
    whole = torch.where(target_scores.squeeze(1).isnan(), items.shape[1] - 1, whole)
    for block_scores in (1, 3 * 8, 10_000):
        monkeypatch.setattr("lares_rl.metrics.ranking.RANK_BLOCK_SCORES", block_scores)
        assert torch.equal(target_ranks(scores, targets), whole), block_scores
    assert target_ranks(scores, targets)[[4, 6]].tolist() == [7, 7]
