"""One training run's bookkeeping, shared by SPT and RPT: what outlives a step, in one place.

A phase (``spt``, ``rpt``) keeps its position in a typed :class:`Progress` and hands the rest to
:class:`RunState`:

- resume: rank 0 reads and checks the saved training state and converts its progress into the
  phase's dataclass (:func:`read_saved_state`), every rank restores it (:meth:`RunState.restore`);
- the saved state ``checkpoints/<phase>_last.pt`` (:meth:`RunState.save`): weights, optimiser,
  early stopping, every rank's RNG streams, the progress (a plain dict, so ``torch.load`` reads it
  without this module) and what the phase adds (its settings, the RPT env's walk, ...);
- the best model ``checkpoints/<phase>_best.pt`` (:class:`BestCheckpoint`);
- TensorBoard on rank 0 (:meth:`RunState.open_tracker`, :meth:`RunState.log`), in ``tb/<phase>``
  unless the phase names another folder (run's baseline: ``tb/baseline``);
- the end of an epoch: validation and the early-stopping decision on rank 0, broadcast to the
  other ranks, then the saved state (:meth:`RunState.end_epoch`, :meth:`RunState.judge`);
- the summary's common part and the best weights back into the policy.

What a phase trains, validates and reports stays in its own file (lares_rl/spt/train.py,
lares_rl/rpt/loop.py), which drives the loop with these calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

import torch
from torch import nn

from lares_rl import __version__
from lares_rl.core.checkpoint import load_checkpoint, save_checkpoint
from lares_rl.core.distributed import DistContext
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import TrainingInterrupted, capture_rng, load_training_state, restore_rng, save_training_state
from lares_rl.core.runtime import EarlyStopping
from lares_rl.core.tracking import NullTracker, Tracker, hparams_markdown, tensorboard_dir

P = TypeVar("P", bound="Progress")


@dataclass
class Progress:
    """Where a phase stands. Saved as a plain dict (its fields by name) under ``progress`` in the
    training state; :meth:`from_saved` turns such a dict back into the dataclass, also one that an
    earlier version wrote. A phase subclasses it with its own fields and names its x-axis."""

    epoch: int = 0  # epochs done
    next_batch: int = 0  # the next batch of the current epoch (> 0 after a Ctrl-C mid-epoch)
    step: int = 0  # optimiser steps taken
    finished: bool = False  # early stopping ended the run

    X_AXIS: ClassVar[str] = "step"  # the field TensorBoard plots against (rows or histories seen)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # fields older training states may lack; they take their default

    @property
    def tensorboard_step(self) -> int:
        return getattr(self, self.X_AXIS)

    def next_epoch(self, stop: bool) -> None:
        """The epoch is done: the next one starts at its first batch; ``stop`` ends the run."""
        self.epoch, self.next_batch, self.finished = self.epoch + 1, 0, stop

    def to_saved(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_saved(cls: type[P], saved: Mapping[str, Any], path: Path, version: str | None) -> P:
        """The dataclass from a saved progress dict; refused, naming the version that wrote the file,
        when the dict lacks a field this version needs or holds one it does not know."""
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(saved) - set(cls.OPTIONAL))
        unknown = sorted(set(saved) - names)
        if missing or unknown:
            writer = f"lares_rl {version}" if version else "lares_rl 0.1.0 or earlier (it records no version)"
            problems = ([f"lacks {', '.join(missing)}"] if missing else []) + (
                [f"holds {', '.join(unknown)}, unknown here"] if unknown else []
            )
            raise LaresError(
                f"cannot resume: the progress in {path} was written by {writer} and {' and '.join(problems)} (this is lares_rl {__version__}); "
                "resume it with the version that wrote it, or start a new run"
            )
        return cls(**saved)


def read_saved_state(path: Path, progress_type: type[Progress], check: Callable[[dict], None]) -> dict:
    """The training state at ``path``, checked (``check`` raises a LaresError that names what differs
    from this run), with its progress as ``progress_type``. Rank 0 reads it; wrap the call in
    ``ctx.on_main`` to give every rank the result."""
    saved = load_training_state(path)
    check(saved)
    saved["progress"] = progress_type.from_saved(saved["progress"], path, saved.get("lares_rl_version"))
    return saved


@dataclass
class BestCheckpoint:
    """The phase's best model, written with everything needed to use it again (core.checkpoint)."""

    path: Path
    phase: str
    policy_config: Mapping
    data: Any
    max_len: int
    dataset_name: str
    config: Mapping
    extra: Mapping | None = None

    def save(self, policy: nn.Module, epoch: int, metrics: Mapping[str, float]) -> None:
        save_checkpoint(
            self.path,
            policy=policy,
            policy_config=self.policy_config,
            data=self.data,
            max_len=self.max_len,
            dataset_name=self.dataset_name,
            phase=self.phase,
            epoch=epoch,
            metrics=metrics,
            config=self.config,
            extra=self.extra,
        )


