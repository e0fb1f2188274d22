"""No litter: a command that fails before it wrote anything of its own leaves no run directory
(lares_rl/commands/run_folder.py), and a folder that existed before the command, or that holds
work, is never removed. Every command runs in this process (run_in_process)."""

from pathlib import Path

import pytest

from lares_rl import cli
from lares_rl.commands.session import run_dir
from lares_rl.core.atomic import atomic_write_json
from lares_rl.core.errors import LaresError
from tests.cli_process import run_in_process, spt_checkpoint_in_process
from tests.synthetic import dataset_overrides, write_sequential_csv


def _failure_args(case: str, tmp_path: Path) -> list[str]:
    """A command line that fails after Hydra created the run directory, before any work."""
    csv = write_sequential_csv(tmp_path / "log.csv")
    if case == "missing checkpoint":
        return ["rpt", *dataset_overrides(csv)]
    if case == "missing resume state":
        return ["spt", *dataset_overrides(csv), f"resume={tmp_path / 'never_ran'}"]
    if case == "empty CSV":
        (tmp_path / "empty.csv").write_text("")
        return ["spt", *dataset_overrides(tmp_path / "empty.csv")]
    assert case == "wrong column"
    return ["spt", *dataset_overrides(csv), "dataset.user_col=customer"]


def _entries(folder: Path) -> list[str]:
    """What ``folder`` holds, but for the data cache tests/conftest.py puts in ``tmp_path``."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".lares_cache")


@pytest.mark.parametrize("case", ["missing checkpoint", "missing resume state", "empty CSV", "wrong column"])
def test_a_command_that_fails_before_working_leaves_no_run_folder(tmp_path, monkeypatch, capsys, case):
    args = _failure_args(case, tmp_path)
    before = _entries(tmp_path)
    code, _, err = run_in_process(monkeypatch, capsys, tmp_path, *args, "progress=false")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert _entries(tmp_path) == before  # no runs/ folder: this command created it, and it is gone


def test_only_the_new_run_folder_goes_and_an_explicit_one_too(tmp_path, monkeypatch, capsys):
    earlier = tmp_path / "runs" / "an_earlier_run"
    earlier.mkdir(parents=True)
    args = _failure_args("empty CSV", tmp_path)
    assert run_in_process(monkeypatch, capsys, tmp_path, *args)[0] == 2
    assert _entries(tmp_path / "runs") == ["an_earlier_run"]  # runs/ existed: it stays, with what it held
    assert run_in_process(monkeypatch, capsys, tmp_path, *args, "hydra.run.dir=deep/er/run")[0] == 2
    assert not (tmp_path / "deep").exists()  # every folder this command created on the way


def test_a_folder_that_existed_before_is_never_removed(tmp_path, monkeypatch, capsys):
    """Even one that holds only what Hydra writes (a failed run of an older version)."""
    old = tmp_path / "old"
    (old / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (old / ".hydra" / name).write_text("{}\n")
    args = _failure_args("wrong column", tmp_path)
    assert run_in_process(monkeypatch, capsys, tmp_path, *args, "hydra.run.dir=old")[0] == 2
    assert _entries(old) == [".hydra", "cli.log"]


def test_a_resumed_run_folder_is_never_removed(tmp_path, monkeypatch, capsys):
    csv = write_sequential_csv(tmp_path / "log.csv")
    spt_checkpoint_in_process(tmp_path, *dataset_overrides(csv))
    held = _entries(tmp_path / "spt")
    for where in ([], ["hydra.run.dir=spt"]):  # a new run directory for the attempt, or the resumed one itself
        code, _, err = run_in_process(
            monkeypatch, capsys, tmp_path, "spt", *dataset_overrides(csv), "resume=spt", "spt.lr=0.5", "progress=false", *where
        )
        assert code == 2 and "cannot resume spt" in err, err
        assert _entries(tmp_path / "spt") == held and (tmp_path / "spt" / "checkpoints" / "spt_best.pt").is_file()
    assert not (tmp_path / "runs").exists()


def test_a_failure_after_work_was_written_keeps_the_folder(tmp_path, monkeypatch, capsys):
    def writes_then_fails(cfg):
        atomic_write_json(run_dir() / "metrics.json", {"partial": True})
        raise LaresError("something the user must fix")

    monkeypatch.setitem(cli.HANDLERS, "stats", writes_then_fails)
    code, _, err = run_in_process(monkeypatch, capsys, tmp_path, "stats", "hydra.run.dir=kept")
    assert code == 2 and err == "error: something the user must fix\n"
    assert _entries(tmp_path / "kept") == [".hydra", "cli.log", "metrics.json"]
