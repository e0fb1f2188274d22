"""The RPT top-100 filter, today's code against the implementation it replaced (issue 34 item 6).

    OMP_NUM_THREADS=1 python benchmarks/filter_speed.py                                   # 20,480 rows of ML-100K and of Instruments
    OMP_NUM_THREADS=1 python benchmarks/filter_speed.py --datasets instruments            # one data set; the file keeps the other's row
    OMP_NUM_THREADS=1 python benchmarks/filter_speed.py --checkpoint-ml-100k runs/x/checkpoints/spt_best.pt
    OMP_NUM_THREADS=1 python benchmarks/filter_speed.py --profile                         # operators of one batch, by CPU time

For each data set the same rows go through three filters with the same policy and seed:

- ``reference``: :func:`reference_top_k_filter`, the filter as it was before this change (full
  score matrix, then :func:`lares_rl.metrics.ranking.target_ranks` and ``rank < top``);
- ``new``: :func:`lares_rl.rpt.filter.top_k_filter` (the same score matrix, then a count of the
  items scored below each target, :func:`lares_rl.catalog.topk.targets_within_top`);
- ``encode only``: the passes' encoder forwards alone, no scoring: the floor that any filter
  keeping the same random draws (and so the same rows) pays.

Both filters must keep exactly the same rows (the script fails otherwise). Times are CPU seconds
of the one thread (``time.thread_time``), which on a shared machine move far less than wall
seconds (also recorded). Instruments (``--data-dir``/amazon2023-instruments-5core.txt, skipped
with one line when absent) is cut to its first ``--instruments-rows`` training rows: the
reference filter over all 339,519 rows would take about half an hour of CPU per run. The policy
is ``configs/policy/lares.yaml`` with seeded random weights (a trained one costs as much: the
work does not depend on the weights), or an SPT checkpoint for ML-100K; its dropout is RPT's
(``rpt.dropout``), as in a run. Writes benchmarks/results/speed_filter.json, whose ``ratios``
map holds new throughput / reference throughput per data set (``filter_<data set>``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from benchmark_data import ROOT, config_file, load_benchmark_dataset
from results_io import command_line, machine_description
from torch import nn

from lares_rl.catalog.topk import chunked_target_ranks, item_scorer
from lares_rl.core.allocator import keep_freed_memory
from lares_rl.core.atomic import atomic_write_json
from lares_rl.core.checkpoint import build_policy, load_checkpoint, policy_from_checkpoint
from lares_rl.core.tracking import progress
from lares_rl.metrics.ranking import target_ranks
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.filter import top_k_filter
from lares_rl.rpt.learner import set_dropout

MAX_LEN = 20
INSTRUMENTS_FILE = "amazon2023-instruments-5core.txt"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "speed_filter.json"


@torch.no_grad()
def reference_top_k_filter(
    policy: nn.Module,
    seqs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    *,
    top: int = 100,
    passes: int = 3,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    seed: int = 0,
    item_chunk: int | None = None,
) -> torch.Tensor:
    """The filter before issue 34 (``lares_rl/rpt/filter.py`` at 5539e82), kept verbatim as the
    reference that the new one must match row for row: full target ranks, then ``rank < top``."""
    if top < 1 or passes < 1:
        raise ValueError(f"top={top} and passes={passes} must be >= 1")
    keep = torch.zeros(len(targets), dtype=torch.bool)
    if top >= getattr(policy, "num_items", top + 1):
        return keep | True
    device = torch.device(device)
    score_items = None if item_chunk is None else item_scorer(policy, "eval.item_chunk")
    was_training = policy.training
    policy.train()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            starts = [start for _ in range(passes) for start in range(0, len(targets), batch_size)]
            for start in progress(starts, len(starts), f"rpt filter (top-{top}, {passes} passes)"):
                rows = slice(start, start + batch_size)
                states = policy.encode(seqs[rows].to(device), lengths[rows].to(device))[:, -1]
                if score_items is None:
                    ranks = target_ranks(policy.scores(states), targets[rows].to(device))
                else:
                    ranks = chunked_target_ranks(states, score_items, policy.num_items, targets[rows].to(device), top, item_chunk)
                keep[rows] |= (ranks < top).cpu()
    finally:
        policy.train(was_training)
    return keep


@torch.no_grad()
def encode_only(policy: nn.Module, seqs: torch.Tensor, lengths: torch.Tensor, *, passes: int, batch_size: int, seed: int) -> None:
    """The filter's encoder forwards alone (same batches, mode and seed): what is left to pay when
    scoring costs nothing and the random draws stay those of the filter."""
    policy.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(passes):
            for start in range(0, len(lengths), batch_size):
                policy.encode(seqs[start : start + batch_size], lengths[start : start + batch_size])
    policy.eval()


def profile_batch(policy: nn.Module, rows: tuple[torch.Tensor, ...], args: argparse.Namespace) -> str:
    """torch.profiler's table (operators by own CPU time) of the reference filter's first batch, one
    pass: where a batch's time goes, encoder forward and scoring together."""
    cut = slice(0, args.batch_size)
    seqs, lengths, targets = (part[cut] for part in rows)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        reference_top_k_filter(policy, seqs, lengths, targets, top=args.top, passes=1, batch_size=args.batch_size, seed=args.seed)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=28)


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """``fn()``, its CPU seconds (this thread) and its wall seconds."""
    cpu, wall = time.thread_time(), time.perf_counter()
    result = fn()
    return result, time.thread_time() - cpu, time.perf_counter() - wall