class RunState:
    """One phase's run bookkeeping (module docstring). ``stateful`` maps a key of the saved state to
    what is saved under it (anything with ``state_dict``/``load_state_dict``; None saves None),
    restored in that order; ``generators`` are the phase's private RNG streams; ``extra_state`` adds
    the phase's own entries to every save; ``tb_dir`` is where its TensorBoard events go (default
    ``<run_dir>/tb/<phase>``). Under DDP (``ctx``) rank 0 alone validates, decides, logs and writes;
    the other ranks follow its broadcast decisions."""

    def __init__(
        self,
        *,
        phase: str,
        run_dir: Path,
        ctx: DistContext,
        progress: Progress,
        stopper: EarlyStopping,
        best: BestCheckpoint,
        stateful: Mapping[str, Any],
        generators: tuple[torch.Generator, ...],
        extra_state: Callable[[], Mapping[str, Any]] = dict,
        tb_dir: Path | None = None,
    ) -> None:
        self.phase, self.run_dir, self.ctx, self.progress, self.stopper, self.best = phase, run_dir, ctx, progress, stopper, best
        self.stateful, self.generators, self.extra_state = stateful, generators, extra_state
        self.state_path = run_dir / "checkpoints" / f"{phase}_last.pt"
        self.tb_dir = tb_dir or tensorboard_dir(run_dir, phase)
        self.tracker: Tracker | NullTracker = NullTracker()
        self.last_saved: tuple[int, int] | None = None  # (epoch, next_batch) of the last save

    # --- resume and the saved state
    def restore(self, saved: Mapping, batches_per_epoch: int | None = None) -> None:
        """Continue from ``saved`` (:func:`read_saved_state`): the stateful objects, early stopping,
        this rank's RNG streams and the progress."""
        for key, value in self.stateful.items():
            if value is not None:
                value.load_state_dict(saved[key])
        self.stopper.load_state_dict(saved["stopper"])
        restore_rng(saved["rank_rng"][self.ctx.rank] if self.ctx.active else saved["rng"], *self.generators)
        self.progress = saved["progress"]
        if self.ctx.is_main:
            of = f"/{batches_per_epoch}" if batches_per_epoch is not None else ""
            print(
                f"[{self.phase}] resuming {self.run_dir} at epoch {self.progress.epoch}, batch {self.progress.next_batch}{of}", flush=True
            )

    def save(self) -> None:
        """Every rank's RNG streams are gathered (their dropout and noise differ); rank 0 writes."""
        ctx = self.ctx
        rank_rng = ctx.gather_objects(capture_rng(*self.generators))

        def write() -> None:
            state = {
                "lares_rl_version": __version__,
                **{key: value.state_dict() if value is not None else None for key, value in self.stateful.items()},
                "stopper": self.stopper.state_dict(),
                "rng": capture_rng(*self.generators),
                "progress": self.progress.to_saved(),
                **self.extra_state(),
                "world_size": ctx.world_size,
                "distributed": ctx.active,
            }
            save_training_state(self.state_path, {**state, "rank_rng": rank_rng} if ctx.active else state)

        ctx.on_main(write)
        self.last_saved = (self.progress.epoch, self.progress.next_batch)

    def save_and_stop(self, message: str) -> NoReturn:
        """Ctrl-C (seen by any rank; every rank stops after the same batch): save, then end with ``message``."""
        self.save()
        raise TrainingInterrupted(message)

    # --- logging
    def open_tracker(self, show_progress: bool, resumed: bool, config: Mapping) -> None:
        """Rank 0 only; a resumed run purges what it logged after the saved state (a crash mid-epoch);
        a fresh one records its hyper-parameters and what its x-axis counts."""
        if not self.ctx.is_main:
            return
        purge_step = self.progress.tensorboard_step + 1 if resumed else None
        self.tracker = Tracker(self.tb_dir, self.phase, show_progress, purge_step=purge_step)
        if not resumed:
            self.tracker.log_text("hparams", hparams_markdown(config))
            self.tracker.describe_x_axis()

    def log(self, metrics: Mapping[str, Mapping[str, Any]], step: int | None = None) -> None:
        """One iteration's metrics in one call, ``{namespace: {name: value}}`` (``losses``, ``diag``,
        ``charts``, ``eval``, ``time``, ...) at ``step`` (default: the progress's x-axis); a tensor
        value is logged as a histogram, e.g. ``{"charts": {"k": depths}}`` as ``charts/k``."""
        step = self.progress.tensorboard_step if step is None else step
        for namespace, values in metrics.items():
            self.tracker.log(namespace, {name: value for name, value in values.items() if not torch.is_tensor(value)}, step)
            for name, value in values.items():
                if torch.is_tensor(value):
                    self.tracker.log_histogram(f"{namespace}/{name}", value, step)

    # --- the loop
    def training(self, epochs: int) -> bool:
        """Another epoch is due: under the cap and not stopped early."""
        return self.progress.epoch < epochs and not self.progress.finished

    def batches(self, total: int, desc: str) -> Iterable[int]:
        """The indices of this epoch's batches still to run (all of them, or those after a Ctrl-C), with progress."""
        first = self.progress.next_batch
        return self.tracker.bar(range(first, total), total - first, desc)

    def end_epoch(self, validate: Callable[[], bool]) -> None:
        """``validate()`` runs on rank 0 alone (it calls :meth:`judge`, returns whether to stop); its
        early stopping and decision reach every rank; then the next epoch's progress is saved."""

        def decide() -> tuple[dict, bool]:
            stop = validate()
            return self.stopper.state_dict(), stop

        stopper_state, stop = self.ctx.on_main(decide)
        self.stopper.load_state_dict(stopper_state)
        self.progress.next_epoch(stop)
        self.save()

    def judge(self, epoch: int, metrics: Mapping[str, float], score: float, policy: nn.Module) -> bool:
        """Rank 0: early stopping on the validation ``score``, ``metrics`` logged under ``eval/``, and
        ``policy`` kept as the best checkpoint when it improved. True: stop."""
        stop = self.stopper.step(score, epoch)
        self.tracker.log("eval", metrics, self.progress.tensorboard_step)
        if self.stopper.improved:
            self.best.save(policy, epoch, metrics)
        return stop

    # --- the end
    def summary(self) -> dict[str, Any]:
        """Best epoch, epochs run and the x-axis's last value (``seen_rows``, ``histories_seen``): the
        step at which the phase's test metrics are logged once it ended."""
        progress = self.progress
        return {"best_epoch": self.stopper.best_epoch, "epochs_run": progress.epoch, progress.X_AXIS: progress.tensorboard_step}

    def load_best(self, policy: nn.Module) -> dict:
        """The best checkpoint, its weights loaded into ``policy``."""
        best = load_checkpoint(self.best.path)
        policy.load_state_dict(best["policy_state"])
        return best
