"""Plain-text result tables printed by the CLI and written into docs by the benchmarks."""

from __future__ import annotations

from typing import Mapping, Sequence

from .metrics import METRIC_NAMES


def results_table(results: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> str:
    """Markdown table: one row per model/stage, one column per metric@k."""
    columns = [f"{name}@{k}" for name in METRIC_NAMES for k in ks]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for label, metrics in results.items():
        lines.append(f"| {label} | " + " | ".join(f"{metrics[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)
