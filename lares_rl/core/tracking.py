"""TensorBoard logging with fixed tag namespaces, plus the one progress display every long step uses.

Tags follow one scheme for every phase (see STYLE): ``losses/`` for each ``loss_*`` entry with the
prefix dropped, ``charts/`` for rates and schedules, ``diag/`` for other diagnostics, ``eval/`` for
validation metrics, ``test/`` for the test metrics of the weights a phase kept (once, at its last
step), ``time/`` for seconds. One call logs a whole dict, so no key needs its own code.

A run's phases write below one folder, ``<run>/tb`` (:func:`tensorboard_dir`), one TensorBoard run
each: ``spt``, ``rpt`` and ``baseline`` (run's SASRec, tagged ``spt/`` like the SPT it is, so its
curves share the SPT charts with the run's model). Their steps count different things
(:data:`X_AXIS`), which each phase says in a text entry and in the Custom Scalars dashboard's titles.

Progress (:func:`progress`) is a tqdm bar on a terminal; when stderr is a file or a pipe it becomes
plain lines instead, so a log file never fills with carriage-return frames.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from lares_rl.core.config import flatten_keys

T = TypeVar("T")
# A loop that ran at least this long ends with a plain summary line in a log (shorter ones stay silent).
CLOSING_LINE_AFTER_S = 5.0
_enabled = True  # the CLI's `progress=` key, read by steps that trainers call without a flag of their own
TB_FOLDER = "tb"  # a run folder's TensorBoard folder: the --logdir that shows all its phases
# What the step (x-axis) of each TensorBoard run counts: SPT's progress.seen_rows, RPT's progress.histories_seen.
X_AXIS = {"spt": "training samples seen", "baseline": "training samples seen", "rpt": "histories collected"}


@contextlib.contextmanager
def progress_enabled(enabled: bool) -> Iterator[None]:
    """Show (or hide) progress for everything run inside: evaluation and the RPT filter are called
    deep inside the trainers, so one switch at the entry point reaches them without new arguments."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def progress(
    iterable: Iterable[T],
    total: int,
    desc: str,
    *,
    unit: str = "batch",
    every: float = 30.0,
    closing: bool = True,
    enabled: bool | None = None,
) -> Iterator[T]:
    """Yield from ``iterable`` while showing progress on stderr.

    On a terminal: a tqdm bar that disappears when the loop ends. Otherwise: one plain line when an
    item ends ``every`` seconds or more after the previous line, and (with ``closing``) one line when
    a loop that took over CLOSING_LINE_AFTER_S ends. Trainers pass ``closing=False`` because they
    print their own line per epoch. ``enabled=None`` follows :func:`progress_enabled`.
    """
    if not (_enabled if enabled is None else enabled):
        yield from iterable
        return
    if sys.stderr.isatty():
        yield from tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
        return
    start = last_line = time.perf_counter()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last_line >= every and done < total:
            print(f"{desc}: {unit} {done} of {total} ({now - start:.0f}s)", file=sys.stderr, flush=True)
            last_line = now
    elapsed = time.perf_counter() - start
    if closing and elapsed >= CLOSING_LINE_AFTER_S:
        print(f"{desc}: done in {elapsed:.1f}s ({unit} {done} of {total})", file=sys.stderr, flush=True)


class Tracker:
    """A TensorBoard writer for one phase (``spt``, ``rpt``) of a run."""

    def __init__(self, log_dir: str | Path, phase: str, progress: bool = True, purge_step: int | None = None) -> None:
        """``purge_step``: when resuming, drop events at this step or later (pass the saved state's
        step + 1: what was logged at the saved step itself belongs to the kept history)."""
        from torch.utils.tensorboard import SummaryWriter  # imported here: progress() alone stays light

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

    def describe_x_axis(self) -> None:
        """Say what this phase's x-axis counts, where a reader looks: a ``<phase>/x_axis`` text entry
        and the Custom Scalars dashboard, whose charts of validation, test and losses sit under a
        title that names it (TensorBoard itself labels every x-axis "Step")."""
        counts = X_AXIS[self.phase]
        self.log_text("x_axis", f"x = {counts}: the step of every {self.phase}/ chart is the number of {counts} so far")
        accuracy = "(ndcg|recall)@10$"
        charts = {
            "validation ndcg@10, recall@10": ["Multiline", [f"^{self.phase}/eval/{accuracy}"]],
            "test ndcg@10, recall@10": ["Multiline", [f"^{self.phase}/test/{accuracy}"]],
            "losses": ["Multiline", [f"^{self.phase}/losses/"]],
        }
        self.writer.add_custom_scalars({f"{self.phase} (x = {counts})": charts})

    def bar(self, iterable: Iterable[T], total: int, desc: str) -> Iterator[T]:
        """The epoch's batches with progress; no closing line, the trainer prints one per epoch."""
        return progress(iterable, total, desc, closing=False, enabled=self.progress)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class NullTracker:
    """What a rank other than 0 logs to in a distributed run: nothing (rank 0 writes TensorBoard)."""

    def log(self, namespace: str, values: Mapping[str, float], step: int) -> None:
        pass

    def log_text(self, tag: str, text: str) -> None:
        pass

    def log_histogram(self, tag: str, values, step: int) -> None:
        pass

    def bar(self, iterable: Iterable[T], total: int, desc: str) -> Iterable[T]:
        return iterable

    def close(self) -> None:
        pass


def tensorboard_dir(run_dir: Path, name: str) -> Path:
    """Where the TensorBoard run ``name`` of the run at ``run_dir`` writes: ``<run_dir>/tb/<name>``."""
    return run_dir / TB_FOLDER / name


def axes_line(runs: Iterable[str]) -> str:
    """What the x-axis counts in each of ``runs`` (TensorBoard run names), for the printed command:
    ``x = training samples seen in spt and baseline, histories collected in rpt``."""
    present, by_axis = set(runs), {}
    for run, counts in X_AXIS.items():
        if run in present:
            by_axis.setdefault(counts, []).append(run)
    return "x = " + ", ".join(f"{counts} in {' and '.join(names)}" for counts, names in by_axis.items()) if by_axis else ""


def log_test_metrics(log_dir: Path, phase: str, metrics: Mapping[str, float], step: int) -> None:
    """A phase's test metrics as ``<phase>/test/<name>`` scalars at ``step`` (its last x value), beside
    its curves in ``log_dir``: test is evaluated once the phase ended and its tracker closed."""
    tracker = Tracker(log_dir, phase, progress=False)
    tracker.log("test", metrics, step)
    tracker.close()


def hparams_markdown(config: Mapping) -> str:
    """The run's hyper-parameters as a markdown table, written once at start (CleanRL habit)."""
    rows = "\n".join(f"|{key}|{value}|" for key, value in flatten_keys(config).items())
    return "|param|value|\n|-|-|\n" + rows
