"""Shared by the benchmark scripts: the command line and machine a record names, and merging one
finished seed into a configuration's JSON so that the seeds of one configuration can run as
parallel processes."""

from __future__ import annotations

import argparse
import fcntl
import json
import platform
import statistics
from pathlib import Path

import torch

from lares_rl.atomic import atomic_write_json


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
    return " ".join(parts)


def merge_seed(out_path: Path, record: dict, row: dict, same: tuple[str, ...], defaults: dict[str, dict] | None = None) -> dict:
    """Add ``row`` to the JSON at ``out_path`` (created from ``record`` if absent), under a file
    lock, replacing an earlier row of the same seed; returns the merged record.

    Refuses to mix seeds whose ``same`` entries differ: a table row's mean must describe one
    configuration. ``defaults`` fills settings that files written before the setting existed lack.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(out_path.read_text()) if out_path.is_file() else {**record, "seeds": []}
        for key, values in (defaults or {}).items():
            merged[key], record[key] = {**values, **merged[key]}, {**values, **record[key]}
        for key in same:
            if merged[key] != record[key]:
                raise SystemExit(f"error: {out_path} holds seeds with a different {key}; write this configuration to another file (--tag / --out)")
        merged["seeds"] = sorted([s for s in merged["seeds"] if s["seed"] != row["seed"]] + [row], key=lambda s: s["seed"])
        if record["command"] not in merged["command"]:
            merged["command"] += f" ; {record['command']}"
        atomic_write_json(out_path, merged)
    return merged


def mean_std(values: list[float]) -> str:
    """A table cell: "mean ± sample std" over seeds, the value alone for one seed, "-" for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
