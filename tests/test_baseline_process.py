"""`run`'s baseline in a second process (issue 35 item 6, ``baseline_parallel``): when it applies,
how many threads each process gets, the one line a child that did not finish leaves, and, end to
end on a tiny ring (slow: the child is a spawned interpreter that trains), the same baseline
numbers as the sequential run, and a Ctrl-C that stops both processes and resumes exactly.

Every run here has one torch thread per process (tests/conftest.py and child_env pin
OMP_NUM_THREADS=1 and torch.set_num_threads(1)), so parallel and sequential sum floats in the same order."""

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from lares_rl.commands import baseline_process
from lares_rl.commands.baseline import baseline_results_path
from lares_rl.commands.baseline_process import child_failure, parallel_baseline, threads_per_process, trains_beside
from lares_rl.commands.schemas import compose_config
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import TrainingInterrupted
from tests.cli_process import CLI, child_env, finish, run_in_process, wait_for_epoch
from tests.synthetic import dataset_overrides, tiny_run_overrides, write_sequential_csv

# a tiny LARES and its SASRec baseline: 6 SPT epochs each (the Ctrl-C test needs some left to cut)
TINY_RUN = [*tiny_run_overrides(spt_epochs=6), "spt.patience=100"]


@pytest.mark.parametrize(
    ("setting", "cpus", "threads", "expected"),
    [
        ("auto", 1, 1, False),
        ("auto", 2, 1, True),  # OMP_NUM_THREADS=1 on 2 CPUs: the second CPU would idle
        ("auto", 2, 2, False),  # the chain has both CPUs: the baseline follows it (21.7 -> 15.9 min)
        ("auto", 16, 8, True),
        ("auto", 16, 16, False),
        (True, 1, 1, True),
        ("true", 2, 2, True),
        (False, 8, 1, False),
        ("FALSE", 8, 1, False),
    ],
)
def test_the_setting_the_usable_cpus_and_the_threads_decide(setting, cpus, threads, expected):
    assert parallel_baseline(setting, cpus, threads) is expected


def test_a_wrong_setting_names_the_key_and_its_values():
    with pytest.raises(LaresError, match=r"^baseline_parallel=sometimes is not one of auto, true, false; use baseline_parallel=auto"):
        parallel_baseline("sometimes", 2, 1)


@pytest.mark.parametrize(("current", "cpus", "expected"), [(1, 2, 1), (2, 2, 1), (8, 16, 8), (16, 16, 8), (4, 1, 1), (1, 16, 1)])
def test_each_process_gets_half_the_cpus_and_never_more_threads_than_it_had(current, cpus, expected):
    assert threads_per_process(current, cpus) == expected


def test_only_a_baseline_left_to_train_goes_to_a_second_process(tmp_path, monkeypatch):
    monkeypatch.setattr(baseline_process, "usable_cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert trains_beside(compose_config(["baseline_parallel=auto"]), tmp_path, resuming=False)
    assert not trains_beside(compose_config(["baseline_parallel=false"]), tmp_path, resuming=False)
    assert not trains_beside(compose_config(["baseline_parallel=true", "baseline=null"]), tmp_path, resuming=False)
    assert not trains_beside(compose_config(["baseline_parallel=true", "policy=sasrec"]), tmp_path, resuming=False)  # it is the baseline
    results = baseline_results_path(tmp_path)
    results.parent.mkdir(parents=True)
    results.write_text("{}")
    assert not trains_beside(compose_config(["baseline_parallel=true"]), tmp_path, resuming=True)  # finished: reused, not retrained
    assert trains_beside(compose_config(["baseline_parallel=true"]), tmp_path, resuming=False)
    monkeypatch.setattr(baseline_process, "usable_cpus", lambda: 1)
    assert not trains_beside(compose_config(["baseline_parallel=auto"]), tmp_path, resuming=False)


def test_the_suite_runs_the_baseline_in_this_process_and_the_config_default_is_auto():
    assert compose_config([]).baseline_parallel == "false"  # tests/conftest.py: LARES_RL_BASELINE_PARALLEL
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("LARES_RL_BASELINE_PARALLEL")
        assert compose_config([]).baseline_parallel == "auto"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (130, "baseline sasrec was interrupted in its process; its state is saved (log: LOG). Resume with: HINT"),
        (
            1,
            "baseline sasrec failed in its second process (exit status 1): the reason is at the end of LOG; the finished phases are saved, so `HINT` continues the run",
        ),
        (
            -9,
            "baseline sasrec was killed by signal 9 (Killed) in its second process (log: LOG); the finished phases are saved, so `HINT` continues the run",
        ),
    ],
)
def test_a_child_that_did_not_finish_is_one_line_naming_its_log(code, expected):
    error = child_failure("sasrec", code, Path("LOG"), "HINT")
    assert str(error).startswith(expected) and "\n" not in str(error)
    assert isinstance(error, TrainingInterrupted) == (code == 130)  # the CLI: `interrupted:` and 130, else `error:` and 2


