"""Progress of long steps: a bar on a terminal, plain lines (never carriage-return frames) in a log."""

from __future__ import annotations

import sys

import torch

from lares_rl.core import tracking
from lares_rl.core.tracking import progress, progress_enabled
from lares_rl.data import DatasetConfig, load_dataset
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.rpt.filter import top_k_filter
from tests.synthetic import CSV_COLUMNS, tiny_reasoner


def test_a_log_gets_plain_lines_per_step_and_one_closing_line(capsys, monkeypatch):
    monkeypatch.setattr(tracking, "CLOSING_LINE_AFTER_S", 0.0)
    assert list(progress(range(3), 3, "work", unit="step", every=0.0)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == ["work: step 1 of 3 (0s)", "work: step 2 of 3 (0s)", "work: done in 0.0s (step 3 of 3)"]


def test_short_loops_stay_silent_in_a_log_and_trainers_skip_the_closing_line(capsys, monkeypatch):
    assert list(progress(range(5), 5, "quick")) == list(range(5))
    monkeypatch.setattr(tracking, "CLOSING_LINE_AFTER_S", 0.0)
    list(progress(range(5), 5, "epoch", closing=False))
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_bar_and_progress_false_hides_everything(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert list(progress(range(4), 4, "bar")) == list(range(4))
    assert "\r" in capsys.readouterr().err  # tqdm frames
    monkeypatch.setattr(tracking, "CLOSING_LINE_AFTER_S", 0.0)
    with progress_enabled(False):
        list(progress(range(4), 4, "hidden", every=0.0))
    assert capsys.readouterr().err == ""
    assert tracking._enabled  # the switch is restored on exit


def test_filter_evaluation_and_data_processing_report_progress(tmp_path, sequential_csv, capsys, monkeypatch):
    """The steps the trainers call without a flag (filter, evaluation) and data processing all end
    with their closing line in a log once they run longer than the threshold (0 here)."""
    monkeypatch.setattr(tracking, "CLOSING_LINE_AFTER_S", 0.0)
    data = load_dataset(DatasetConfig(name="custom", path=str(sequential_csv), **CSV_COLUMNS), tmp_path / "cache")
    policy = tiny_reasoner(data.num_items, 8, d_model=8, inner_size=16, n_pre_layers=1, n_core_layers=1, mean_recurrence=2)
    seqs, lengths, targets = data.train_rows(8)
    top_k_filter(policy, seqs, lengths, targets, top=5, passes=2, batch_size=256)
    evaluate_policy(policy, data, "valid", 8, EvalConfig(batch_size=16), torch.device("cpu"))
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("processing custom") and "done in" in line for line in lines), lines
    assert any(line.startswith("rpt filter (top-5, 2 passes): done in") and "of 6)" in line for line in lines), (
        lines
    )  # 2 passes x 3 batches
    assert any(line.startswith("eval valid: done in") for line in lines), lines
    assert not any("\r" in line for line in lines)
