"""The benchmark scripts that docs/results/README.md is made from, run end to end on small data.

Every number in the report passes through spt_benchmark.py / rpt_benchmark.py -> JSON ->
make_report.py, so a break anywhere in that chain would otherwise only show up hours into a
real benchmark run. Those runs take minutes and are marked slow; the helpers they share are tested
here in-process, and make_report on the committed JSON in tests/test_report_headline.py.
"""

import argparse
import contextlib
import io
import json
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cli_process import ROOT, child_env, wait_for_epoch
from tests.synthetic import benchmark_dataset_flags

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their helpers as top-level modules

from results_io import REPO_ROOT, check_mergeable, command_line, merge_seed, portable, repo_path, seed_commands  # noqa: E402
from seed_resume import interruption_names_resume, resumable  # noqa: E402

from lares_rl.core.resume import TrainingInterrupted  # noqa: E402

TINY_POLICY = ["--policy-set", "d_model=16", "inner_size=32"]


def tiny_spt_flags(data: list[str], results: Path, runs: Path) -> list[str]:
    """What every spt_benchmark run here shares: the data, dense mode, batches of 64, the tiny policy
    and where results and runs go."""
    return [*data, "--mode", "dense", "--batch-size", "64", "--out-dir", str(results), "--runs-dir", str(runs), *TINY_POLICY]


def run_script(script: str, *args: str) -> str:
    """``python benchmarks/<script> <args>`` from the repository root, run as ``__main__`` in this
    process (an interpreter start with torch costs 4-8 CPU seconds, a dozen scripts run here); its stdout."""
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(io.StringIO()) as out:
        monkeypatch.chdir(ROOT)
        monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / script), *args])
        monkeypatch.setattr(sys, "path", list(sys.path))
        runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__")
    return out.getvalue()


