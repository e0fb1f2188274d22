"""What keeping freed memory in the process (lares_rl/core/allocator.py) saves, in process pairs.

    OMP_NUM_THREADS=1 python benchmarks/allocator_speed.py          # Instruments from ../shared/data, 3 pairs per part

glibc's setting cannot be undone inside a process, and what a process ran before changes glibc's
own adaptive threshold, so every part runs in fresh child processes of this script, as a command
would: one with ``LARES_RL_MALLOC=system`` (the C library's defaults) and one with the setting
every entry point makes, in alternating order, ``--repeats`` pairs per part. The parts, on Amazon
2023 Instruments (24,587 items) at L = 20: SPT steps of LARES and of SASRec (``spt_loss``, backward,
Adam; preset=cpu's dense windows of 128, after one untimed step), one validation pass of LARES over
the first users, and the RPT top-100 filter (3 passes, RPT's dropout) over the first training
rows. Each records CPU seconds of its one thread (``time.process_time``: user and system time,
where page faults are paid), minor page faults (``getrusage``), its peak resident size and a
digest of what it computed: both settings must compute the same bits (the script fails
otherwise). Prints medians with their spread (min-max) and writes
benchmarks/results/speed_allocator.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from results_io import write_result_json
from speed_common import DATASETS, FirstUsers, add_data_dir_argument, alternating, build, load_data, one_thread, spt_batches, spt_config

from lares_rl.core.allocator import OPT_OUT_VARIABLE, keep_freed_memory
from lares_rl.core.tracking import progress_enabled
from lares_rl.data import SequenceData
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.filter import top_k_filter
from lares_rl.rpt.learner import set_dropout
from lares_rl.spt.losses import spt_loss, total_loss

RESULTS = Path(__file__).resolve().parent / "results" / "speed_allocator.json"
SETTINGS = ("system", "kept")  # LARES_RL_MALLOC=system, and the entry points' default


def measured(fn: Callable[[], object]) -> tuple[object, float, int]:
    """``fn()``, its CPU seconds and its minor page faults."""
    faults, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
    result = fn()
    return result, time.process_time() - cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def digest(*tensors: torch.Tensor) -> str:
    """A short hash of the tensors' bits: equal digests, equal numbers."""
    hasher = hashlib.sha1()
    for tensor in tensors:
        hasher.update(tensor.detach().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def spt_part(policy_name: str, data: SequenceData, steps: int) -> dict:
    """``steps`` SPT steps after one untimed warm-up step; the digest covers the losses and the weights."""
    policy = build(policy_name, data).train()
    cfg = spt_config()
    optimizer, batches = torch.optim.Adam(policy.parameters(), lr=cfg.lr), spt_batches(policy, data, cfg)
    losses = []

    def step(index: int) -> None:
        batch, positive = next(batches)
        torch.manual_seed(index)
        loss = total_loss(spt_loss(policy, batch, positive, cfg), index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())

    step(0)
    _, cpu, faults = measured(lambda: [step(index) for index in range(1, steps + 1)])
    return {"cpu_s": cpu, "faults": faults, "digest": digest(torch.stack(losses), *policy.parameters())}


def eval_part(data: SequenceData, users: int) -> dict:
    """One validation pass of LARES (k = 4, full ranking) over the first ``users`` users."""
    policy = build("lares", data)
    subset = FirstUsers(data, users)
    with progress_enabled(False):
        metrics, cpu, faults = measured(
            lambda: evaluate_policy(policy, subset, "valid", policy.max_len, EvalConfig(split="valid"), torch.device("cpu"))
        )
    return {
        "cpu_s": cpu,
        "faults": faults,
        "digest": digest(torch.tensor([metrics[name] for name in sorted(metrics)], dtype=torch.float64)),
    }


def filter_part(data: SequenceData, rows: int) -> dict:
    """The RPT top-100 filter (RPT's dropout, 3 passes, batches of 1,024) over the first ``rows`` training rows."""
    policy = build("lares", data)
    set_dropout(policy, RPTConfig().dropout)
    seqs, lengths, targets = (part[:rows] for part in data.train_rows(policy.max_len))
    cfg = RPTConfig()
    with progress_enabled(False):
        keep, cpu, faults = measured(lambda: top_k_filter(policy, seqs, lengths, targets, top=cfg.filter_top, passes=cfg.filter_passes))
    return {"cpu_s": cpu, "faults": faults, "digest": digest(keep), "kept": int(keep.sum())}


PARTS: dict[str, Callable[[SequenceData, argparse.Namespace], dict]] = {
    "spt_lares": lambda data, args: spt_part("lares", data, args.spt_steps),
    "spt_sasrec": lambda data, args: spt_part("sasrec", data, args.spt_steps),
    "eval": lambda data, args: eval_part(data, args.eval_users),
    "filter": lambda data, args: filter_part(data, args.filter_rows),
}


def child(args: argparse.Namespace) -> None:
    """One process, one part: the setting its environment asks for, then the part; one JSON line out."""
    one_thread()
    kept = keep_freed_memory()
    result = PARTS[args.child](load_data(args.dataset, args.data_dir), args)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"kept_freed_memory": kept, "peak_rss_mb": round(peak_mb), **result}))


