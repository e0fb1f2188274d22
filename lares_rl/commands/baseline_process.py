"""``run``'s baseline in a second process (``baseline_parallel``): when this process's torch
threads leave CPUs idle, the SASRec baseline trains on those beside the method's SPT -> filter ->
RPT chain instead of after it, so ``run`` takes about the longer of the two instead of their sum.

When the chain already has every CPU, ``auto`` keeps the baseline in this process, after the
chain: halving the chain's threads costs more than the baseline's own time saves. Measured on a
2-core machine, ``make run`` (ML-100K): two processes of one thread each, 21.7 minutes of wall time;
one process of two threads, 15.9 minutes (the same test metrics to four decimals). The baseline is
about an eighth of the chain's work, while LARES's SPT took 13.0 minutes at one thread and 9.3 at two.

The child is a spawned interpreter that calls :func:`train_baseline`, the one function that trains
the baseline, with the run's resolved config, and writes everything it prints to
``<run>/baseline/log.txt``. Each process uses half the CPUs for torch's threads (at most the
threads this process had). The baseline seeds itself (``seed_everything``), so with the same thread
count its numbers are those of the sequential run. Ctrl-C reaches both processes (one process
group): each saves its state, and ``resume=`` continues the baseline where train_baseline left it.
A child whose parent died (SIGKILL) stops as after Ctrl-C, so a resumed run never trains the
baseline twice at once.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lares_rl.commands.baseline import baseline_policy, baseline_results_path, load_baseline_results, train_baseline
from lares_rl.commands.session import eval_config, load_data, training_numerics
from lares_rl.core.config import to_plain
from lares_rl.core.errors import LaresError
from lares_rl.core.precision import use_numerics
from lares_rl.core.resume import TrainingInterrupted
from lares_rl.core.tracking import progress_enabled

SETTINGS = ("auto", "true", "false")
# Seconds a stopping child gets to finish its step and save (it got the same Ctrl-C) before it is
# sent SIGINT itself, and again before it is killed: the parent never waits on it for ever.
STOP_GRACE_S = 60.0
INTERRUPTED_EXIT = 130  # the CLI's exit status after Ctrl-C


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_baseline(setting: object, cpus: int, threads: int) -> bool:
    """``baseline_parallel``: ``auto`` trains the baseline in a second process when this process's
    ``threads`` use at most half the ``cpus`` (the child then runs on CPUs that would idle, and the
    chain keeps its threads); ``true`` and ``false`` force it. Bool from the command line, string
    from YAML or the environment."""
    value = str(setting).lower()
    if value not in SETTINGS:
        raise LaresError(
            f"baseline_parallel={setting} is not one of {', '.join(SETTINGS)}; "
            "use baseline_parallel=auto (a second process when this one's threads leave half the CPUs idle)"
        )
    return 2 * threads <= cpus if value == "auto" else value == "true"


def threads_per_process(current: int, cpus: int) -> int:
    """Torch threads for each of the two processes: half the CPUs, never more than ``current``
    (an OMP_NUM_THREADS=1 run stays at one thread each)."""
    return max(1, min(current, cpus // 2))


@dataclass(frozen=True)
class BaselineJob:
    """What the child needs: plain data only, pickled by the spawn start method."""

    config: dict
    device: str
    out: Path
    resuming: bool
    hint: str
    threads: int

    @property
    def log(self) -> Path:
        return baseline_log(self.out)


def baseline_log(out: Path) -> Path:
    return out / "baseline" / "log.txt"


@dataclass
class BaselineProcess:
    """The running child, seen from the parent: :meth:`result` waits for it, :meth:`stop` ends it early."""

    process: multiprocessing.process.BaseProcess
    job: BaselineJob
    name: str
    parent_threads: int

    def result(self) -> dict:
        """Wait for the child, then its saved results; a failed or interrupted child is one clear line."""
        if self.process.is_alive():
            print(f"[lares-rl] waiting for baseline {self.name}'s process (log: {self.job.log})", flush=True)
        try:
            self.process.join()
        except KeyboardInterrupt:  # Ctrl-C while waiting: the child got it too and is saving
            self.stop(interrupted=True)
            raise TrainingInterrupted(
                f"baseline {self.name} stopped; its state is saved (log: {self.job.log}). Resume with: {self.job.hint}"
            ) from None
        torch.set_num_threads(self.parent_threads)
        code = self.process.exitcode
        if code != 0:
            raise child_failure(self.name, code, self.job.log, self.job.hint)
        results = load_baseline_results(self.job.out)
        print(
            f"[lares-rl] baseline {self.name} finished in its process (best epoch {results['spt']['best_epoch']}; log: {self.job.log})",
            flush=True,
        )
        return results

    def stop(self, interrupted: bool) -> None:
        """End the child when the parent leaves early: after Ctrl-C it got the signal too and saves
        on its own; after another failure it is sent one SIGINT (it saves the same way). Killed
        when it outlasts its grace, so the parent never hangs on it."""
        torch.set_num_threads(self.parent_threads)
        if not self.process.is_alive():
            return
        print(f"[lares-rl] stopping baseline {self.name}'s process; it saves its state (log: {self.job.log})", flush=True)
        try:
            if not interrupted:
                os.kill(self.process.pid, signal.SIGINT)
            self.process.join(STOP_GRACE_S)
            if self.process.is_alive() and interrupted:  # the SIGINT reached this process only
                os.kill(self.process.pid, signal.SIGINT)
                self.process.join(STOP_GRACE_S)
        finally:  # a second Ctrl-C, or a child past its grace
            if self.process.is_alive():
                self.process.kill()
            self.process.join()


def child_failure(name: str, code: int, log: Path, hint: str) -> LaresError:
    """The parent's one line for a child that did not finish: interrupted (its state is saved) or failed."""
    if code == INTERRUPTED_EXIT:
        return TrainingInterrupted(f"baseline {name} was interrupted in its process; its state is saved (log: {log}). Resume with: {hint}")
    if code < 0:  # no chance to write why: out of memory, or killed by hand
        how = f"was killed by signal {-code} ({signal.strsignal(-code)}) in its second process (log: {log})"
    else:
        how = f"failed in its second process (exit status {code}): the reason is at the end of {log}"
    return LaresError(
        f"baseline {name} {how}; the finished phases are saved, so `{hint}` continues the run (baseline_parallel=false trains the baseline in this process)"
    )