def interrupt_after_first_epoch(script: str, args: list[str], state: Path, poll_s: float) -> str:
    """Start ``script``, send Ctrl-C once its saved training state at ``state`` records a finished
    epoch, and return its stderr: it must exit 1 with one line and no traceback."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_epoch(state, 1, process, deadline_s=300, poll_s=poll_s)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.slow
def test_spt_and_rpt_benchmarks_feed_the_report(tmp_path, sequential_csv):
    data = benchmark_dataset_flags(sequential_csv)
    results, docs, runs = tmp_path / "results", tmp_path / "docs", tmp_path / "runs"
    common = [*tiny_spt_flags(data, results, runs), "--max-epochs", "2", "--patience", "2"]
    run_script("spt_benchmark.py", "--policy", "sasrec", "--seeds", "0", *common)
    run_script("spt_benchmark.py", "--policy", "lares", "--seeds", "0", "1", *common)
    run_script(
        "spt_benchmark.py",
        "--policy",
        "lares",
        "--seeds",
        "0",
        "--alpha",
        "0.0",
        "--tag",
        "_noTLA",
        "--spt-set",
        "negatives=in_batch",
        *common,
    )

    lares = json.loads((results / "custom__lares__dense__L8.json").read_text())
    assert [s["seed"] for s in lares["seeds"]] == [0, 1]
    assert [row["k"] for row in lares["seeds"][0]["depth_sweep"]] == [1, 2, 4, 8, 12, 16]
    assert lares["policy_config"]["d_model"] == 16 and lares["max_len"] == 8
    seed0 = lares["seeds"][0]  # its cost from the CPU clock of its epochs, not their wall time
    assert seed0["core_hours_clock"] == "cpu" and seed0["core_hours"] == pytest.approx(
        seed0["cpu_seconds_per_epoch"] * seed0["epochs_run"] / 3600
    )
    no_tla = json.loads((results / "custom__lares_noTLA__dense__L8.json").read_text())
    assert (
        "--alpha 0.0" in no_tla["command"]
        and "--spt-set negatives=in_batch" in no_tla["command"]
        and no_tla["spt"]["negatives"] == "in_batch"
    )

    checkpoint = runs / "custom__lares__dense__L8" / "seed0" / "checkpoints" / "spt_best.pt"
    run_script(
        "rpt_benchmark.py",
        "--checkpoints",
        str(checkpoint),
        "--seeds",
        "0",
        *data,
        "--rpt-set",
        "epochs=1",
        "--out",
        str(docs / "rpt_custom.md"),
        "--runs-dir",
        str(runs),
    )
    rpt = json.loads((docs / "rpt_custom.json").read_text())
    assert rpt["seeds"][0]["spt_checkpoint"] == portable(str(checkpoint))  # a clone in /tmp has tmp_path as a sibling
    assert (docs / "rpt_custom.png").is_file()
    assert 0 < rpt["seeds"][0]["rpt"]["cpu_seconds"] and rpt["seeds"][0]["rpt"]["resumed"] is False
    run_script(
        "paired_bootstrap.py",
        *data,
        "--pairs",
        str(checkpoint),
        str(runs / "rpt_custom" / "rpt_seed0" / "checkpoints" / "rpt_best.pt"),
        "--resamples",
        "200",
        "--out",
        str(docs / "paired.md"),
    )
    pair = json.loads((docs / "paired.json").read_text())["pairs"][0]
    assert (
        pair["before"] == pytest.approx(rpt["seeds"][0]["before"]["test"]["ndcg@10"])
        and pair["ci_low"] <= pair["change"] <= pair["ci_high"]
    )

    run_script(
        "beyond_accuracy.py",
        "--checkpoints",
        str(checkpoint),
        "--seeds",
        "0",
        *data,
        "--lambdas",
        "0.5",
        "--pop-strengths",
        "0.5",
        "--mmr-strengths",
        "0.3",
        "--rpt-set",
        "epochs=1",
        "slate_size=20",
        "histories_per_batch=64",
        "--out",
        str(docs / "beyond_accuracy_custom"),
        "--runs-dir",
        str(runs),
    )
    beyond = json.loads((docs / "beyond_accuracy_custom.json").read_text())["seeds"][0]
    assert beyond["ild_from"] == "SPT item embeddings" and [len(beyond[m]) for m in ("pop", "mmr", "rpt")] == [1, 1, 1]
    assert {"coverage@10", "novelty@10", "ild@10"} <= set(beyond["rpt"][0]["test"]) and (docs / "beyond_accuracy_custom.png").is_file()

    run_script(
        "eval_noise.py",
        "--checkpoints",
        str(checkpoint),
        *data,
        "--eval-seeds",
        "0",
        "1",
        "--batch-sizes",
        "8",
        "64",
        "--output",
        str(docs / "eval_noise.md"),
    )
    run_script(
        "adaptive_depth.py",
        "--checkpoints",
        str(checkpoint),
        *data,
        "--fixed-ks",
        "1",
        "4",
        "--tols",
        "0.5",
        "--repeats",
        "1",
        "--calls",
        "5",
        "--out",
        str(docs),
    )
    adaptive = json.loads((docs / "adaptive_depth_custom.json").read_text())
    assert [row["setting"] for row in adaptive["rows"]] == ["fixed k=1", "fixed k=4", "halt tol=0.5, k_max=4"]
    assert 2 <= adaptive["rows"][2]["test"]["mean_steps"] <= 4 and (docs / "adaptive_depth_custom.png").is_file()
    run_script(
        "halting_signals.py", "--checkpoints", str(checkpoint), *data, "--k-max", "3", "--out", str(docs / "halting_signals_custom.md")
    )
    signals = json.loads((docs / "halting_signals_custom.json").read_text())["rows"]
    assert [(r["rule"], r["threshold"]) for r in signals[:3]] == [("fixed", 1), ("fixed", 2), ("fixed", 3)]
    assert {r["rule"] for r in signals} == {"fixed", "state", "kl", "top10", "entropy"} and all(
        1 <= r["test"]["steps"] <= 3 for r in signals
    )
    run_script(
        "eval_profile.py",
        "--checkpoint",
        str(checkpoint),
        *data,
        "--repeats",
        "1",
        "--chunk-positions",
        "0",
        "64",
        "--output",
        str(docs / "eval_profile.md"),
    )
    chunk_rows = [line for line in (docs / "eval_profile.md").read_text().splitlines() if line.startswith(("| no chunks |", "| 64 |"))]
    assert len(chunk_rows) == 2 and len({line.rsplit("|", 2)[1] for line in chunk_rows}) == 1  # same NDCG@10 with and without chunks
    run_script(
        "eval_speedup.py",
        "--checkpoint",
        str(checkpoint),
        *data,
        "--baseline-rev",
        "HEAD",
        "--halt-tol",
        "0.5",
        "--rounds",
        "1",
        "--passes",
        "1",
        "--output",
        str(docs / "eval_speedup.md"),
    )
    speedup = (docs / "eval_speedup.md").read_text()
    assert (
        "| revision HEAD, fixed k = 4 |" in speedup and "| this tree, halt tol = 0.5, k_max = 4 |" in speedup and "| 1.00x | - |" in speedup
    )
    run_script("make_report.py", "--results", str(results), "--docs", str(docs))
    report = (docs / "README.md").read_text()
    for heading in (
        "## Adaptive reasoning depth (per-user halting)",
        "### Evaluation throughput against revision HEAD (custom, test, full ranking)",
        "### custom: cost against accuracy",
        "#### Recommended default (chosen on validation)",
        "### Full-ranking evaluation profile (custom, test, k = 4)",
        "#### Inference chunk size",
        "### Halting signals on custom: which users could stop early?",
        "| reasoning steps: feed-forward sublayers |",
    ):
        assert heading in report, heading
    # portable: a clone in /tmp has tmp_path as a sibling, written ../
    assert portable(f"`python benchmarks/make_report.py --results {results} --docs {docs}` from `{results}/*.json`") in report
    for row in (
        "| lares (dense, L=8) | 2 |",
        "| sasrec (dense, L=8) | 1 |",
        "| SASRec (baseline) | sasrec (dense, L=8) | 1 |",
        "| no TLA (alpha = 0) | lares noTLA (dense, L=8) | 1 |",
        "| no SLA (gamma = 0) | not run | 0 |",
        "### custom: rpt_custom",
        "lares (dense, L=8) vs sasrec (dense, L=8): test ndcg@10",
        "Not measured yet: run `python benchmarks/latency.py`.",
        "## Evaluation noise",
        f"| `{portable(str(checkpoint))}` | ",
        "### custom: beyond_accuracy_custom",
        "| re-rank: popularity penalty |",
    ):
        assert row in report
    full_method = next(line for line in report.splitlines() if line.startswith("| LARES-SPT+RPT"))
    assert "from custom__lares__dense__L8/seed0 | 1 |" in full_method
    assert (docs / "depth_custom__lares__dense__L8.png").is_file()


@pytest.mark.slow
def test_ctrl_c_in_spt_benchmark_names_the_resume_flags_and_resume_finishes_the_seed(tmp_path, sequential_csv):
    """Hours-long Beauty seeds get interrupted: one line saying how to continue, no traceback,
    no half-finished row in the results; ``--resume`` then continues the saved run and starts
    the seeds that have none."""
    results, runs = tmp_path / "results", tmp_path / "runs"
    args = ["--policy", "lares", "--seeds", "0", *tiny_spt_flags(benchmark_dataset_flags(sequential_csv), results, runs)]
    state = runs / "custom__lares__dense__L8" / "seed0" / "checkpoints" / "spt_last.pt"
    err = interrupt_after_first_epoch("spt_benchmark.py", [*args, "--max-epochs", "500", "--patience", "500"], state, poll_s=0.2)
    assert err.startswith(
        "[bench] custom__lares__dense__L8 seed 0 interrupted; its training state is saved under"
    ) and err.rstrip().endswith("--seeds 0 and --resume"), err
    assert not (results / "custom__lares__dense__L8.json").exists()
    saved_epochs = torch.load(state, weights_only=False)["progress"]["epoch"]
    seeds_at = args.index("--seeds") + 1
    both_seeds = [*args[:seeds_at], "0", "1", *args[seeds_at + 1 :]]
    out = run_script("spt_benchmark.py", *both_seeds, "--max-epochs", str(saved_epochs + 1), "--patience", "500", "--resume")
    assert f"at epoch {saved_epochs}, batch" in out
    assert "seed 1: no saved training state under" in out and "starting it fresh" in out  # --resume over seeds that never started
    rows = json.loads((results / "custom__lares__dense__L8.json").read_text())["seeds"]
    assert [row["epochs_run"] for row in rows] == [saved_epochs + 1] * 2 and rows[0]["command"].endswith("--resume")


@pytest.mark.slow
def test_ctrl_c_in_rpt_benchmark_names_the_resume_flags_and_resume_finishes_the_seed(tmp_path, sequential_csv):
    """The same for RPT: an interrupted seed leaves one line naming ``--resume`` and no row;
    ``--resume`` continues its saved state to the end (``resumed`` in the row), not from scratch."""
    data = benchmark_dataset_flags(sequential_csv)
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    run_script(
        "spt_benchmark.py", "--policy", "lares", "--seeds", "0", *tiny_spt_flags(data, tmp_path / "results", runs), "--max-epochs", "1"
    )
    checkpoint = runs / "custom__lares__dense__L8" / "seed0" / "checkpoints" / "spt_best.pt"
    args = [
        "--checkpoints",
        str(checkpoint),
        "--seeds",
        "0",
        *data,
        "--rpt-set",
        "epochs=6",  # 5 epochs left after the first for the Ctrl-C to land in
        "patience=6",
        "batches_per_epoch=2",
        "histories_per_batch=32",
        "--out",
        str(docs / "rpt_custom.md"),
        "--runs-dir",
        str(runs),
    ]
    state = runs / "rpt_custom" / "rpt_seed0" / "checkpoints" / "rpt_last.pt"
    err = interrupt_after_first_epoch("rpt_benchmark.py", args, state, poll_s=0.1)
    assert err.startswith("[bench] RPT seed 0 interrupted; its training state is saved under") and err.rstrip().endswith(
        "--seeds 0 and --resume"
    ), err
    assert not (docs / "rpt_custom.json").exists()
    saved_epoch = torch.load(state, weights_only=False)["progress"]["epoch"]
    assert 1 <= saved_epoch < 6

    run_script("rpt_benchmark.py", *args, "--resume")
    row = json.loads((docs / "rpt_custom.json").read_text())["seeds"][0]
    assert row["rpt"]["resumed"] and row["command"].endswith("--resume")
    assert torch.load(state, weights_only=False)["progress"]["epoch"] == 6  # ran to the end from the saved epoch


def test_an_interrupted_seed_names_its_resume_flags_and_resume_starts_the_seeds_without_a_state(tmp_path, capsys):
    """What the Ctrl-C tests above see from outside, on the helpers both benchmark scripts use."""
    run_dir = tmp_path / "seed1"
    with pytest.raises(SystemExit) as stop, interruption_names_resume("custom__lares__dense__L8 seed 1", 1, run_dir):
        raise TrainingInterrupted("SPT interrupted")
    assert str(stop.value.code) == (
        f"[bench] custom__lares__dense__L8 seed 1 interrupted; its training state is saved under {run_dir}. "
        "Continue it with the same command, --seeds 1 and --resume"
    )
    assert not resumable(True, run_dir, "spt_last.pt", "seed 1") and "seed 1: no saved training state under" in capsys.readouterr().out
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "spt_last.pt").write_bytes(b"")
    assert resumable(True, run_dir, "spt_last.pt", "seed 1") and not resumable(False, run_dir, "spt_last.pt", "seed 1")


def test_validation_selection_picks_each_models_best_validation_run_and_never_looks_at_test():
    from make_report import validation_selection_lines

    def run(policy: str, tag: str, valid: float, test: float, seeds: int = 3) -> dict:
        return {
            "policy": policy,
            "name": f"d__{policy}{tag}__dense__L20",
            "max_len": 20,
            "mode": "dense",
            "spt": {},
            "seeds": [{"valid": {"ndcg@10": valid}, "test": {"ndcg@10": test}}] * seeds,
        }

    runs = [
        run("lares", "", 0.050, 0.030),
        run("lares", "_b", 0.052, 0.020),
        run("lares", "_c", 0.060, 0.090, seeds=1),
        run("sasrec", "", 0.049, 0.040),
        run("sasrec", "_t", 0.048, 0.010),
    ]
    [line] = validation_selection_lines(runs)
    assert (
        "lares b (dense, L=20) of 2 LARES runs" in line and "sasrec (dense, L=20) of 2 SASRec runs" in line
    )  # the 1-seed run is no candidate
    assert "test NDCG@10 0.0200 vs 0.0400, -50.0%" in line
    assert validation_selection_lines([run("lares", "", 0.05, 0.03)]) == []  # nothing to compare against


def test_merge_seed_replaces_a_rerun_seed_and_refuses_another_configuration(tmp_path):
    """Seeds of one configuration merge into one file; a rerun seed replaces its old row, and a
    seed made with other settings under the same name is refused rather than averaged in."""
    out = tmp_path / "run.json"
    record = {"command": "python benchmarks/x.py --seeds 1", "spt": {"alpha": 0.1}}
    merge_seed(out, record, {"seed": 1, "ndcg": 0.1}, same=("spt",))
    merge_seed(out, {**record, "command": "python benchmarks/x.py --seeds 0"}, {"seed": 0, "ndcg": 0.2}, same=("spt",))
    merged = merge_seed(out, record, {"seed": 1, "ndcg": 0.3}, same=("spt",))
    assert [(row["seed"], row["ndcg"], row["command"]) for row in merged["seeds"]] == [
        (0, 0.2, "python benchmarks/x.py --seeds 0"),
        (1, 0.3, "python benchmarks/x.py --seeds 1"),
    ]
    assert seed_commands(merged) == "python benchmarks/x.py --seeds 0 1"
    with pytest.raises(SystemExit, match="different spt"):
        merge_seed(out, {**record, "spt": {"alpha": 0.0}}, {"seed": 2, "ndcg": 0.0}, same=("spt",))
    assert len(json.loads(out.read_text())["seeds"]) == 2


def test_check_mergeable_refuses_before_training_and_fills_settings_older_files_lack(tmp_path):
    """The scripts call check_mergeable when they start, so a mismatched --out fails in seconds,
    not after the run (a 30-minute RPT seed was lost that way). A setting added after a file was
    written counts as its default, so the older seeds still merge."""
    out = tmp_path / "run.json"
    old_record = {"command": "python benchmarks/x.py --seeds 1", "rpt": {"lr": 5e-4}}
    merge_seed(out, old_record, {"seed": 1, "ndcg": 0.1}, same=("rpt",))
    newer = {"command": "python benchmarks/x.py --seeds 0", "rpt": {"lr": 5e-4, "ema_decay": None}}
    defaults = {"rpt": {"lr": 1e-3, "ema_decay": None}}
    check_mergeable(out, newer, ("rpt",), defaults)
    assert json.loads(out.read_text())["rpt"] == {"lr": 5e-4}  # the check writes nothing
    with pytest.raises(SystemExit, match="different rpt"):
        check_mergeable(out, {**newer, "rpt": {"lr": 5e-4, "ema_decay": 0.9}}, ("rpt",), defaults)
    merged = merge_seed(out, newer, {"seed": 0, "ndcg": 0.2}, same=("rpt",), defaults=defaults)
    assert [row["seed"] for row in merged["seeds"]] == [0, 1] and merged["rpt"] == {"lr": 5e-4, "ema_decay": None}


def test_seed_commands_name_the_command_of_each_seed_row():
    """Seeds that ran the same settings share one command; others get their own. Files from
    before rows had a command are read from the " ; "-joined record command: the last part
    naming a seed made it, and lists aligned with --seeds are narrowed with it."""
    base = "python benchmarks/x.py --dataset d --seeds {} --lr 0.001"
    rows = [
        {"seed": 0, "command": base.format("0 1") + " --resume"},
        {"seed": 1, "command": base.format("0 1")},
        {"seed": 2, "command": base.format(2).replace("0.001", "0.01")},
    ]
    assert seed_commands({"seeds": rows}) == base.format("0 1") + " ; " + base.format(2).replace("0.001", "0.01")
    legacy = {
        "command": "python benchmarks/r.py --checkpoints a.pt b.pt --seeds 0 1 --epochs 4 ; python benchmarks/r.py --checkpoints c.pt --seeds 1 --epochs 4",
        "seeds": [{"seed": 0}, {"seed": 1}],
    }
    assert (
        seed_commands(legacy)
        == "python benchmarks/r.py --checkpoints a.pt --seeds 0 --epochs 4 ; python benchmarks/r.py --checkpoints c.pt --seeds 1 --epochs 4"
    )


def test_command_line_keeps_zero_settings_and_drops_unset_ones():
    """The recorded command must rerun the same configuration: ``--gamma 0.0`` (no SLA) is a
    setting, not an unset flag."""
    args = argparse.Namespace(
        dataset="ml-100k", seeds=[0, 1], gamma=0.0, patience=0, bucket=False, resume=True, tag="", policy_set=[], max_len=None, out_dir="x"
    )
    assert (
        command_line("spt_benchmark.py", args, skip=("out_dir",))
        == "python benchmarks/spt_benchmark.py --dataset ml-100k --seeds 0 1 --gamma 0.0 --patience 0 --resume"
    )


def test_portable_makes_this_machines_repo_and_data_paths_relative_to_the_repo_root(tmp_path):
    """Records are commands anyone reruns from the root of their own clone: the repository's
    paths become repo-relative and its siblings' (the data) ``../``; other paths stay as given."""
    checkpoint, data = f"{REPO_ROOT}/benchmarks/runs/a/seed0/checkpoints/spt_best.pt", f"{REPO_ROOT.parent}/shared/data/beauty.txt"
    elsewhere = f"/elsewhere{REPO_ROOT}/x.pt"  # the repo's path inside a longer one is another file
    record = {
        "command": f"python benchmarks/x.py --beauty-path {data} --dataset-set path={data} --checkpoints {checkpoint} {elsewhere}",
        "seeds": [{"seed": 0, "checkpoint": checkpoint, "runs": [checkpoint, {"data": data}], "ndcg": 0.5, "best": None}],
        "out": "/elsewhere/r.json",  # not tmp_path: a clone in /tmp has /tmp/pytest-* as a sibling
    }
    assert portable(record) == {
        "command": "python benchmarks/x.py --beauty-path ../shared/data/beauty.txt --dataset-set path=../shared/data/beauty.txt "
        f"--checkpoints benchmarks/runs/a/seed0/checkpoints/spt_best.pt {elsewhere}",
        "seeds": [
            {
                "seed": 0,
                "checkpoint": "benchmarks/runs/a/seed0/checkpoints/spt_best.pt",
                "runs": ["benchmarks/runs/a/seed0/checkpoints/spt_best.pt", {"data": "../shared/data/beauty.txt"}],
                "ndcg": 0.5,
                "best": None,
            }
        ],
        "out": "/elsewhere/r.json",
    }
    assert repo_path(portable(checkpoint)) == Path(checkpoint) and repo_path(str(tmp_path)) == tmp_path


