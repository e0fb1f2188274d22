"""benchmarks/large_catalog.py on a tiny catalog, in process: every task runs and the report says
that the chunked and full paths agree (a break here would otherwise show up ten minutes in)."""

import argparse
import sys

from tests.cli_process import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their helpers as top-level modules

import large_catalog  # noqa: E402


def test_every_task_runs_and_the_report_shows_the_paths_agree():
    args = argparse.Namespace(users=120, d_model=8, eval_users=64, eval_batch=32, item_chunk=50, spt_batch=16, spt_steps=2, negatives=20)
    rows = [large_catalog.run_task(task, items, args) for items in (200, 400) for task in large_catalog.TASKS]
    assert all(row["throughput"] > 0 and row["setup_mb"] > 0 for row in rows)
    text = large_catalog.report(
        rows, argparse.Namespace(**vars(args), items=[200, 400]), "python benchmarks/large_catalog.py --items 200 400"
    )
    assert "gave the same NDCG@10 at every size" in text and "recommend the same top items" in text
    assert "| spt_in_batch | " in text and "400 items" in text


def test_the_synthetic_log_has_the_requested_shape():
    data = large_catalog.synthetic_catalog(users=50, items=1000, seed=1)
    assert data.num_users == 50 and data.num_items == 1000
    assert 5 <= data.lengths.min() and data.lengths.max() <= 25 and data.items.max() <= 1000