@contextmanager
def baseline_beside(cfg: DictConfig, device: torch.device, out: Path, resuming: bool, hint: str) -> Iterator[BaselineProcess | None]:
    """Within this block the baseline trains in a second process when ``baseline_parallel`` says
    so (None: it trains afterwards in this process, as without the setting). An exception that
    leaves the block stops the child first, so the run stays resumable and nothing is left running."""
    background = _start(cfg, device, out, resuming, hint) if trains_beside(cfg, out, resuming) else None
    if background is None:
        yield None
        return
    try:
        yield background
    except BaseException as err:
        background.stop(interrupted=isinstance(err, (KeyboardInterrupt, TrainingInterrupted)))
        raise


def trains_beside(cfg: DictConfig, out: Path, resuming: bool) -> bool:
    """A baseline to train, not finished by an earlier attempt of this run, and the setting says so."""
    if not parallel_baseline(cfg.baseline_parallel, usable_cpus(), torch.get_num_threads()) or baseline_policy(cfg) is None:
        return False
    return not (resuming and baseline_results_path(out).is_file())


def _start(cfg: DictConfig, device: torch.device, out: Path, resuming: bool, hint: str) -> BaselineProcess:
    parent_threads = torch.get_num_threads()
    threads = threads_per_process(parent_threads, usable_cpus())
    job = BaselineJob(to_plain(cfg), str(device), out, resuming, hint, threads)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    name = baseline_policy(cfg)["name"]
    print(f"[lares-rl] baseline {name} trains in a second process (log: {job.log}); each process uses {threads} thread(s)", flush=True)
    process = multiprocessing.get_context("spawn").Process(target=train_in_child, args=(job,), name=f"baseline-{name}")
    process.start()
    torch.set_num_threads(threads)
    return BaselineProcess(process, job, name, parent_threads)


def train_in_child(job: BaselineJob) -> None:
    """The child's body: its output into the log, its threads, a watch on the parent, then
    :func:`train_baseline` as the sequential run calls it. Exit status 130 after Ctrl-C, 2 after a
    user-fixable error (its line is in the log), 1 with a traceback in the log for a bug."""
    _output_to(job.log)
    torch.set_num_threads(job.threads)
    _stop_when_the_parent_dies()
    cfg = OmegaConf.create(job.config)
    device = torch.device(job.device)
    try:
        with progress_enabled(bool(cfg.progress)), use_numerics(training_numerics(cfg, device)[0]):
            train_baseline(cfg, load_data(cfg), eval_config(cfg), device, job.out, job.resuming, job.hint)
    except TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT)
    except LaresError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def _output_to(log: Path) -> None:
    """This process's stdout and stderr (file descriptors 1 and 2, so torch's and C libraries'
    output too) appended to ``log``, a line at a time; the parent's terminal stays readable."""
    with open(log, "a") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)


def _stop_when_the_parent_dies() -> None:
    """A killed parent (SIGKILL: no chance to stop its child) is this child's Ctrl-C: it saves
    and ends, so ``resume=`` never races an orphan over the baseline's folder."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
