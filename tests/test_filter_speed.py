"""The faster RPT filter (issue 34 item 6): in the given order it keeps exactly the rows the filter
it replaced kept; in length order (the default) it keeps exactly the given order's rows once
nothing is drawn at random, and runs each batch only over its longest history.

The reference is the replaced implementation itself, kept in benchmarks/filter_speed.py; the
masks must be equal, not close: same seeds, catalogs of several sizes, history lengths 1..L,
cuts that fall inside groups of tied scores, NaN scores, chunked scoring."""

import inspect
import json
import sys

import pytest
import torch

from lares_rl.catalog.topk import targets_within_top
from lares_rl.core.errors import LaresError
from lares_rl.metrics.ranking import target_ranks
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.filter import filter_batches, filter_cache_key, top_k_filter
from tests.cli_process import ROOT
from tests.synthetic import random_histories, tiny_reasoner

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their helpers as top-level modules

import filter_speed  # noqa: E402
from filter_speed import noiseless, reference_top_k_filter  # noqa: E402


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
    got = top_k_filter(policy, seqs, lengths, targets, order="given", **settings)
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
    settings["order"] = "given"
    assert torch.equal(top_k_filter(policy, seqs, lengths, targets, item_chunk=chunk, **settings), full)
    assert torch.equal(top_k_filter(policy, seqs, lengths, targets, **settings), full)


LENGTH_CASES = [
    # (items, rows, L, top, batch size, seed, distinct item vectors or None, item_chunk, core layers)
    (30, 150, 8, 3, 64, 0, None, None, 2),
    (200, 301, 12, 20, 128, 1, None, None, 2),
    (1500, 257, 20, 100, 100, 2, None, None, 2),
    (60, 200, 8, 6, 64, 3, 10, None, 2),  # the cut inside a group of tied items
    (97, 180, 8, 7, 50, 4, 13, 16, 2),  # chunked scoring
    (120, 230, 16, 10, 32, 5, None, None, 0),  # SASRec: no core block
    (80, 64, 20, 8, 1024, 6, None, None, 2),  # one batch: the order changes nothing
]


@pytest.mark.parametrize("items, rows, max_len, top, batch_size, seed, distinct, item_chunk, core", LENGTH_CASES)
def test_length_order_keeps_the_given_rows_when_nothing_is_drawn(items, rows, max_len, top, batch_size, seed, distinct, item_chunk, core):
    """Dropout 0, T0 zero and a constant k: what is left to differ is each batch's width, the
    positions of every row and the padding, which the length order must get right."""
    policy = tie_policy(items, distinct) if distinct else tiny_reasoner(items, max_len, dropout=0.2, n_core_layers=core)
    quiet = noiseless(policy)
    seqs, lengths = random_histories(rows, items, max_len, seed)
    targets = torch.randint(1, items + 1, (rows,), generator=torch.Generator().manual_seed(seed + 100))
    settings = dict(top=top, passes=2, batch_size=batch_size, seed=seed, item_chunk=item_chunk)
    given = top_k_filter(quiet, seqs, lengths, targets, order="given", **settings)
    assert torch.equal(top_k_filter(quiet, seqs, lengths, targets, order="length", **settings), given)
    assert 0 < given.float().mean() < 1 if not distinct else 0 <= given.float().mean() < 1
    assert quiet.training is False and policy.t0_init == "normal"  # the noiseless copy is a copy


def test_length_order_runs_each_batch_only_over_its_longest_history(monkeypatch):
    policy = tiny_reasoner(50, 20, dropout=0.2)
    seqs, lengths = random_histories(300, 50, 20, seed=0)
    targets = torch.randint(1, 51, (300,), generator=torch.Generator().manual_seed(0))
    widths = {}
    encode_window = policy._encode_window
    for order in ("given", "length"):
        seen = widths[order] = []
        monkeypatch.setattr(policy, "_encode_window", lambda seq, *rest, seen=seen: seen.append(seq.shape) or encode_window(seq, *rest))
        top_k_filter(policy, seqs, lengths, targets, top=5, passes=1, batch_size=64, order=order)
    for order in ("given", "length"):
        assert widths[order] == [(len(lengths[rows]), int(lengths[rows].max())) for rows in filter_batches(lengths, 64, order)]
    assert torch.equal(torch.cat(filter_batches(lengths, 64, "length")), torch.argsort(lengths, stable=True))
    positions = {order: sum(rows * width for rows, width in shapes) for order, shapes in widths.items()}
    assert positions["length"] < 0.7 * positions["given"]  # 3,696 against 5,936 positions


def test_length_order_is_the_default_reproducible_for_a_seed_and_leaves_the_caller_stream():
    assert inspect.signature(top_k_filter).parameters["order"].default == RPTConfig().filter_order == "length"
    policy = tiny_reasoner(40, 8, dropout=0.2)
    seqs, lengths = random_histories(200, 40, 8, seed=1)
    targets = torch.randint(1, 41, (200,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    first = top_k_filter(policy, seqs, lengths, targets, top=4, batch_size=32, seed=3)
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(top_k_filter(policy, seqs, lengths, targets, top=4, batch_size=32, seed=3), first)
    assert torch.equal(torch.rand(3), after)
    assert 0 < first.float().mean() < 1


def test_an_unknown_order_is_refused_by_its_key():
    with pytest.raises(LaresError, match=r"rpt\.filter_order.*\('length', 'given'\).*'random'"):
        RPTConfig(filter_order="random").validate()
    with pytest.raises(ValueError, match="rpt.filter_order='random'"):
        filter_batches(torch.ones(3, dtype=torch.long), 2, "random")


def test_cached_masks_of_the_two_orders_are_kept_apart():
    """The given order's key is the one masks were cached under before the order existed (they
    were given-order masks); the length order's names it, so no old mask is read for it."""
    keys = {order: filter_cache_key("d" * 40, RPTConfig(filter_top=3, filter_order=order), 8, 120, 0) for order in ("given", "length")}
    assert keys == {"given": f"{'d' * 20}_top3x3_p0.1_L8_n120_s0", "length": f"{'d' * 20}_top3x3_p0.1_L8_n120_s0_olength"}


def test_benchmark_runs_and_records_both_orders(tmp_path, capsys):
    out, speed = tmp_path / "speed_filter.json", tmp_path / "speed.json"
    speed.write_text(json.dumps({"ratios": {"eval_instruments": 1.5}}))
    argv = ["--datasets", "ml-100k", "instruments", "--data-dir", str(tmp_path), "--ml-100k-rows", "200", "--repeats", "1"]
    filter_speed.main([*argv, "--out", str(out), "--speed-json", str(speed)])
    record = json.loads(out.read_text())
    assert set(record["ratios"]) == {"filter_ml-100k"}  # Instruments is absent from tmp_path: skipped with one line
    row = record["datasets"]["ml-100k"]
    assert row["given_equals_reference"] is True and row["rows"] == 200 and row["noiseless_rows_differing"] == 0
    assert row["positions_per_pass"]["length"] <= row["positions_per_pass"]["given"]
    assert "[skip] instruments" in capsys.readouterr().out
    assert json.loads(speed.read_text()) == {"ratios": {"eval_instruments": 1.5}}  # only an Instruments run writes its key there


def test_filter_instruments_is_merged_into_speed_json(tmp_path):
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"ratios": {"eval_instruments": 1.5}, "torch": "x"}))
    filter_speed.merge_speed_ratio(speed, "filter_instruments", 3.2)
    assert json.loads(speed.read_text()) == {"ratios": {"eval_instruments": 1.5, "filter_instruments": 3.2}, "torch": "x"}