def test_a_wrong_setting_stops_run_before_any_training(tmp_path, monkeypatch, capsys):
    data = dataset_overrides(write_sequential_csv(tmp_path / "log.csv", users=40, items=30, length=10))
    code, out, err = run_in_process(monkeypatch, capsys, tmp_path, "run", *data, *TINY_RUN, "baseline_parallel=maybe", "hydra.run.dir=run")
    assert (
        code == 2
        and err
        == "error: baseline_parallel=maybe is not one of auto, true, false; "
        "use baseline_parallel=auto (a second process when this one's threads leave half the CPUs idle)\n"
    )
    assert "[spt] epoch" not in out and not (tmp_path / "run").exists()


def _run(cwd: Path, *args: str) -> tuple[int, str, str]:
    """``lares-rl run <args>`` with its parent in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code, _, _ = run_in_process(monkeypatch, None, cwd, "run", *args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory) -> tuple[Path, list[str], dict[str, tuple[dict, str]]]:
    """(folder, data overrides, {setting: (metrics, stdout)}) of the same tiny `run` with the
    baseline beside the method (``true``, folder ``beside``) and after it (``false``, ``after``)."""
    tmp_path = tmp_path_factory.mktemp("baseline_process")
    data = dataset_overrides(write_sequential_csv(tmp_path / "log.csv", users=40, items=30, length=10))
    runs = {}
    for setting, folder in (("true", "beside"), ("false", "after")):
        code, out, err = _run(
            tmp_path, *data, *TINY_RUN, f"cache_dir={tmp_path / 'cache'}", f"baseline_parallel={setting}", f"hydra.run.dir={folder}"
        )
        assert code == 0, err[-3000:]
        runs[setting] = (json.loads((tmp_path / folder / "metrics.json").read_text()), out)
    return tmp_path, data, runs


@pytest.mark.slow
def test_the_baseline_beside_the_method_has_the_numbers_it_has_after_it(both_runs):
    _, _, runs = both_runs
    (beside, _), (after, _) = runs["true"], runs["false"]
    assert beside["baseline"]["test"] == after["baseline"]["test"]  # every test metric, bit for bit
    assert beside["baseline"]["spt"]["valid"] == after["baseline"]["spt"]["valid"]  # and every epoch's validation
    assert beside["baseline"]["spt"]["best_epoch"] == after["baseline"]["spt"]["best_epoch"]
    assert beside["test"] == after["test"] and beside["paired"] == after["paired"]  # the method's numbers do not move either


@pytest.mark.slow
def test_the_terminal_gets_one_line_at_each_end_and_the_log_gets_the_baseline(both_runs):
    tmp_path, _, runs = both_runs
    log = tmp_path / "beside" / "baseline" / "log.txt"
    _, out = runs["true"]
    first = next(line for line in out.splitlines() if line.startswith("[lares-rl]"))
    assert first == f"[lares-rl] baseline sasrec trains in a second process (log: {log}); each process uses 1 thread(s)"
    best = runs["true"][0]["baseline"]["spt"]["best_epoch"]
    assert f"[lares-rl] baseline sasrec finished in its process (best epoch {best}; log: {log})" in out
    assert "baseline sasrec on the same split" not in out and out.index("finished in its process") < out.index("| sasrec |")
    assert "[lares-rl] baseline sasrec on the same split and SPT settings" in log.read_text() and "[spt] epoch   5" in log.read_text()
    assert torch.get_num_threads() == 1  # the parent's threads are back once the child is done
    assert "second process" not in runs["false"][1] and not (tmp_path / "after" / "baseline" / "log.txt").exists()


@pytest.mark.slow
def test_ctrl_c_stops_both_processes_and_the_printed_resume_ends_as_the_sequential_run(both_runs):
    """The terminal's Ctrl-C reaches the whole process group: the baseline's process saves its
    state too, the parent waits for it and exits 130 with the resume command, and that command
    continues both to the numbers of the uninterrupted sequential run."""
    tmp_path, data, runs = both_runs
    args = [*data, *TINY_RUN, f"cache_dir={tmp_path / 'cache'}", "baseline_parallel=true", "hydra.run.dir=stopped"]
    process = subprocess.Popen(
        [*CLI, "run", *args],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_epoch(tmp_path / "stopped" / "baseline" / "checkpoints" / "spt_last.pt", 1, process, deadline_s=240, poll_s=0.02)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C on a terminal does
    code, _, err = finish(process, timeout=180)
    assert code == 130 and "Traceback" not in err, err
    log = (tmp_path / "stopped" / "baseline" / "log.txt").read_text()
    assert "interrupted: SPT interrupted at epoch" in log and "Traceback" not in log, log[-2000:]
    printed = err.split("Resume with: ", 1)[1].strip()
    code, out, err = _run(tmp_path, *shlex.split(printed)[2:], "hydra.run.dir=resumed")
    assert code == 0, err[-3000:]
    assert "[lares-rl] baseline sasrec trains in a second process" in out  # the unfinished baseline resumes beside the method
    resumed, (sequential, _) = json.loads((tmp_path / "stopped" / "metrics.json").read_text()), runs["false"]
    assert resumed["baseline"]["test"] == sequential["baseline"]["test"] and resumed["test"] == sequential["test"]
