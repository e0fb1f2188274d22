"""TensorBoard logging with fixed tag namespaces, plus a quietable progress bar.

Tags follow one scheme for every phase (see STYLE): ``losses/`` for each ``loss_*`` entry with the
prefix dropped, ``charts/`` for rates and schedules, ``diag/`` for other diagnostics, ``eval/`` for
validation metrics, ``time/`` for seconds. One call logs a whole dict, so no key needs its own code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


class Tracker:
    """A TensorBoard writer for one phase (``spt``, ``rpt``) of a run."""

    def __init__(self, log_dir: str | Path, phase: str, progress: bool = True, purge_step: int | None = None) -> None:
        """``purge_step``: when resuming, drop events at this step or later (pass the saved state's
        step + 1: what was logged at the saved step itself belongs to the kept history)."""
        self.phase = phase
        self.progress = progress
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, namespace: str, values: Mapping[str, float], step: int) -> None:
        for name, value in values.items():
            tag = name[len("loss_") :] if namespace == "losses" and name.startswith("loss_") else name
            self.writer.add_scalar(f"{self.phase}/{namespace}/{tag}", float(value), step)

    def log_text(self, tag: str, text: str) -> None:
        self.writer.add_text(f"{self.phase}/{tag}", text)

    def log_histogram(self, tag: str, values, step: int) -> None:
        self.writer.add_histogram(f"{self.phase}/{tag}", values, step)

    def bar(self, iterable: Iterable, total: int, desc: str) -> tqdm:
        return tqdm(iterable, total=total, desc=desc, leave=False, disable=not self.progress, dynamic_ncols=True)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def hparams_markdown(config: Mapping) -> str:
    """The run's hyper-parameters as a markdown table, written once at start (CleanRL habit)."""
    rows = "\n".join(f"|{key}|{value}|" for key, value in _flatten(config))
    return "|param|value|\n|-|-|\n" + rows


def _flatten(config: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(_flatten(value, name + "."))
        else:
            items.append((name, value))
    return items