def load_rows(name: str, data_dir: Path, rows: int | None) -> tuple[object, tuple[torch.Tensor, ...]] | None:
    """(data, the first ``rows`` training rows at L = 20) of ML-100K or Instruments; None, after one
    line, when the Instruments file is absent."""
    if name == "ml-100k":
        data = load_benchmark_dataset("ml-100k", {"max_len": MAX_LEN})[0]
    else:
        path = data_dir / INSTRUMENTS_FILE
        if not path.is_file():
            print(f"[skip] instruments: {path} not found (pass --data-dir <folder holding {INSTRUMENTS_FILE}>)", flush=True)
            return None
        overrides = {"name": "amazon2023-instruments", "path": str(path), "format": "ordered_lines", "max_len": MAX_LEN}
        data = load_benchmark_dataset("custom", overrides)[0]
    seqs, lengths, targets = data.train_rows(MAX_LEN)
    cut = slice(0, rows or len(targets))
    return data, (seqs[cut], lengths[cut], targets[cut])


def make_policy(num_items: int, checkpoint: Path | None, seed: int) -> tuple[nn.Module, str]:
    """The policy to filter with, at RPT's dropout, and a line saying which it is."""
    if checkpoint is not None:
        payload = load_checkpoint(checkpoint)
        policy, source = policy_from_checkpoint(payload), f"SPT checkpoint {checkpoint}"
    else:
        torch.manual_seed(seed)
        policy, source = build_policy(config_file("policy", "lares"), num_items, MAX_LEN), f"configs/policy/lares.yaml, seed {seed}"
    set_dropout(policy, RPTConfig().dropout)
    return policy, source


def measure(name: str, rows: tuple[torch.Tensor, ...], policy: nn.Module, args: argparse.Namespace) -> dict:
    """Reference, new and encode-only on the same rows; fails unless both filters keep the same rows."""
    seqs, lengths, targets = rows
    settings = dict(top=args.top, passes=args.passes, batch_size=args.batch_size, seed=args.seed)
    top_k_filter(
        policy, seqs[: args.batch_size], lengths[: args.batch_size], targets[: args.batch_size], **settings | {"passes": 1}
    )  # warm-up
    reference, reference_cpu, reference_wall = timed(lambda: reference_top_k_filter(policy, seqs, lengths, targets, **settings))
    new, new_cpu, new_wall = timed(lambda: top_k_filter(policy, seqs, lengths, targets, **settings))
    if not torch.equal(reference, new):
        raise SystemExit(f"{name}: the new filter keeps other rows than the reference ({int((reference != new).sum())} differ)")
    _, encode_cpu, _ = timed(lambda: encode_only(policy, seqs, lengths, passes=args.passes, batch_size=args.batch_size, seed=args.seed))
    return {
        "rows": len(targets),
        "kept": int(new.sum()),
        "masks_equal": True,
        "reference_cpu_s": round(reference_cpu, 2),
        "new_cpu_s": round(new_cpu, 2),
        "encode_only_cpu_s": round(encode_cpu, 2),
        "reference_wall_s": round(reference_wall, 2),
        "new_wall_s": round(new_wall, 2),
        "ratio": round(reference_cpu / new_cpu, 3),
        "ratio_ceiling": round(reference_cpu / encode_cpu, 3),
    }


