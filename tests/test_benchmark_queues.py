"""The benchmark queues (instruments_table.sh, compatibility_table.sh): a bad step or a missing data
file stops the queue before anything runs, with one line naming the step or the file."""

import json
import subprocess
import sys

import pytest

from lares_rl.core.resume import save_training_state
from tests.cli_process import ROOT


def queue(script: str, *steps: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / script), *steps],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )


@pytest.mark.parametrize(
    "script,variable,step",
    [("instruments_table.sh", "DATA", "spt-lares:0"), ("compatibility_table.sh", "BEAUTY", "plain-bsarec:0")],
)
def test_a_missing_data_file_is_named_with_the_variable_that_sets_it(tmp_path, script, variable, step):
    result = queue(script, step, **{variable: str(tmp_path / "absent.txt")})
    assert result.returncode == 2 and result.stderr.strip() == f"error: {tmp_path / 'absent.txt'} not found; set {variable}=<your " + (
        "amazon2023-instruments-5core.txt>" if variable == "DATA" else "amazon-beauty-5core.txt>"
    )


@pytest.mark.parametrize(
    "script,step,message",
    [
        ("instruments_table.sh", "spt-lares", "error: step 'spt-lares' is not <what>:<seed> (e.g. spt-lares:0)"),
        ("instruments_table.sh", "spt-lares:one", "error: step 'spt-lares:one': the seed must be a number"),
        (
            "instruments_table.sh",
            "train:0",
            "error: unknown step 'train' (spt-lares, spt-defaults, spt-sasrec, search-sasrec, spt-tuned, rpt-expected, rpt-grpo, adaptive)",
        ),
        (
            "compatibility_table.sh",
            "plain-gru:0",
            "error: unknown step 'plain-gru'; use plain-bsarec, lares-bsarec, plain-fmlp or lares-fmlp",
        ),
    ],
)
def test_a_bad_step_stops_the_queue_with_one_line(tmp_path, script, step, message):
    data = tmp_path / "data.txt"
    data.write_text("u1 1 2 3\n")
    result = queue(script, step, DATA=str(data), BEAUTY=str(data))
    assert result.returncode == 2 and result.stderr.strip() == message and "[table]" not in result.stdout


def test_queue_status_lists_recorded_seeds_and_each_saved_state(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    results.mkdir()
    (results / "amazon2023-instruments__sasrec__dense__L20.json").write_text(json.dumps({"seeds": [{"seed": 1}, {"seed": 0}]}))
    (results / "ml-100k__sasrec__dense__L20.json").write_text(json.dumps({"seeds": [{"seed": 0}]}))
    state = runs / "amazon2023-instruments__lares__dense__L20" / "seed1" / "checkpoints" / "spt_last.pt"
    state.parent.mkdir(parents=True)
    progress = {"epoch": 7, "next_batch": 12, "finished": False}
    save_training_state(state, {"progress": progress, "stopper": {"best": 0.028, "best_epoch": 5, "bad_epochs": 1, "patience": 10}})
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "queue_status.py"),
            "amazon2023-instruments",
            "--results",
            str(results),
            "--runs-dir",
            str(runs),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.splitlines() == [
        "recorded rows:",
        f"  {results / 'amazon2023-instruments__sasrec__dense__L20.json'}: seeds [0, 1]",
        "saved training states:",
        "  amazon2023-instruments__lares__dense__L20/seed1: epoch 7, batch 12; best valid NDCG@10 0.0280 at epoch 5; 1 of 10 epochs without a gain",
    ]
