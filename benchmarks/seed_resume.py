"""``--resume`` for the benchmark scripts that train one run per seed (spt_benchmark, rpt_benchmark):
which seeds have a saved state to continue, and the one line an interrupted seed leaves behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lares_rl.core.resume import TrainingInterrupted


def resumable(requested: bool, run_dir: Path, state_file: str, who: str) -> bool:
    """True when ``--resume`` was asked for and ``run_dir/checkpoints/state_file`` exists. A seed
    without a saved state starts fresh, and says so (a wrong ``--runs-dir`` is then visible)."""
    resume = requested and (run_dir / "checkpoints" / state_file).is_file()
    if requested and not resume:
        print(f"[bench] {who}: no saved training state under {run_dir}; starting it fresh", flush=True)
    return resume


@contextmanager
def interruption_names_resume(who: str, seed: int, run_dir: Path) -> Iterator[None]:
    """Ctrl-C inside: exit with one line saying where the state is and how to continue, instead of
    a traceback (the training loop has already saved the state)."""
    try:
        yield
    except TrainingInterrupted:
        raise SystemExit(
            f"[bench] {who} interrupted; its training state is saved under {run_dir}. Continue it with the same command, --seeds {seed} and --resume"
        ) from None