def table(results: dict[str, dict]) -> str:
    """One row per data set: CPU seconds of each filter, the scoring share (filter minus encode only)
    before and after, and the speed-up against its ceiling."""
    lines = [
        "| data set | rows | items | kept | reference CPU s | new CPU s | encode only CPU s | scoring CPU s, reference -> new | speed-up | ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        scoring = f"{r['reference_cpu_s'] - r['encode_only_cpu_s']:.1f} -> {r['new_cpu_s'] - r['encode_only_cpu_s']:.1f}"
        lines.append(
            f"| {name} | {r['rows']:,} | {r['items']:,} | {r['kept']:,} | {r['reference_cpu_s']:.1f} | {r['new_cpu_s']:.1f} "
            f"| {r['encode_only_cpu_s']:.1f} | {scoring} | {r['ratio']:.2f}x | {r['ratio_ceiling']:.2f}x |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=("ml-100k", "instruments"), default=["ml-100k", "instruments"])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data", help=f"folder holding {INSTRUMENTS_FILE}")
    parser.add_argument("--instruments-rows", type=int, default=20_480, help="first training rows of Instruments (0 = all 339,519)")
    parser.add_argument("--ml-100k-rows", type=int, default=20_480, help="first training rows of ML-100K (0 = all 96,458)")
    parser.add_argument("--checkpoint-ml-100k", type=Path, default=None, help="an ML-100K SPT checkpoint (default: random weights)")
    parser.add_argument("--top", type=int, default=RPTConfig().filter_top)
    parser.add_argument("--passes", type=int, default=RPTConfig().filter_passes)
    parser.add_argument("--batch-size", type=int, default=1024, help="rows per filter batch (top_k_filter's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--profile", action="store_true", help="print the operator profile of one reference batch per data set; no timing, no file"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keep_freed_memory()
    results: dict[str, dict] = {}
    run = {
        "settings": {"top": args.top, "passes": args.passes, "batch_size": args.batch_size, "seed": args.seed, "max_len": MAX_LEN},
        "machine": machine_description(),
        "command": command_line("filter_speed.py", args),
    }
    for name in args.datasets:
        loaded = load_rows(name, args.data_dir, args.ml_100k_rows if name == "ml-100k" else args.instruments_rows)
        if loaded is None:
            continue
        data, rows = loaded
        policy, source = make_policy(data.num_items, args.checkpoint_ml_100k if name == "ml-100k" else None, args.seed)
        print(f"[filter] {name}: {len(rows[2]):,} rows, {data.num_items:,} items, {source}", flush=True)
        if args.profile:
            print(profile_batch(policy, rows, args), flush=True)
            continue
        results[name] = {"items": data.num_items, "policy": source, **measure(name, rows, policy, args), **run}
    if args.profile:
        return
    print(table(results))
    # data sets measured by an earlier run (one data set per run keeps each run short) stay in the file
    earlier = json.loads(args.out.read_text())["datasets"] if args.out.is_file() else {}
    datasets = earlier | results
    record = {
        "ratios": {f"filter_{name}": r["ratio"] for name, r in datasets.items()},
        "datasets": datasets,
        "timing": "CPU seconds of one thread (time.thread_time); ratio = reference CPU s / new CPU s on the same rows",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, record)
    print(f"[filter] wrote {args.out}")


if __name__ == "__main__":
    main()