def run_child(part: str, setting: str, args: argparse.Namespace) -> dict:
    """A child process of this script running ``part`` under ``setting``; its JSON line."""
    env = {key: value for key, value in os.environ.items() if key != OPT_OUT_VARIABLE}
    if setting == "system":
        env[OPT_OUT_VARIABLE] = "system"
    flags = ["--child", part, "--dataset", args.dataset, "--data-dir", str(args.data_dir)]
    flags += ["--spt-steps", str(args.spt_steps), "--eval-users", str(args.eval_users), "--filter-rows", str(args.filter_rows)]
    done = subprocess.run([sys.executable, __file__, *flags], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {setting} child of {part} failed:\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    if record["kept_freed_memory"] != (setting == "kept"):
        raise SystemExit(f"the {setting} child reports kept_freed_memory={record['kept_freed_memory']}: this C library is not glibc")
    return record


def summary(runs: dict[str, dict[str, list[dict]]]) -> dict[str, dict]:
    """Per part and setting: median CPU seconds, faults and peak resident size with their min and
    max, and the ratio of the medians; fails unless both settings computed the same digests."""
    out = {}
    for part, by_setting in runs.items():
        digests = {run["digest"] for setting in SETTINGS for run in by_setting[setting]}
        if len(digests) != 1:
            raise SystemExit(f"{part}: the settings computed different numbers ({sorted(digests)})")
        row = {}
        for setting in SETTINGS:
            row[setting] = {}
            for key, digits in (("cpu_s", 3), ("faults", 0), ("peak_rss_mb", 0)):
                values = [run[key] for run in by_setting[setting]]
                row[setting] |= {
                    f"{key}_median": round(statistics.median(values), digits),
                    f"{key}_min": round(min(values), digits),
                    f"{key}_max": round(max(values), digits),
                }
        row["ratio"] = round(row["system"]["cpu_s_median"] / row["kept"]["cpu_s_median"], 3)
        out[part] = row
    return out


def table(parts: dict[str, dict], work: dict[str, str]) -> str:
    lines = [
        "| part | work | CPU s, system (min-max) | CPU s, kept (min-max) | speed-up | faults, system | faults, kept | peak MB, system -> kept |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in parts.items():
        system, kept = row["system"], row["kept"]
        lines.append(
            f"| {name} | {work[name]} | {system['cpu_s_median']:.2f} ({system['cpu_s_min']:.2f}-{system['cpu_s_max']:.2f}) "
            f"| {kept['cpu_s_median']:.2f} ({kept['cpu_s_min']:.2f}-{kept['cpu_s_max']:.2f}) | {row['ratio']:.2f}x "
            f"| {system['faults_median']:,} | {kept['faults_median']:,} | {system['peak_rss_mb_median']:,} -> {kept['peak_rss_mb_median']:,} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--dataset", choices=DATASETS, default="instruments")
    parser.add_argument("--repeats", type=int, default=3, help="process pairs per part (one per setting each)")
    parser.add_argument("--spt-steps", type=int, default=12, help="timed SPT steps per policy (after one warm-up step)")
    parser.add_argument("--eval-users", type=int, default=4096)
    parser.add_argument("--filter-rows", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--child", choices=list(PARTS), default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    if load_data(args.dataset, args.data_dir) is None:
        return
    runs = {part: {setting: [] for setting in SETTINGS} for part in args.parts}
    for repeat in range(args.repeats):
        for part in args.parts:
            for setting in alternating(list(SETTINGS), repeat):
                runs[part][setting].append(run_child(part, setting, args))
            print(f"[allocator] pair {repeat + 1}/{args.repeats} of {part} done", flush=True)
    parts = summary(runs)
    work = {
        "spt_lares": f"{args.spt_steps} steps of 128 windows",
        "spt_sasrec": f"{args.spt_steps} steps of 128 windows",
        "eval": f"{args.eval_users:,} validation users",
        "filter": f"{args.filter_rows:,} rows x 3 passes",
    }
    work = {part: work[part] for part in args.parts}
    print(table(parts, work))
    record = {
        "ratios": {f"allocator_{name}_{args.dataset}": row["ratio"] for name, row in parts.items()},
        "parts": parts,
        "work": work,
        "timing": "CPU seconds of one thread (time.process_time, user + system); medians over process pairs, min-max beside",
        "torch": torch.__version__,
        "command": f"OMP_NUM_THREADS=1 python benchmarks/allocator_speed.py --dataset {args.dataset} --repeats {args.repeats} "
        f"--spt-steps {args.spt_steps} --eval-users {args.eval_users} --filter-rows {args.filter_rows}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result_json(args.out, record)
    print(f"[allocator] wrote {args.out}")


if __name__ == "__main__":
    main()
