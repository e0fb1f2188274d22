"""``lares-rl <command> [hydra overrides]``: the one entry point.

Commands:
  ``run``        the main job: self-supervised pre-training (SPT), reinforcement post-training (RPT)
               on the training rows the pre-trained model ranks in its top 100, then test metrics,
               beside a SASRec baseline trained on the same split (the default command)
  ``spt``        pre-training only, then test metrics (``policy=sasrec`` trains SASRec)
  ``rpt``        post-training of a pre-trained model: ``checkpoint=<run dir>/checkpoints/spt_best.pt``
  ``eval``       a checkpoint's metrics on the validation or test split (``eval.split=valid|test``)
  ``sweep-k``    a checkpoint's metrics at each number of reasoning steps k (a table and a plot)
  ``stats``      the data set: users, items, density and what each filter removed
  ``recommend``  top-k items for histories in a JSON-lines file (``lares-rl recommend --help``)
Settings: ``key=value`` (e.g. ``spt.lr=5e-4``) or ``group=option`` (``dataset=custom``,
``policy=sasrec``, ``preset=quick``); ``lares-rl <command> --help`` lists every key and group,
``lares-rl <command> --cfg job`` prints the values a command will use, and the comments of
configs/config.yaml say what each top-level key means. ``resume=<run dir>`` continues an
interrupted ``spt``, ``rpt`` (with the same ``checkpoint=``) or ``run`` exactly, in place.
Every run writes its settings (``.hydra/``), checkpoints, ``metrics.json`` and TensorBoard logs
(``tb/``) into its run directory (``runs/<data>__<policy>__<command>__<seed>__<time>``; set it
with ``hydra.run.dir=PATH``). A mistake ends with one ``error:`` line and exit status 2 (a
misspelled key names the nearest valid ones), and a command that stopped before writing anything
of its own leaves no run directory behind.

This module only parses the command, prepares what Hydra composes and calls the command's
function in lares_rl/commands/, one module per command.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import NoReturn

import hydra
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lares_rl.commands.checkpoint import checkpoint_dataset_choice
from lares_rl.commands.overrides import unknown_key_errors
from lares_rl.commands.run_folder import RunFolderWatch
from lares_rl.commands.schemas import register_schemas
from lares_rl.commands.session import resume_dir as _resume_dir  # noqa: F401 - tests/test_rpt_resume.py reads it here
from lares_rl.core.allocator import keep_freed_memory
from lares_rl.core.distributed import DISTRIBUTED_COMMANDS, launched_by_torchrun
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import TrainingInterrupted
from lares_rl.core.tracking import progress_enabled
from lares_rl.serve.cli import main as recommend_main

COMMANDS = ("run", "spt", "rpt", "eval", "sweep-k", "stats", "recommend")


@dataclass(frozen=True)
class CommandFunction:
    """A command's function, named by module path and imported when the command runs."""

    module: str
    function: str

    def __call__(self, cfg: DictConfig) -> object:
        return getattr(importlib.import_module(self.module), self.function)(cfg)


# The house's exception for optional heavy dependencies (no function-local `from lares_rl... import`,
# tests/test_house.py; a module path resolved with importlib instead): each command's module is
# imported only when that command runs. `rpt` and `run` import TorchRL, whose tensordict pulls in
# torch._dynamo (about 8 CPU seconds here), and `sweep-k` matplotlib; `stats`, `eval`, `spt`, `--help`
# and every error exit do not pay for them. import-linter does not see these imports: the commands
# sit below the CLI anyway.
HANDLERS: dict[str, CommandFunction] = {
    "run": CommandFunction("lares_rl.commands.run", "command_run"),
    "spt": CommandFunction("lares_rl.commands.spt", "command_spt"),
    "rpt": CommandFunction("lares_rl.commands.rpt", "command_rpt"),
    "eval": CommandFunction("lares_rl.commands.evaluate", "command_eval"),
    "sweep-k": CommandFunction("lares_rl.commands.sweep_k", "command_sweep_k"),
    "stats": CommandFunction("lares_rl.commands.stats", "command_stats"),
}
# Flags people try from other tools; here they are Hydra overrides (only `recommend` takes --checkpoint).
OVERRIDE_FLAGS = ("--checkpoint", "--resume", "--dataset", "--policy")
# errno values of a full disk or an unwritable location: one `error:` line instead of a traceback
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# What existed where Hydra creates the run directory, listed by main() before Hydra starts, so that
# a command that fails before writing anything of its own leaves no run directory (commands/run_folder.py).
_run_folder_watch: RunFolderWatch | None = None


@hydra.main(version_base="1.3", config_path="pkg://lares_rl.configs", config_name="config")
def hydra_entry(cfg: DictConfig) -> None:
    dispatch(cfg)


def dispatch(cfg: DictConfig) -> None:
    """Run ``cfg.command``; a user-fixable problem ends with one line on stderr and its exit status,
    and a run directory that holds only what Hydra wrote is removed (``_leave_no_run_dir``)."""

    try:
        if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and cfg.command not in DISTRIBUTED_COMMANDS:
            raise LaresError(
                f"`lares-rl {cfg.command}` does not run on several processes; under torchrun run `{' or '.join(DISTRIBUTED_COMMANDS)}`, or start `lares-rl {cfg.command}` without torchrun"
            )
        with progress_enabled(bool(cfg.get("progress", True))):
            HANDLERS[cfg.command](cfg)
    except TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        sys.exit(130)
    except LaresError as err:
        _leave_no_run_dir()
        _fail(str(err))
    except dist.DistError as err:  # a peer died or a collective ran past distributed.timeout_s
        _leave_no_run_dir()
        detail = " ".join(str(err).split())[:300]
        print(
            f"error: rank {os.environ.get('RANK', '?')}: a collective with the other processes failed ({type(err).__name__}: {detail}); another rank died or stalled past distributed.timeout_s. "
            "Resume from the last saved state with the same torchrun command plus resume=<run dir>",
            file=sys.stderr,
        )
        sys.exit(3)
    except OSError as err:  # e.g. TensorBoard or a library writing into a full or read-only run directory
        if err.errno not in WRITE_ERRNOS:
            raise
        _leave_no_run_dir()
        _fail(
            f"{err.strerror}: {err.filename or 'the run directory'}; free disk space or choose a writable output directory (hydra.run.dir=...)"
        )


