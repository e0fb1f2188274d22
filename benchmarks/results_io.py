"""Shared by the benchmark scripts: the command line and machine a record names, merging one
finished seed into a configuration's JSON so that the seeds of one configuration can run as
parallel processes, and writing records with paths anyone can rerun from the repository root."""

from __future__ import annotations

import argparse
import fcntl
import json
import platform
import re
import statistics
from pathlib import Path
from typing import Any

import torch

from lares_rl.core.atomic import atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]


def _folder_prefix(folder: Path) -> re.Pattern[str]:
    """``folder/`` where a path starts, not inside a longer path (``/backup<repo>/`` is another folder)."""
    return re.compile(r"(?<![\w.~/-])" + re.escape(str(folder).rstrip("/") + "/"))


# The repository first: it lies inside its parent. A repository at the top of the file system
# (/app) has no parent to name, or every absolute path would become "../".
_PORTABLE = [(_folder_prefix(REPO_ROOT), "")]
if REPO_ROOT.parent != REPO_ROOT.parent.parent:
    _PORTABLE.append((_folder_prefix(REPO_ROOT.parent), "../"))


def portable(value: Any) -> Any:
    """``value`` with this machine's repository paths made relative to the repository root:
    ``<repo>/x`` -> ``x`` and ``<repo's parent>/y`` -> ``../y`` (data beside the repository,
    ``../shared/data/<file>``), in every string of nested dicts and lists (tuples become lists,
    as JSON writes them). Records are read as
    commands anyone reruns from the root of their own clone, which lives elsewhere."""
    if isinstance(value, str):
        for pattern, replacement in _PORTABLE:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item) for item in value]
    return value


def repo_path(recorded: str | Path) -> Path:
    """A path read back from a record, to open: relative ones are relative to the repository root
    (what :func:`portable` wrote), not to the folder the script runs in; absolute ones stay."""
    return REPO_ROOT / recorded


def write_result_json(path: str | Path, record: dict) -> None:
    """Write a record as JSON (atomically, keys sorted) with :func:`portable` paths."""
    atomic_write_json(path, portable(record))


