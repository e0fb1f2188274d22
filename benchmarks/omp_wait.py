"""How OpenMP's wait policy decides multi-threaded speed on a small CPU, idle and beside other jobs:
the measurement behind ``make run``'s ``GOMP_SPINCOUNT`` (Makefile).

    python benchmarks/omp_wait.py          # ~5 min on 2 cores; writes benchmarks/results/omp_wait.json

Each setting times LARES SPT steps on ML-100K (preset=cpu's dense windows of 128) in a fresh
process of ``--threads`` torch threads (default: every usable CPU), three rounds of 12 steps (or
15 s), windows per wall second. Idle: nothing else runs (stop your own jobs first; the load average is
recorded). Busy: this script starts one pure-Python busy loop per CPU beside it, at the same
priority, as a shared machine would. GNU OpenMP (torch's on Linux) spins 300,000 rounds by
default before a waiting thread sleeps; when another job holds the CPU the spinning thread waits
for, each parallel region can cost a scheduler slice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from results_io import command_line, write_result_json
from speed_common import build, load_data, spt_batches, spt_config, spt_update

from lares_rl.spt.distributed import SPTStep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "omp_wait.json"
SETTINGS = {
    "GNU default (300,000 spins)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=30000": {"GOMP_SPINCOUNT": "30000"},
    "GOMP_SPINCOUNT=3000": {"GOMP_SPINCOUNT": "3000"},
}
ROUNDS, STEPS, WARMUP = 3, 12, 2
ROUND_CAP_S = 15.0  # a round ends after STEPS steps or this many seconds: a stalled setting shows in minutes, not hours


def child() -> None:
    """Print windows per wall second of each round of SPT steps, as JSON."""
    data = load_data("ml-100k", ROOT)
    cfg = spt_config()
    policy = build("lares", data).train()
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    step, batches = SPTStep(policy, cfg), spt_batches(policy, data, cfg)
    rates = []
    for _ in range(ROUNDS):
        windows, index, start = 0, 0, time.perf_counter()
        while index < WARMUP + STEPS and (index <= WARMUP or time.perf_counter() - start < ROUND_CAP_S):
            if index == WARMUP:
                start = time.perf_counter()
            batch, positive = next(batches)
            spt_update(step, optimizer, batch, positive, index)
            windows += batch[0].shape[0] if index >= WARMUP else 0
            index += 1
        rates.append(windows / (time.perf_counter() - start))
    print(json.dumps(rates))


def measure(threads: int, extra_env: dict[str, str]) -> list[float]:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env |= {"OMP_NUM_THREADS": str(threads), **extra_env}
    done = subprocess.run([sys.executable, __file__, "--child"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (default: usable CPUs)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the busy loops
    command = command_line("omp_wait.py", args, skip=("child", "out"))
    load_average = os.getloadavg()
    rows = []
    for condition in ("idle", "busy"):
        loops = busy_loops(len(os.sched_getaffinity(0))) if condition == "busy" else []
        try:
            for label, extra in SETTINGS.items():
                rates = measure(args.threads, extra)
                rows.append({"condition": condition, "setting": label, "windows_per_s": rates, "median": statistics.median(rates)})
                print(f"{condition:4s}  {label:28s}  {' '.join(f'{r:5.0f}' for r in rates)}  windows/s", flush=True)
        finally:
            for loop in loops:
                loop.kill()
    write_result_json(
        args.out,
        {"command": command, "threads": args.threads, "load_average_at_start": load_average, "rows": rows},
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
