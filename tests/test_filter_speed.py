"""The faster RPT filter keeps exactly the rows the filter it replaced kept (issue 34 item 6).

The reference is the replaced implementation itself, kept in benchmarks/filter_speed.py; the
masks must be equal, not close: same seeds, catalogs of several sizes, cuts that fall inside
groups of tied scores, NaN scores, chunked scoring."""

import json
import sys

import pytest
import torch

from lares_rl.catalog.topk import targets_within_top
from lares_rl.metrics.ranking import target_ranks
from lares_rl.rpt.filter import top_k_filter
from tests.cli_process import ROOT
from tests.synthetic import random_histories, tiny_reasoner

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their helpers as top-level modules

import filter_speed  # noqa: E402
from filter_speed import reference_top_k_filter  # noqa: E402


def tied_scores(rows: int, items: int, levels: int, seed: int) -> torch.Tensor:
    """[rows, items + 1] scores taking only ``levels`` values per row (every target ties with many
    items), padding column at -inf."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, items + 1), generator=generator).float()
    scores[:, 0] = float("-inf")
    return scores


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("items", [1, 7, 40, 3000])
def test_within_top_is_rank_below_top_for_every_cut_with_ties(seed, items):
    scores = tied_scores(50, items, levels=max(2, items // 5), seed=seed)
    targets = torch.randint(1, items + 1, (50,), generator=torch.Generator().manual_seed(seed))
    ranks = target_ranks(scores, targets)
    for top in sorted({1, 2, *ranks.tolist(), *(ranks + 1).tolist(), items}):
        assert torch.equal(targets_within_top(scores, targets, top), ranks < top), top


def test_within_top_counts_nan_and_infinite_scores_as_the_ranking_does():
    scores = tied_scores(6, 9, levels=3, seed=0)
    scores[0, 4] = float("nan")  # the target is NaN: ranks last
    scores[1, 2] = float("nan")  # another item is NaN: counts against the target
    scores[2, 3] = float("inf")
    scores[3, 5] = float("-inf")  # the target sits with the padding
    scores[4, 1:] = float("-inf")
    targets = torch.tensor([4, 7, 3, 5, 2, 9])
    ranks = target_ranks(scores, targets)
    for top in range(1, 10):
        assert torch.equal(targets_within_top(scores, targets, top), ranks < top), top


def test_within_top_over_many_row_blocks():
    """A catalog wide enough that the rows are compared a few at a time (the CPU's cache blocks)."""
    scores = tied_scores(300, 20_000, levels=500, seed=3)
    targets = torch.randint(1, 20_001, (300,), generator=torch.Generator().manual_seed(3))
    ranks = target_ranks(scores, targets)
    for top in (1, 40, 100, int(ranks.median())):
        assert torch.equal(targets_within_top(scores, targets, top), ranks < top)


def tie_policy(items: int, distinct: int):
    """A reasoner whose item table holds only ``distinct`` different rows, so every score ties with
    about items / distinct others and the cut falls inside a group of equal scores."""
    policy = tiny_reasoner(items, 8, dropout=0.2)
    with torch.no_grad():
        table = policy.item_embedding.weight
        table[1:] = table[1 : distinct + 1].repeat(items // distinct + 1, 1)[:items]
    return policy


CASES = [
    # (items, rows, top, passes, batch size, seed, distinct item vectors or None)
    (30, 150, 3, 3, 64, 0, None),
    (30, 150, 10, 2, 40, 1, None),
    (200, 301, 20, 3, 128, 2, None),
    (1500, 257, 100, 3, 100, 3, None),
    (60, 200, 6, 3, 64, 4, 10),  # groups of 6 tied items: top 6 keeps only a whole best group
    (60, 200, 5, 3, 64, 5, 10),  # top 5 ends inside that group: nothing tied there is kept
    (60, 200, 12, 2, 64, 6, 10),
    (97, 180, 7, 3, 50, 7, 13),
]


@pytest.mark.parametrize("items, rows, top, passes, batch_size, seed, distinct", CASES)
def test_new_filter_keeps_exactly_the_reference_rows(items, rows, top, passes, batch_size, seed, distinct):
    policy = tie_policy(items, distinct) if distinct else tiny_reasoner(items, 8, dropout=0.2)
    seqs, lengths = random_histories(rows, items, 8, seed)
    targets = torch.randint(1, items + 1, (rows,), generator=torch.Generator().manual_seed(seed + 100))
    settings = dict(top=top, passes=passes, batch_size=batch_size, seed=seed)
    torch.manual_seed(1234)
    want = reference_top_k_filter(policy, seqs, lengths, targets, **settings)
    after_reference = torch.rand(3)
    torch.manual_seed(1234)
    got = top_k_filter(policy, seqs, lengths, targets, **settings)
    assert torch.equal(got, want)
    assert torch.equal(torch.rand(3), after_reference)  # the caller's random stream is left as the reference left it
    assert policy.training is False  # tiny_reasoner's eval mode is restored
    if distinct:
        assert 0 <= want.float().mean() < 1
    else:
        assert 0 < want.float().mean() < 1


@pytest.mark.parametrize("chunk", [7, 64])
def test_chunked_filter_keeps_the_reference_rows(chunk):
    policy = tie_policy(90, 15)
    seqs, lengths = random_histories(120, 90, 8, 9)
    targets = torch.randint(1, 91, (120,), generator=torch.Generator().manual_seed(9))
    settings = dict(top=8, passes=3, batch_size=50, seed=9)
    full = reference_top_k_filter(policy, seqs, lengths, targets, **settings)
    assert torch.equal(top_k_filter(policy, seqs, lengths, targets, item_chunk=chunk, **settings), full)
    assert torch.equal(top_k_filter(policy, seqs, lengths, targets, **settings), full)


def test_benchmark_runs_and_records_equal_masks(tmp_path, capsys):
    out = tmp_path / "speed_filter.json"
    filter_speed.main(["--datasets", "ml-100k", "instruments", "--data-dir", str(tmp_path), "--ml-100k-rows", "200", "--out", str(out)])
    record = json.loads(out.read_text())
    assert set(record["ratios"]) == {"filter_ml-100k"}  # Instruments is absent from tmp_path: skipped with one line
    assert record["datasets"]["ml-100k"]["masks_equal"] is True
    assert record["datasets"]["ml-100k"]["rows"] == 200
    assert "[skip] instruments" in capsys.readouterr().out
