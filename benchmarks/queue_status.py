"""Where a benchmark campaign stands: the seeds each results file holds, and every saved training
state (SPT or RPT) under benchmarks/runs/, with its epoch, its best validation NDCG@10 so far and
how many epochs it has gone without a gain, so the next session knows what to queue.

    python benchmarks/queue_status.py amazon2023-instruments      # names containing this text
    python benchmarks/queue_status.py amazon-beauty __L50

Reads the files only: safe beside running trainings (a state being rewritten is skipped, named).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def recorded_rows(folders: list[Path], needles: list[str]) -> list[str]:
    """One line per results JSON whose name holds every needle: its recorded seeds."""
    lines = []
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            if not all(needle in path.name for needle in needles):
                continue
            seeds = json.loads(path.read_text()).get("seeds") or []
            lines.append(f"{path}: seeds {sorted(row['seed'] for row in seeds)}")
    return lines


def saved_states(runs: Path, needles: list[str]) -> list[str]:
    """One line per saved SPT/RPT state whose path holds every needle."""
    lines = []
    for path in sorted(runs.rglob("checkpoints/*_last.pt")):
        run = path.parent.parent.relative_to(runs)
        if not all(needle in str(run) for needle in needles):
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, OSError) as err:
            lines.append(f"{run}: unreadable now ({err.__class__.__name__}; being written?)")
            continue
        progress, stopper = state.get("progress", {}), state.get("stopper", {})
        where = "finished" if progress.get("finished") else f"epoch {progress.get('epoch')}, batch {progress.get('next_batch')}"
        best = stopper.get("best")
        validated = best is not None and stopper.get("best_epoch", -1) >= 0  # a fresh stopper holds -inf at epoch -1
        best_text = f"best valid NDCG@10 {best:.4f} at epoch {stopper['best_epoch']}" if validated else "no validation yet"
        lines.append(f"{run}: {where}; {best_text}; {stopper.get('bad_epochs', 0)} of {stopper.get('patience')} epochs without a gain")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("needles", nargs="+", help="text every listed file or run name must contain")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "runs")
    parser.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[ROOT / "benchmarks" / "results", ROOT / "benchmarks" / "results" / "search", ROOT / "docs" / "results"],
        help="folders of results JSON (default: the SPT, search and RPT/report ones)",
    )
    args = parser.parse_args()
    rows, states = recorded_rows(args.results, args.needles), saved_states(args.runs_dir, args.needles)
    print("recorded rows:", *(rows or ["none"]), sep="\n  ")
    print("saved training states:", *(states or ["none"]), sep="\n  ")


if __name__ == "__main__":
    main()