def write_result_text(path: str | Path, text: str) -> None:
    """Write a report page (or JSON already formatted) atomically with :func:`portable` paths."""
    atomic_write_text(path, portable(text))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo; ``platform.processor()`` is empty or only the
    architecture on Linux, which does not tell two machines apart."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device | None = None) -> str:
    """CPU (and GPU when ``device`` is CUDA), torch threads and version: what a timing depends on."""
    gpu = f", {torch.cuda.get_device_name(device)}" if device is not None and device.type == "cuda" else ""
    return f"{cpu_name()}{gpu}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def command_line(script: str, args: argparse.Namespace, skip: tuple[str, ...] = ()) -> str:
    """``python benchmarks/<script> --flag value ...`` for the arguments that were set.

    Unset means None, an empty list or string, or a store_true flag left False; a zero is a
    setting (``--gamma 0.0`` is the no-SLA ablation) and is kept, which ``value in (None, False)``
    would not do since ``0.0 == False``."""
    parts = [f"python benchmarks/{script}"]
    for key, value in vars(args).items():
        if value is None or value is False or (isinstance(value, (list, str)) and not value) or key in skip:
            continue
        flag = f"--{key.replace('_', '-')}"
        parts.append(flag if value is True else f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return portable(" ".join(parts))


def _merged_base(out_path: Path, record: dict, same: tuple[str, ...], defaults: dict[str, dict] | None) -> dict:
    """The record already at ``out_path`` (or a new one from ``record``), with ``defaults`` filled
    in on both sides; exits with one clear message when a ``same`` entry differs."""
    merged = json.loads(out_path.read_text()) if out_path.is_file() else {**record, "seeds": []}
    for key, values in (defaults or {}).items():
        merged[key], record[key] = {**values, **merged[key]}, {**values, **record[key]}
    for key in same:
        if merged[key] != record[key]:
            raise SystemExit(
                f"error: {out_path} holds seeds with a different {key}; write this configuration to another file (--tag / --out)"
            )
    return merged


def check_mergeable(out_path: Path, record: dict, same: tuple[str, ...], defaults: dict[str, dict] | None = None) -> None:
    """Fail before training, not after it: the check :func:`merge_seed` makes when a seed ends,
    made when the script starts, so a mismatched ``--out`` costs seconds instead of a finished run."""
    _merged_base(out_path, portable(record), same, defaults)


def merge_seed(out_path: Path, record: dict, row: dict, same: tuple[str, ...], defaults: dict[str, dict] | None = None) -> dict:
    """Add ``row`` to the JSON at ``out_path`` (created from ``record`` if absent), under a file
    lock, replacing an earlier row of the same seed; returns the merged record.

    Refuses to mix seeds whose ``same`` entries differ: a table row's mean must describe one
    configuration. ``defaults`` fills settings that files written before the setting existed lack.
    Paths are compared and written :func:`portable`, as the file holds them.
    """
    record, row = portable(record), portable(row)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = _merged_base(out_path, record, same, defaults)
        row = {**row, "command": record["command"]}
        merged["seeds"] = sorted([s for s in merged["seeds"] if s["seed"] != row["seed"]] + [row], key=lambda s: s["seed"])
        write_result_json(out_path, merged)
    return merged


def _flags(command: str) -> tuple[str, dict[str, list[str]]]:
    """``"python x.py --a 1 2 --b"`` -> ``("python x.py", {"--a": ["1", "2"], "--b": []})``.
    Recorded commands are built by ``command_line``, so values never start with ``--``."""
    head, _, rest = command.partition(" --")
    flags: dict[str, list[str]] = {}
    for chunk in filter(None, (" --" + rest).split(" --")):
        name, *values = chunk.split()
        flags[f"--{name}"] = values
    return head, flags


def _seed_flags(run: dict, row: dict) -> tuple[str, dict[str, list[str]]]:
    """The command that produced one seed row, narrowed to that seed.

    Rows carry their own command; files written before that hold one record command joined
    with " ; " over reruns, where the last part whose ``--seeds`` names the seed made it. Lists
    aligned with ``--seeds`` (``--checkpoints``) are narrowed with it. ``--resume`` is dropped:
    resuming is exact, so the run it finished is the one the command without it makes."""
    seed = str(row["seed"])
    candidates = [row["command"]] if "command" in row else run["command"].split(" ; ")
    parsed = [_flags(part) for part in candidates]
    head, flags = next((p for p in reversed(parsed) if seed in p[1].get("--seeds", [])), parsed[-1])
    seeds = flags.get("--seeds", [seed])
    narrowed = {}
    for name, values in flags.items():
        if name == "--resume":
            continue
        aligned = name != "--seeds" and len(seeds) > 1 and len(values) == len(seeds) and seed in seeds
        narrowed[name] = [values[seeds.index(seed)]] if aligned else values
    narrowed["--seeds"] = [seed]
    return head, narrowed


def seed_commands(run: dict) -> str:
    """The commands behind a record's seed rows, one per group of seeds that ran the same
    settings (``--seeds`` listing the group), joined with " ; " in seed order."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    for row in run["seeds"]:
        head, flags = _seed_flags(run, row)
        key = head + repr(sorted((k, v) for k, v in flags.items() if k != "--seeds"))
        groups.setdefault(key, []).append((head, flags))
    commands = []
    for members in groups.values():
        head, flags = members[0]
        flags = {**flags, "--seeds": [s for _, f in members for s in f["--seeds"]]}
        commands.append(" ".join([head, *(" ".join([name, *values]) for name, values in flags.items())]))
    return " ; ".join(commands)


def publish(report: str, output: str) -> None:
    """Write a markdown report to ``output`` atomically (``-``: nowhere) and print it, with
    :func:`portable` paths in both."""
    report = portable(report)
    if output != "-":
        atomic_write_text(output, report)
    print(report)


def mean_std(values: list[float]) -> str:
    """A table cell: "mean ± sample std" over seeds, the value alone for one seed, "-" for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def training_scheme(run: dict) -> str:
    """How an SPT run cut its training data (``dense``, ``rows``), and whether batches were bucketed by length."""
    return run["mode"] + (", bucketed" if run["spt"].get("bucket_by_length") else "")


def variant_tag(run: dict) -> str:
    """The ``--tag`` an SPT run was made with (``noTLA``, ``tuned``, ...), read back from its name."""
    return run["name"].split("__")[1][len(run["policy"]) :].strip("_")


def cost(seeds: list[dict]) -> str:
    """What a seed cost, as the mean over seeds: core-hours of its training epochs and seconds per
    epoch, from the process's CPU clock where the run recorded it, else from wall time (an upper
    bound: a paused or crowded run counts its waits, marked "wall"), and peak resident memory; "-"
    for runs recorded before the benchmark measured them."""
    wall = any(s.get("core_hours_clock", "wall") == "wall" for s in seeds)
    trained = not all(s.get("epochs_run") == 0 for s in seeds)  # most-popular counts, it trains no epoch
    columns = [([s.get("peak_rss_mb") for s in seeds], " MB peak", 0)]
    if trained:
        pace = [s.get("cpu_seconds_per_epoch") or s.get("seconds_per_epoch") for s in seeds]
        columns[:0] = [
            ([s.get("core_hours") for s in seeds], " core-h" + (" (wall)" if wall else ""), 2),
            (pace, " s/epoch" + (" (wall)" if wall else " CPU"), 0),
        ]
    parts = [f"{statistics.mean(values):,.{digits}f}{unit}" for values, unit, digits in columns if all(v is not None for v in values)]
    return ", ".join(parts if trained else ["no training", *parts]) or "-"
