"""The RPT top-100 filter in length order (the default) against the given order and the
implementation before issue 34 (issue 34 item 6).

    OMP_NUM_THREADS=1 python benchmarks/filter_speed.py --datasets instruments            # 20,480 training rows of Instruments
    OMP_NUM_THREADS=1 python benchmarks/filter_speed.py --datasets ml-100k                # the file keeps the other data set's row
    OMP_NUM_THREADS=1 python benchmarks/filter_speed.py --datasets ml-100k --ml-100k-rows 0 --checkpoint-ml-100k runs/x/checkpoints/spt_best.pt
    OMP_NUM_THREADS=1 python benchmarks/filter_speed.py --profile                         # operators of one batch, by CPU time

For each data set the same rows go through these filters with the same policy and seed:

- ``reference``: :func:`reference_top_k_filter`, the filter before issue 34 (given order, full
  score matrix, then :func:`lares_rl.metrics.ranking.target_ranks` and ``rank < top``);
- ``given``: :func:`lares_rl.rpt.filter.top_k_filter` with ``order="given"`` (the same batches,
  the target counted against the items scored below it); it must keep exactly the reference's rows;
- ``length``: ``top_k_filter`` with ``order="length"``, the default: batches of rows sorted by
  history length, each run only over its longest history. Its random draws (k per batch, dropout
  and T0 over the batch's shape) are not the given order's, so it keeps other rows; the record
  holds both counts, and the noiseless check below.

Noiseless check: the policy with dropout 0, ``t0_init=zero`` and a constant k (mean_recurrence)
filtered once in each order: only the trimmed widths differ then, and the rows kept should be the
same (the count of rows that differ is recorded; float rounding of a narrower attention can move a
score in its last bit, so a target tied to the 1e-6 with the cut could flip). ``--kept-seeds N``
also records the rows each order keeps for the filter seeds seed .. seed + N - 1 (untimed): how far
the seeds of one order spread is the sampling noise the two orders' counts are judged against.

``given`` and ``length`` are timed ``--repeats`` times, alternately (medians, min-max beside);
``reference`` once. Times are CPU seconds of the one thread (``time.thread_time``), which on a
shared machine move far less than wall seconds (also recorded). Instruments
(``--data-dir``/amazon2023-instruments-5core.txt, skipped with one line when absent) is cut to
``--instruments-rows`` training rows drawn uniformly (``--subset random``, kept in the data's
order; ``first`` takes the first ones, whose histories are longer than the data's): the reference
filter over all 339,519 rows would take about half an hour of CPU per run. The policy is ``configs/policy/lares.yaml`` with seeded random
weights (the work does not depend on the weights), or an SPT checkpoint for ML-100K; its dropout
is RPT's (``rpt.dropout``), as in a run. The process keeps freed memory as every entry point does
(lares_rl/core/allocator.py). Writes benchmarks/results/speed_filter.json, whose ``ratios`` map
holds reference CPU s / length-order CPU s per data set (``filter_<data set>``), and merges
``filter_instruments`` into the ``ratios`` of benchmarks/results/speed.json beside issue 34's
other keys.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from benchmark_data import ROOT, config_file, load_benchmark_dataset
from results_io import command_line, machine_description, write_result_json, write_result_text
from torch import nn

from lares_rl.catalog.topk import chunked_target_ranks, item_scorer
from lares_rl.core.allocator import keep_freed_memory
from lares_rl.core.checkpoint import build_policy, load_checkpoint, policy_from_checkpoint
from lares_rl.core.tracking import progress
from lares_rl.metrics.ranking import target_ranks
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.filter import filter_batches, top_k_filter
from lares_rl.rpt.learner import set_dropout

MAX_LEN = 20
INSTRUMENTS_FILE = "amazon2023-instruments-5core.txt"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "speed_filter.json"
SPEED_JSON = ROOT / "benchmarks" / "results" / "speed.json"


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


def noiseless(policy: nn.Module) -> nn.Module:
    """A copy of ``policy`` that draws nothing in training mode: dropout 0, T0 zero, a constant k."""
    quiet = copy.deepcopy(policy)
    set_dropout(quiet, 0.0)
    quiet.t0_init, quiet.step_sampler = "zero", "constant"
    return quiet


def positions(lengths: torch.Tensor, batch_size: int, order: str) -> int:
    """Positions one pass's encoder forwards see: each batch's rows times its longest history."""
    return sum(len(lengths[rows]) * int(lengths[rows].max()) for rows in filter_batches(lengths, batch_size, order))


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


def load_rows(name: str, data_dir: Path, rows: int | None, subset: str = "random") -> tuple[object, tuple[torch.Tensor, ...]] | None:
    """(data, ``rows`` training rows at L = 20) of ML-100K or Instruments: drawn uniformly (seed 0)
    and kept in the data's order, or the first ones; None, after one line, when the Instruments
    file is absent. The first rows are not a fair sample for the length order: Instruments' first
    20,480 have a mean length of 8.2 against 6.3 over all 339,519 rows."""
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
    if not rows or rows >= len(targets):
        return data, (seqs, lengths, targets)
    if subset == "first":
        cut = torch.arange(rows)
    else:
        cut = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))[:rows].sort().values
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
    """Reference once, then given and length order ``--repeats`` times each (alternately), on the
    same rows; fails unless the given order keeps exactly the reference's rows. Then the
    noiseless check (module docstring)."""
    seqs, lengths, targets = rows
    settings = dict(top=args.top, passes=args.passes, batch_size=args.batch_size, seed=args.seed)
    top_k_filter(
        policy, seqs[: args.batch_size], lengths[: args.batch_size], targets[: args.batch_size], **settings | {"passes": 1}
    )  # warm-up
    reference, reference_cpu, reference_wall = timed(lambda: reference_top_k_filter(policy, seqs, lengths, targets, **settings))
    kept, cpu, wall = {}, {"given": [], "length": []}, {"given": [], "length": []}
    for repeat in range(args.repeats):
        for order in ("given", "length") if repeat % 2 == 0 else ("length", "given"):
            kept[order], seconds, wall_seconds = timed(lambda: top_k_filter(policy, seqs, lengths, targets, order=order, **settings))
            cpu[order].append(seconds)
            wall[order].append(wall_seconds)
    if not torch.equal(reference, kept["given"]):
        raise SystemExit(
            f"{name}: the given-order filter keeps other rows than the reference ({int((reference != kept['given']).sum())} differ)"
        )
    kept_by_seed = {order: [int(kept[order].sum())] for order in ("given", "length")}
    for seed in range(args.seed + 1, args.seed + args.kept_seeds):
        for order, counts in kept_by_seed.items():
            counts.append(int(top_k_filter(policy, seqs, lengths, targets, order=order, **settings | {"seed": seed}).sum()))
    quiet = noiseless(policy)
    quiet_kept = {
        order: top_k_filter(quiet, seqs, lengths, targets, order=order, **settings | {"passes": 1}) for order in ("given", "length")
    }
    median = {order: statistics.median(times) for order, times in cpu.items()}
    return {
        "rows": len(targets),
        "kept_given": int(kept["given"].sum()),
        "kept_length": int(kept["length"].sum()),
        "kept_both": int((kept["given"] & kept["length"]).sum()),
        "kept_by_seed": kept_by_seed,
        "given_equals_reference": True,
        "noiseless_kept": int(quiet_kept["given"].sum()),
        "noiseless_rows_differing": int((quiet_kept["given"] != quiet_kept["length"]).sum()),
        "positions_per_pass": {order: positions(lengths, args.batch_size, order) for order in ("given", "length")},
        "reference_cpu_s": round(reference_cpu, 2),
        "given_cpu_s": round(median["given"], 2),
        "length_cpu_s": round(median["length"], 2),
        "given_cpu_s_all": [round(t, 2) for t in cpu["given"]],
        "length_cpu_s_all": [round(t, 2) for t in cpu["length"]],
        "reference_wall_s": round(reference_wall, 2),
        "given_wall_s": round(statistics.median(wall["given"]), 2),
        "length_wall_s": round(statistics.median(wall["length"]), 2),
        "ratio": round(reference_cpu / median["length"], 3),
        "ratio_given_to_length": round(median["given"] / median["length"], 3),
    }


def table(results: dict[str, dict]) -> str:
    """One row per data set: CPU seconds of each filter (min-max of the repeats), rows kept by the
    given and the length order, and the speed-ups."""
    lines = [
        "| data set | rows | items | kept: given / length / both | reference CPU s | given CPU s | length CPU s | positions, given -> length "
        "| reference -> length | given -> length | noiseless: kept, rows differing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        spread = {order: f"{min(r[f'{order}_cpu_s_all']):.1f}-{max(r[f'{order}_cpu_s_all']):.1f}" for order in ("given", "length")}
        lines.append(
            f"| {name} | {r['rows']:,} | {r['items']:,} | {r['kept_given']:,} / {r['kept_length']:,} / {r['kept_both']:,} "
            f"| {r['reference_cpu_s']:.1f} | {r['given_cpu_s']:.1f} ({spread['given']}) | {r['length_cpu_s']:.1f} ({spread['length']}) "
            f"| {r['positions_per_pass']['given']:,} -> {r['positions_per_pass']['length']:,} | {r['ratio']:.2f}x "
            f"| {r['ratio_given_to_length']:.2f}x | {r['noiseless_kept']:,}, {r['noiseless_rows_differing']} |"
        )
    return "\n".join(lines)


def merge_speed_ratio(path: Path, key: str, ratio: float) -> None:
    """``key: ratio`` into the ``ratios`` map of benchmarks/results/speed.json, every other entry
    kept, in the layout speed.py writes (keys in their order)."""
    record = json.loads(path.read_text()) if path.is_file() else {"ratios": {}}
    record["ratios"] = {**record.get("ratios", {}), key: ratio}
    write_result_text(path, json.dumps(record, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=("ml-100k", "instruments"), default=["ml-100k", "instruments"])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data", help=f"folder holding {INSTRUMENTS_FILE}")
    parser.add_argument("--instruments-rows", type=int, default=20_480, help="training rows of Instruments (0 = all 339,519)")
    parser.add_argument("--ml-100k-rows", type=int, default=20_480, help="training rows of ML-100K (0 = all 96,458)")
    parser.add_argument(
        "--subset", choices=("random", "first"), default="random", help="which rows: drawn uniformly (in data order), or the first ones"
    )
    parser.add_argument("--checkpoint-ml-100k", type=Path, default=None, help="an ML-100K SPT checkpoint (default: random weights)")
    parser.add_argument("--top", type=int, default=RPTConfig().filter_top)
    parser.add_argument("--passes", type=int, default=RPTConfig().filter_passes)
    parser.add_argument("--batch-size", type=int, default=1024, help="rows per filter batch (top_k_filter's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timings of the given and the length order each, alternately")
    parser.add_argument(
        "--kept-seeds", type=int, default=1, help="filter seeds whose kept counts are recorded per order (untimed): the sampling noise"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--speed-json", type=Path, default=SPEED_JSON, help="the file whose ratios get filter_instruments")
    parser.add_argument(
        "--profile", action="store_true", help="print the operator profile of one reference batch per data set; no timing, no file"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keep_freed_memory()
    results: dict[str, dict] = {}
    run = {
        "settings": {
            "top": args.top,
            "passes": args.passes,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "max_len": MAX_LEN,
            "repeats": args.repeats,
            "subset": args.subset,
            "kept_seeds": args.kept_seeds,
        },
        "machine": machine_description(),
        "command": command_line("filter_speed.py", args),
    }
    for name in args.datasets:
        loaded = load_rows(name, args.data_dir, args.ml_100k_rows if name == "ml-100k" else args.instruments_rows, args.subset)
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
        "timing": "CPU seconds of one thread (time.thread_time), medians of the repeats; ratio = reference CPU s / length-order CPU s "
        "on the same rows, ratio_given_to_length = given-order CPU s / length-order CPU s",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result_json(args.out, record)
    print(f"[filter] wrote {args.out}")
    if "instruments" in results:
        merge_speed_ratio(args.speed_json, "filter_instruments", results["instruments"]["ratio"])
        print(f"[filter] filter_instruments = {results['instruments']['ratio']} merged into {args.speed_json}")


if __name__ == "__main__":
    main()
