"""Run the real `lares-rl` console entry or a benchmark script in a child process, as a user would,
and watch its saved training state (the kill/resume tests of SPT and RPT); or run the entry inside
the test process, where a command's checks need no interpreter start."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lares_rl.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from lares_rl.cli import main; main()"]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with one thread per child: the test machines share few cores."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def run_cli(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``lares-rl <args>`` run to the end in ``cwd``, with the repository root on the path as a user's
    own module would be: tests.plugins rewards and backbones resolve from any cwd."""
    env = child_env(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture | None, cwd: Path, *args: str) -> tuple[int, str, str]:
    """``lares-rl <args>`` in ``cwd`` inside this process: (exit status, stdout, stderr; both empty
    without ``capsys``). The same main() a child process runs, without its 4-8 CPU seconds of
    interpreter start and imports: the way to test what a command checks, prints and writes."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["lares-rl", *args])
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() puts the working directory first, as the console script does
    if capsys is not None:
        capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


# one SPT epoch of a 16-wide LARES: a checkpoint to evaluate, sweep or refuse in seconds
TINY_SPT = ["spt.epochs=1", "spt.batch_size=64", "policy.d_model=16", "policy.inner_size=32", "progress=false"]


def spt_checkpoint_in_process(cwd: Path, *args: str) -> Path:
    """``lares-rl spt <args>`` with ``TINY_SPT`` run in this process into ``cwd/spt``; its best checkpoint."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        code, _, _ = run_in_process(monkeypatch, None, cwd, "spt", *args, *TINY_SPT, "hydra.run.dir=spt")
    assert code == 0
    return cwd / "spt" / "checkpoints" / "spt_best.pt"


def checkpoint_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, data_args: Callable[[Path], list[str]]
) -> tuple[Path, list[str], Path]:
    """(a fresh folder ``name``, ``data_args(folder)``, a tiny SPT checkpoint trained in this process
    on that data): the body of the module fixtures that evaluate, sweep or refuse one checkpoint."""
    tmp_path = tmp_path_factory.mktemp(name)
    args = data_args(tmp_path)
    return tmp_path, args, spt_checkpoint_in_process(tmp_path, *args)


def run_benchmark(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> <args>`` run to the end from the repository root, as the docs run it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def wait_for_epoch(state: Path, epoch: int, process: subprocess.Popen, deadline_s: float, poll_s: float) -> None:
    """Return once the training state at ``state`` records ``epoch`` finished epochs."""
    deadline = time.time() + deadline_s
    while time.time() < deadline and process.poll() is None:
        if state.is_file():
            try:
                if torch.load(state, weights_only=False)["progress"]["epoch"] >= epoch:
                    return
            except Exception:
                pass  # being replaced right now; atomic rename means the next read sees a whole file
        time.sleep(poll_s)
    raise AssertionError(f"training ended or stalled before the kill point: {process.communicate()}")