def main() -> None:
    """Console script: ``lares-rl [command] [overrides...]`` (command defaults to ``run``)."""
    # freed activations stay in the process instead of being faulted in again (same numbers, less
    # CPU time; lares_rl/core/allocator.py); LARES_RL_MALLOC=system keeps the C library's defaults
    keep_freed_memory()
    # as `python -m` and `python -c` do: the README's reward._target_=my_rewards.fn and
    # policy.backbone=my_block.Block import from the current directory
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    argv = sys.argv[1:]
    if argv[:1] in (["-h"], ["--help"]):
        print(
            "usage: lares-rl <command> [key=value ...]   (`lares-rl <command> --help` lists every key; the command defaults to run)\n\n"
            + __doc__.split("\n\n")[1].replace("``", "`")
        )
        return
    command, argv = _split_command(argv)
    if command == "recommend":  # a plain argparse tool: reads JSON lines, writes JSON lines, no run directory
        sys.exit(recommend_main(argv))
    global _run_folder_watch
    chosen, _run_folder_watch = _before_composing(command, argv)
    quiet_rank = []
    if launched_by_torchrun() and os.environ["RANK"] != "0":
        # only rank 0 writes a run directory; the others would create their own (another timestamp) for nothing
        quiet_rank = ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled", "hydra.run.dir=."]
    # appended last: Hydra's parser wants its flags (-m, --cfg ...) before the first override
    sys.argv = [sys.argv[0], *argv, *chosen, *quiet_rank, f"command={command}"]
    try:
        hydra_entry()
    finally:
        _run_folder_watch = None
    if launched_by_torchrun():
        # The work is done and written (every rank passed the final barrier). Skip interpreter
        # teardown: under load, a rank's C++ destructors raced the gloo / collector threads still
        # winding down ("terminate called without an active exception", SIGABRT), turning a
        # finished run into a failed torchrun.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _split_command(argv: list[str]) -> tuple[str, list[str]]:
    """(command, the rest of ``argv``); a flag that should be an override or an unknown command
    ends here with one ``error:`` line."""
    flags = [a for a in argv if a.startswith("--") and a.split("=", 1)[0] in OVERRIDE_FLAGS]
    if flags and (argv[:1] != ["recommend"]):
        name = flags[0].lstrip("-").split("=", 1)[0]
        _fail(
            f"{flags[0]} is not an option here; write it as a Hydra override, {name}=<value> (only `lares-rl recommend` takes --checkpoint)"
        )
    command, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") and "=" not in argv[0] else ("run", argv)
    if command not in COMMANDS:
        _fail(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}")
    return command, rest


def _before_composing(command: str, argv: list[str]) -> tuple[list[str], RunFolderWatch]:
    """What must hold before Hydra composes and creates the run directory: the schemas registered,
    every overridden key known, the run directory writable; returns the overrides to add (the
    checkpoint's data set, see lares_rl/commands/checkpoint.py) and what existed where the run
    directory will be created."""
    register_schemas()
    errors = unknown_key_errors(argv)
    if errors:
        _fail(*errors)
    try:
        chosen = checkpoint_dataset_choice(command, argv)
    except LaresError as err:
        _fail(str(err))
    return chosen, _check_output_dir(argv)


def _fail(*lines: str) -> NoReturn:
    """A user-fixable problem: one ``error:`` line each on stderr, exit status 2."""
    print("\n".join(f"error: {line}" for line in lines), file=sys.stderr)
    sys.exit(2)


def _leave_no_run_dir() -> None:
    """Remove this command's run directory when it created it and it holds only what Hydra wrote
    (lares_rl/commands/run_folder.py): a command that failed before doing work leaves nothing."""
    if _run_folder_watch is not None and HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        _run_folder_watch.remove_if_unused(Path(hydra_cfg.runtime.output_dir), f"{hydra_cfg.job.name}.log")


def _check_output_dir(argv: list[str]) -> RunFolderWatch:
    """Hydra creates the run directory before any lares_rl code runs and reports a failure as a
    traceback. Check the fixed part of ``hydra.run.dir`` (``hydra.sweep.dir`` with ``-m``) first:
    create it as Hydra would and write a probe file; a failure is one ``error:`` line, exit 2.
    Returns what existed there before (for ``_leave_no_run_dir``)."""

    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    value = None
    for arg in argv:
        name, sep, given = arg.lstrip("+").partition("=")
        if sep and name == key:
            value = given.strip("'\"")
    if value is None:
        raw = OmegaConf.to_container(OmegaConf.load(str(files("lares_rl.configs") / "config.yaml")), resolve=False)
        value = str(raw.get("hydra", {}).get("sweep" if multirun else "run", {}).get("dir", "."))
    fixed = value.split("${", 1)[0]
    folder = Path(fixed) if "${" not in value or fixed.endswith("/") else Path(fixed).parent
    watch = RunFolderWatch.before(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".lares-rl-probe.")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        _fail(f"cannot write the run directory {folder} ({key}={value}): {err.strerror or err}; choose a writable location")
    return watch


if __name__ == "__main__":  # `python -m lares_rl.cli ...`, the form torchrun starts
    main()