def test_merge_seed_and_command_line_record_portable_paths(tmp_path):
    """Every writer goes through these, so no record names this machine's folders; a seed recorded
    before with the same settings still merges."""
    data = f"{REPO_ROOT.parent}/shared/data/beauty.txt"
    args = argparse.Namespace(beauty_path=data, checkpoints=[f"{REPO_ROOT}/a.pt"])
    assert command_line("x.py", args) == "python benchmarks/x.py --beauty-path ../shared/data/beauty.txt --checkpoints a.pt"
    out = tmp_path / "run.json"
    record = {"command": command_line("x.py", args), "dataset": {"path": data}}
    merge_seed(out, record, {"seed": 0, "spt_checkpoint": f"{REPO_ROOT}/a.pt"}, same=("dataset",))
    check_mergeable(out, record, ("dataset",))
    merged = merge_seed(out, record, {"seed": 1, "spt_checkpoint": f"{REPO_ROOT}/b.pt"}, same=("dataset",))
    assert merged["dataset"] == {"path": "../shared/data/beauty.txt"}
    assert [row["spt_checkpoint"] for row in json.loads(out.read_text())["seeds"]] == ["a.pt", "b.pt"]


def test_spt_set_overrides_any_spt_key_and_names_an_unknown_one():
    from spt_benchmark import spt_overrides

    from lares_rl.core.errors import LaresError
    from lares_rl.spt.config import SPTConfig

    cfg = spt_overrides(SPTConfig(lr=0.002), {"negatives": "sampled", "num_negatives": 128})
    assert (cfg.lr, cfg.negatives, cfg.num_negatives) == (0.002, "sampled", 128)
    with pytest.raises(LaresError, match=r"--spt-set: unknown spt key\(s\) \['negatives_count'\]"):
        spt_overrides(SPTConfig(), {"negatives_count": 5})


def test_gradient_stats_separate_signal_from_noise():
    from rpt_gradient_snr import gradient_stats

    torch.manual_seed(0)
    signal = torch.zeros(2000)
    signal[0] = 1.0
    noisy = [signal + 0.1 * torch.randn(2000) for _ in range(16)]  # per-batch noise 2000 * 0.01 = 20
    stats = gradient_stats(noisy)
    assert abs(stats["noise_per_batch"] - 20) < 2 and abs(stats["signal"] - 1) < 0.5
    assert 0.02 < stats["snr_per_batch"] < 0.08 and abs(stats["pairwise_cosine"]) < 0.1
    clean = gradient_stats([signal * (1 + 0.01 * i) for i in range(4)])
    assert clean["snr_per_batch"] > 100 and clean["pairwise_cosine"] > 0.99
