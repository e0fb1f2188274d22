"""Run the real `lares-rl` console entry in a child process, and watch its saved training state:
shared by the kill/resume tests of SPT and RPT."""

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

CLI = [sys.executable, "-c", "from lares_rl.cli import main; main()"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*CLI, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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
