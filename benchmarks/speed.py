"""Throughput of today's code path against the new one, in the same run, as ratios (issue 34).

    OMP_NUM_THREADS=1 python benchmarks/speed.py            # ML-100K, and Instruments from ../shared/data

Each part times a fixed number of units of work (SPT steps, evaluation users), not whole epochs,
on both paths alternately (SPT: step by step on copies of one model, seeded alike, so both see
the same k', T0 and dropout and background load hits both), in CPU time of one thread. It prints
one table and writes ``benchmarks/results/speed.json``, whose ``ratios`` map holds new throughput /
old for every ``<part>_<data set>`` key (e.g. ``spt_lares_instruments``); the keys other scripts
write there (``filter_instruments``, benchmarks/filter_speed.py) are kept.

A new part is one function ``(data name, data, args) -> Measured`` added to ``PARTS``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from statistics import mean

import torch
from results_io import write_result_text
from speed_common import (
    DATASETS,
    FirstUsers,
    add_data_dir_argument,
    alternating,
    build,
    cpu_ms,
    load_data,
    one_thread,
    spt_batches,
    spt_config,
    spt_update,
)

from lares_rl.core.allocator import keep_freed_memory
from lares_rl.core.precision import FP32_EAGER, Numerics, use_numerics
from lares_rl.core.tracking import progress_enabled
from lares_rl.data import SequenceData
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.metrics import ranking
from lares_rl.spt.batches import training_rows
from lares_rl.spt.distributed import SPTStep
from lares_rl.spt.losses import spt_loss, uses_fused_catalog

RESULTS = Path(__file__).resolve().parent / "results" / "speed.json"


@dataclass
class Measured:
    """One part on one data set: throughput of each path (``unit`` per CPU second) and what each ran."""

    unit: str
    old: float
    new: float
    old_path: str
    new_path: str
    work: str  # what was timed, e.g. "12 steps of 128 windows"

    @property
    def ratio(self) -> float:
        return self.new / self.old


def spt_throughput(policy_name: str, data: SequenceData, steps: int) -> Measured:
    """Supervised targets per CPU second of whole SPT steps (``spt_loss``, backward, Adam, as
    ``train_spt`` takes them) with ``spt.catalog_loss=full`` (today) and the default, ``auto``
    (fused on a catalog where that is faster; benchmarks/speed_profile.py times both on every one)."""
    base = build(policy_name, data)
    runs = {}
    for path in ("full", "auto"):
        policy, cfg = copy.deepcopy(base).train(), spt_config(catalog_loss=path)
        runs[path] = (policy, cfg, torch.optim.Adam(policy.parameters(), lr=cfg.lr), spt_batches(policy, data, cfg), [0.0, 0])
    for index in range(steps + 1):  # step 0 warms up
        for policy, cfg, optimizer, batches, totals in alternating(list(runs.values()), index):
            batch, positive = next(batches)
            torch.manual_seed(index)

            ms = cpu_ms(lambda: spt_update(partial(spt_loss, policy, cfg=cfg), optimizer, batch, positive, index))[1]
            if index:
                totals[0] += ms / 1000
                totals[1] += int((batch[2] > 0).sum())
    rate = {path: run[-1][1] / run[-1][0] for path, run in runs.items()}
    chosen = "fused" if uses_fused_catalog(base, "auto") else "full"
    new_path = f"spt.catalog_loss=auto ({chosen} at {data.num_items:,} items)"
    work = f"{steps} steps of {spt_config().batch_size} windows"
    return Measured("samples/s", rate["full"], rate["auto"], "spt.catalog_loss=full", new_path, work)


def spt_lares(name: str, data: SequenceData, args: argparse.Namespace) -> Measured:
    return spt_throughput("lares", data, args.spt_steps)


def spt_sasrec(name: str, data: SequenceData, args: argparse.Namespace) -> Measured:
    return spt_throughput("sasrec", data, args.spt_steps)


def spt_numerics_steps(
    policy_name: str, data: SequenceData, steps: int, numerics: Numerics, old_catalog_loss: str = "full"
) -> tuple[dict[str, list[float]], list[int]]:
    """CPU seconds of each of ``steps + 1`` whole SPT steps (the step module, backward, Adam) on
    the old path (fp32, eager; ``spt.catalog_loss=full``, today's, unless ``old_catalog_loss``) and
    on the default catalog loss under ``numerics`` (precision, compile), alternately on copies of
    one model; and each step's supervised targets. Step 0 is where compilation happens."""
    base = build(policy_name, data)
    runs = {}
    for path, catalog_loss, chosen in (("old", old_catalog_loss, FP32_EAGER), ("new", "auto", numerics)):
        policy, cfg = copy.deepcopy(base).train(), spt_config(catalog_loss=catalog_loss)
        with use_numerics(chosen):
            step_module = SPTStep(policy, cfg)
        runs[path] = (step_module, torch.optim.Adam(policy.parameters(), lr=cfg.lr), spt_batches(policy, data, cfg), [])
    targets = []
    for index in range(steps + 1):
        for step_module, optimizer, batches, seconds in alternating(list(runs.values()), index):
            batch, positive = next(batches)
            torch.manual_seed(index)

            seconds.append(cpu_ms(lambda: spt_update(step_module, optimizer, batch, positive, index))[1] / 1000)
        targets.append(int((batch[2] > 0).sum()))
    return {path: run[-1] for path, run in runs.items()}, targets


def spt_bf16(policy_name: str, data: SequenceData, steps: int) -> Measured:
    """Supervised targets per CPU second of whole SPT steps after one warm-up step: today's fp32
    full path against the default catalog loss under ``precision=bf16``."""
    seconds, targets = spt_numerics_steps(policy_name, data, steps, Numerics("bf16"))
    rate = {path: sum(targets[1:]) / sum(times[1:]) for path, times in seconds.items()}
    work = f"{steps} steps of {spt_config().batch_size} windows"
    return Measured("samples/s", rate["old"], rate["new"], "spt.catalog_loss=full, fp32", "spt.catalog_loss=auto, precision=bf16", work)


def spt_compile_epoch(policy_name: str, data: SequenceData, steps: int) -> Measured:
    """Supervised targets per CPU second over one whole SPT epoch with the compile time counted:
    the default catalog loss eager against the same with ``compile=true`` (compile alone, the
    choice its default rests on). Measured over ``steps + 1`` steps (every compilation they
    trigger counted, done in this process and without Inductor's caches, as on a first run); the
    epoch's other steps at the mean of the measured second half."""
    torch.compiler.reset()
    torch._inductor.config.compile_threads = 1  # compile work in this process's CPU time
    torch._inductor.config.fx_graph_cache = False  # a first run's compile, not a cached one
    torch._functorch.config.enable_autograd_cache = False
    seconds, targets = spt_numerics_steps(policy_name, data, steps, Numerics("fp32", compile=True), old_catalog_loss="auto")
    cfg = spt_config()
    policy = build(policy_name, data)
    epoch_steps = len(training_rows(policy, data, policy.max_len, cfg)[0][0]) // cfg.batch_size
    rest = max(0, epoch_steps - len(targets))

    def epoch_seconds(times: list[float]) -> float:
        return sum(times) + rest * mean(times[len(times) // 2 :])

    epoch_targets = sum(targets) * epoch_steps / len(targets)
    compile_seconds = seconds["new"][0] - seconds["old"][0]
    steady = sum(seconds["old"][1:]) / sum(seconds["new"][1:])
    work = f"{len(targets)} of {epoch_steps} steps an epoch; compile {compile_seconds:.0f} s CPU at step 0; later steps {steady:.2f}x"
    return Measured(
        "samples/s (epoch)",
        epoch_targets / epoch_seconds(seconds["old"]),
        epoch_targets / epoch_seconds(seconds["new"]),
        "spt.catalog_loss=auto, eager",
        "spt.catalog_loss=auto, compile=true",
        work,
    )


def spt_lares_bf16(name: str, data: SequenceData, args: argparse.Namespace) -> Measured:
    return spt_bf16("lares", data, args.spt_steps)


def spt_sasrec_bf16(name: str, data: SequenceData, args: argparse.Namespace) -> Measured:
    return spt_bf16("sasrec", data, args.spt_steps)


def spt_lares_compile(name: str, data: SequenceData, args: argparse.Namespace) -> Measured:
    return spt_compile_epoch("lares", data, args.spt_steps)


def spt_sasrec_compile(name: str, data: SequenceData, args: argparse.Namespace) -> Measured:
    return spt_compile_epoch("sasrec", data, args.spt_steps)


def whole_matrix_target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The ranks as evaluation counted them before the cache-blocked count (issue 34): a comparison,
    a NaN test, an OR and an int64 sum, each over the whole [B, N + 1] score matrix."""
    target_scores = scores.gather(1, targets.view(-1, 1))
    items = scores[:, 1:]
    ranks = ((items >= target_scores) | items.isnan()).sum(dim=1) - 1
    return torch.where(target_scores.squeeze(1).isnan(), items.shape[1] - 1, ranks)


@contextmanager
def ranks_counted(how: str):
    """``old``: evaluation counts ranks with ``whole_matrix_target_ranks``; ``new``: today's code."""
    today = ranking.target_ranks
    ranking.target_ranks = whole_matrix_target_ranks if how == "old" else today
    try:
        yield
    finally:
        ranking.target_ranks = today


def evaluation(name: str, data: SequenceData, args: argparse.Namespace) -> Measured:
    """Validation users per CPU second of ``evaluate_policy`` (LARES, k = 4, full ranking) on the
    first ``--eval-users`` users: the ranks counted over the whole score matrix against today's
    cache-blocked count (the metrics are the same, checked on every pass)."""
    policy = build("lares", data)
    subset = FirstUsers(data, args.eval_users)
    cfg = EvalConfig(split="valid")
    seconds = {"old": 0.0, "new": 0.0}
    metrics = {}
    with progress_enabled(False):
        for repeat in range(args.eval_repeats):
            for label in alternating(["old", "new"], repeat):
                with ranks_counted(label):
                    metrics[label], ms = cpu_ms(lambda: evaluate_policy(policy, subset, "valid", policy.max_len, cfg, torch.device("cpu")))
                seconds[label] += ms / 1000
            if metrics["old"] != metrics["new"]:
                raise AssertionError(f"the two rank counts disagree: {metrics}")
    users = subset.users * args.eval_repeats
    return Measured(
        "users/s",
        users / seconds["old"],
        users / seconds["new"],
        "ranks over the whole score matrix",
        "cache-blocked rank count",
        f"{subset.users:,} users x {args.eval_repeats}",
    )


PARTS: dict[str, Callable[[str, SequenceData, argparse.Namespace], Measured]] = {
    "spt_lares": spt_lares,
    "spt_sasrec": spt_sasrec,
    "eval": evaluation,
    "spt_lares_bf16": spt_lares_bf16,
    "spt_sasrec_bf16": spt_sasrec_bf16,
    "spt_lares_compile": spt_lares_compile,
    "spt_sasrec_compile": spt_sasrec_compile,
}
# Run only when named with --parts: bf16 runs 6-7x slower than fp32 on a CPU without bf16 units and
# compile=true spends seconds compiling, so the default run keeps to the default path (docs/speed_precision.md).
OPT_IN_PARTS = ("spt_lares_bf16", "spt_sasrec_bf16", "spt_lares_compile", "spt_sasrec_compile")


def table(results: dict[str, Measured]) -> str:
    lines = ["| part | unit | today | new | new / today | today's path | new path | work |", "|---|---|---:|---:|---:|---|---|---|"]
    for key, m in results.items():
        lines.append(f"| {key} | {m.unit} | {m.old:,.0f} | {m.new:,.0f} | {m.ratio:.2f}x | {m.old_path} | {m.new_path} | {m.work} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--spt-steps", type=int, default=24, help="timed SPT steps per path (after one warm-up step)")
    parser.add_argument("--eval-users", type=int, default=4096, help="validation users per evaluation pass")
    parser.add_argument("--eval-repeats", type=int, default=2, help="evaluation passes per path")
    default_parts = [part for part in PARTS if part not in OPT_IN_PARTS]
    parser.add_argument("--parts", nargs="*", choices=list(PARTS), default=default_parts)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    one_thread()
    keep_freed_memory()
    start = time.perf_counter()
    results: dict[str, Measured] = {}
    skipped = []
    for name in DATASETS:
        data = load_data(name, args.data_dir)
        if data is None:
            skipped.append(name)
            continue
        for part in args.parts:
            key = f"{part}_{name}"
            results[key] = PARTS[part](name, data, args)
            print(f"{key}: {results[key].ratio:.2f}x ({results[key].old:,.0f} -> {results[key].new:,.0f} {results[key].unit})", flush=True)
    print(table(results))
    wall = time.perf_counter() - start
    print(f"({wall:.0f} s wall{'; skipped: ' + ', '.join(skipped) if skipped else ''})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # ratios another script keeps in this file (filter_speed.py's filter_instruments) stay
    parts_here = {f"{part}_{name}" for part in PARTS for name in DATASETS}
    earlier = json.loads(args.out.read_text()).get("ratios", {}) if args.out.is_file() else {}
    payload = {
        "ratios": {key: round(m.ratio, 4) for key, m in results.items()} | {k: v for k, v in earlier.items() if k not in parts_here},
        "parts": {key: asdict(m) for key, m in results.items()},
        "skipped": skipped,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "wall_seconds": round(wall, 1),
        "command": "OMP_NUM_THREADS=1 python benchmarks/speed.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in ("spt_steps", "eval_users", "eval_repeats"))
        + ("" if args.parts == default_parts else f" --parts {' '.join(args.parts)}")
        + ("" if args.out == RESULTS else f" --out {args.out}"),
    }
    write_result_text(args.out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
