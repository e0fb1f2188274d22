"""benchmarks/spt_search.py: successive halving on validation only, equal budget from the flags,
resume without retraining, and one clear message for each kind of bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lares_rl.data.synthetic import successor_log
from tests.cli_process import ROOT, run_benchmark
from tests.synthetic import benchmark_dataset_flags

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their helpers as top-level modules

import spt_search  # noqa: E402


def run_search(*args: str) -> subprocess.CompletedProcess:
    return run_benchmark("spt_search.py", *args, timeout=300)


def write_log(path: Path) -> Path:
    """The successor log as a CSV the ``custom`` data set reads, one timestamp per step."""
    data = successor_log(users=120, items=60, min_len=8, max_len=16).data
    lines = ["uid,sku,ts"]
    for user in range(data.num_users):
        items = data.items[data.offsets[user] : data.offsets[user + 1]]
        lines += [f"u{user},i{item},{step}" for step, item in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")
    return path


def keys_of(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for value in node.values() for k in keys_of(value)}
    if isinstance(node, list):
        return {k for value in node for k in keys_of(value)}
    return set()


@pytest.mark.slow
def test_search_halves_on_validation_and_resume_retrains_nothing(tmp_path):
    log = write_log(tmp_path / "log.csv")
    out, runs = tmp_path / "search.json", tmp_path / "runs"
    argv = [
        *benchmark_dataset_flags(log),
        "--policy",
        "lares",
        "--policy-set",
        "d_model=16",
        "inner_size=32",
        "--space",
        "spt.lr=0.001,0.01",
        "policy.dropout=0.1,0.5",
        "--trials",
        "3",
        "--rungs",
        "1",
        "2",
        "--keep",
        "0.7",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--runs-dir",
        str(runs),
    ]
    result = run_search(*argv)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())

    assert record["space"] == {"spt.lr": [0.001, 0.01], "policy.dropout": [0.1, 0.5]} and record["grid_size"] == 4
    trials = record["trials"]
    assert len(trials) == 3 and len({json.dumps(t["settings"], sort_keys=True) for t in trials}) == 3
    assert sorted(len(t["rungs"]) for t in trials) == [1, 2, 2]  # floor(3 * 0.7) = 2 trials go on to epoch 2
    assert all([r["epochs"] for r in t["rungs"]] == [1, 2][: len(t["rungs"])] for t in trials)
    cut = next(t for t in trials if len(t["rungs"]) == 1)
    assert all(cut["rungs"][0]["valid_ndcg@10"] <= t["rungs"][0]["valid_ndcg@10"] for t in trials)
    finalists = [t for t in trials if len(t["rungs"]) == 2]
    best = max(finalists, key=lambda t: t["rungs"][1]["valid_ndcg@10"])
    assert record["winner"]["trial"] == best["trial"] and record["winner"]["valid_ndcg@10"] == best["rungs"][1]["valid_ndcg@10"]
    assert record["epochs_spent"] == record["planned_epochs"] == 3 * 1 + 2 * 1 and record["finished"]
    assert not any("test" in key for key in keys_of(record)), "the search must never evaluate the test split"
    assert "| trial | policy.dropout | spt.lr | valid NDCG@10 @1 | valid NDCG@10 @2 |" in result.stdout

    resumed = run_search(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[spt] epoch" not in resumed.stdout, "finished rungs must not be retrained"
    again = json.loads(out.read_text())
    assert again["trials"] == trials and again["winner"] == record["winner"]


def test_bad_space_key_names_the_flag_and_the_nearest_key():
    result = run_search("--space", "spt.lrr=0.001,0.002", "--rungs", "1", "2")
    assert result.returncode != 0 and result.stderr.startswith("error: --space spt.lrr: unknown key; did you mean spt.lr"), result.stderr


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda: spt_search.check_space({"spt.lr": []}, {"dropout": 0.5}), "error: --space spt.lr: empty value list"),
        (lambda: spt_search.check_space(spt_search.parse_space(["spt.lr=0.001,"]), {}), "error: --space spt.lr: empty value list"),
        (lambda: spt_search.check_space({"spt.epochs": [5]}, {}), "error: --space spt.epochs: the search sets it (use --rungs)"),
        (lambda: spt_search.check_schedule(4, [2, 2, 6], 0.5), "error: --rungs must be strictly increasing"),
        (lambda: spt_search.check_schedule(4, [2, 6], 1.0), "error: --keep must lie strictly between 0 and 1"),
        (lambda: spt_search.check_fixed({"lrr": 1}, {}, {}), "error: --spt-set lrr: unknown"),
    ],
)
def test_bad_input_stops_with_one_message(check, message):
    with pytest.raises(SystemExit, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        check()


def test_the_budget_depends_only_on_trials_rungs_and_keep():
    assert spt_search.planned_epochs(16, [2, 6, 18], 0.5) == 16 * 2 + 8 * 4 + 4 * 12
    small, large = {"a.x": [1, 2, 3]}, {"a.x": [1, 2, 3], "a.y": [4, 5, 6]}
    assert len(spt_search.sample_trials(small, 16, 0)) == 3  # the whole grid when it is smaller
    assert (
        spt_search.sample_trials(large, 4, 7) == spt_search.sample_trials(large, 4, 7) and len(spt_search.sample_trials(large, 4, 7)) == 4
    )
