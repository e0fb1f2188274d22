"""A full disk or an unwritable output location: one clear error naming the path, the previous
file intact, no temporary file left behind, and no traceback from the CLI.

Tests run as root, for whom chmod does not block writes, so the failures are injected by
monkeypatching the calls lares_rl.core.atomic makes."""

import errno
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lares_rl import cli
from lares_rl.core import atomic
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import load_training_state, save_training_state
from tests.cli_process import run_in_process

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail(*args, **kwargs):
    raise ENOSPC


@pytest.fixture
def previous(tmp_path) -> Path:
    path = tmp_path / "run" / "metrics.json"
    atomic.atomic_write_json(path, {"old": 1})
    return path


@pytest.mark.parametrize("where", ["tempfile.mkstemp", "os.fsync", "os.replace"])
def test_a_failed_write_names_the_path_keeps_the_previous_file_and_leaves_no_temp_file(previous, monkeypatch, where):
    module, name = where.split(".")
    monkeypatch.setattr(getattr(atomic, module), name, _fail)
    with pytest.raises(LaresError, match=f"cannot write {previous}: No space left on device"):
        atomic.atomic_write_json(previous, {"new": 2})
    monkeypatch.undo()
    assert previous.read_text() == '{\n  "old": 1\n}\n'
    assert sorted(p.name for p in previous.parent.iterdir()) == ["metrics.json"]


def test_a_training_state_that_cannot_be_saved_leaves_the_last_one_loadable(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "rpt_last.pt"
    save_training_state(path, {"progress": {"epoch": 1}, "weights": torch.ones(3)})
    monkeypatch.setattr(atomic.os, "replace", _fail)
    with pytest.raises(LaresError, match=f"cannot write {path}.*previous file, if any, is intact"):
        save_training_state(path, {"progress": {"epoch": 2}, "weights": torch.zeros(3)})
    monkeypatch.undo()
    assert load_training_state(path)["progress"]["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["rpt_last.pt"]


def _dispatch(monkeypatch, capsys, handler) -> tuple[int, str]:
    monkeypatch.setitem(cli.HANDLERS, "stats", handler)
    with pytest.raises(SystemExit) as exit_info:
        cli.dispatch(OmegaConf.create({"command": "stats"}))
    return exit_info.value.code, capsys.readouterr().err


def test_cli_reports_a_full_disk_as_one_error_line(tmp_path, monkeypatch, capsys):
    target = tmp_path / "run" / "metrics.json"
    monkeypatch.setattr(atomic.os, "replace", _fail)
    code, err = _dispatch(monkeypatch, capsys, lambda cfg: atomic.atomic_write_json(target, {}))
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: cannot write {target}: No space left on device")
    assert list(target.parent.iterdir()) == []


def test_cli_reports_other_write_errors_without_a_traceback_and_keeps_bugs_loud(tmp_path, monkeypatch, capsys):
    def read_only(cfg):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "tb"))

    code, err = _dispatch(monkeypatch, capsys, read_only)
    assert (
        code == 2
        and err
        == f"error: Read-only file system: {tmp_path / 'tb'}; free disk space or choose a writable output directory (hydra.run.dir=...)\n"
    )

    def bug(cfg):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setitem(cli.HANDLERS, "stats", bug)
    with pytest.raises(OSError):
        cli.dispatch(OmegaConf.create({"command": "stats"}))


def test_an_unwritable_run_directory_is_one_error_line_before_hydra_starts(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    for run_dir, key in (("/proc/lares", "hydra.run.dir"), ("a_file/${now:%H}", "hydra.run.dir"), ("/proc/lares_sweep", "hydra.sweep.dir")):
        extra = ["-m"] if key == "hydra.sweep.dir" else []
        code, _, err = run_in_process(monkeypatch, capsys, tmp_path, "stats", *extra, f"{key}={run_dir}")
        assert code == 2, err
        assert err.startswith("error: cannot write the run directory") and f"({key}={run_dir})" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_writes_get_the_permissions_a_plain_open_would(tmp_path, umask, mode):
    """mkstemp creates 0600 files: results and checkpoints would be unreadable to other users
    (a shared TensorBoard host, a teammate) unless the umask is applied as open() does."""
    old = os.umask(umask)
    try:
        atomic.atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode
