"""No litter: a command that fails before it wrote anything of its own leaves no run directory.

Hydra creates the run directory, with the composed config (``.hydra/``) and a log file, before
any lares_rl code runs. Deferring that would take saving the config and logging away from Hydra
(resume and its hints read ``.hydra/``), so the CLI cleans up instead: before Hydra starts it lists
what exists where the run directory will be created (:meth:`RunFolderWatch.before`), and a command
that ends with an ``error:`` line removes its run directory (:meth:`RunFolderWatch.remove_if_unused`)
when both hold:

- this command created it: the run directory, or the folder above it that leads to it, was not
  there before. A resumed run, or any folder that existed and was chosen with ``hydra.run.dir``,
  is never touched, whatever it holds;
- it holds nothing but what Hydra wrote (``.hydra/`` with its three files, the job's log file,
  a sweep's ``multirun.yaml``): a checkpoint, ``metrics.json`` or a TensorBoard file means work
  was done, and the folder stays with it.

Folders this command created above the run directory go too once they are empty (``runs/`` on
a first, failed command)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

HYDRA_CONFIGS = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})


@dataclass(frozen=True)
class RunFolderWatch:
    """The deepest existing folder on the way to the run directory (``anchor``) and its entries,
    both as they were before Hydra started (None: unreadable, so nothing is ever removed)."""

    anchor: Path
    existing: frozenset[str] | None

    @classmethod
    def before(cls, root: Path) -> RunFolderWatch:
        """What exists now at ``root``, the fixed part of ``hydra.run.dir`` under which Hydra
        will create the run directory, or at the nearest folder above it that exists."""
        anchor = root.absolute()
        while not anchor.is_dir() and anchor != anchor.parent:
            anchor = anchor.parent
        anchor = anchor.resolve()
        try:
            return cls(anchor, frozenset(entry.name for entry in anchor.iterdir()))
        except OSError:  # an unreadable folder: the CLI's writability check says what is wrong
            return cls(anchor, None)

    def remove_if_unused(self, run_dir: Path, log_name: str) -> bool:
        """Remove ``run_dir`` when this command created it and it holds only what Hydra wrote
        (``log_name``: the job's log file), then the folders above it this command created, as
        long as they are empty; True when ``run_dir`` was removed."""
        run_dir = run_dir.resolve()
        if self.existing is None or run_dir == self.anchor or not run_dir.is_relative_to(self.anchor):
            return False
        created = self.anchor / run_dir.relative_to(self.anchor).parts[0]
        if created.name in self.existing:
            return False
        for folder in (run_dir, *(above for above in run_dir.parents if above.is_relative_to(created))):
            if not _holds_only_hydra_files(folder, log_name):
                return folder != run_dir
            shutil.rmtree(folder)
        return True


def _holds_only_hydra_files(folder: Path, log_name: str) -> bool:
    """Whether ``folder`` holds nothing but what Hydra writes into a run or sweep directory."""
    for entry in folder.iterdir():
        if entry.name == ".hydra" and entry.is_dir() and not entry.is_symlink():
            if any(not f.is_file() or f.name not in HYDRA_CONFIGS for f in entry.iterdir()):
                return False
        elif entry.name not in (log_name, "multirun.yaml") or not entry.is_file() or entry.is_symlink():
            return False
    return True
