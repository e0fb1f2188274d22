"""Run the real `lares-rl` console entry or a benchmark script in a child process, as a user would,
and watch its saved training state (the kill/resume tests of SPT and RPT)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

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
