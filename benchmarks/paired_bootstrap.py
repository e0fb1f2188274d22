"""Is a checkpoint really better than another? A paired bootstrap over the users of one split
(lares_rl/eval/paired.py, which `lares-rl run` uses for its table), for any checkpoints.

    OMP_NUM_THREADS=1 python benchmarks/paired_bootstrap.py --dataset ml-100k \
        --pairs runs/.../spt_best.pt runs/.../rpt_best.pt  [more BEFORE AFTER pairs]

Both checkpoints of a pair are evaluated on the same users (full ranking, ``lares-rl eval``'s
defaults); the report gives the relative change of the mean, its 95% percentile interval over user
resamples and the share of resamples in which the change is <= 0.

A pair can be any two model checkpoints of the same data set (SPT -> RPT, SASRec -> LARES).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from benchmark_data import ROOT, add_dataset_arguments, key_values, load_benchmark_dataset
from results_io import command_line, machine_description, write_result_json, write_result_text

from lares_rl.core.checkpoint import check_same_data, load_checkpoint, policy_from_checkpoint
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.eval.paired import paired_bootstrap, per_user_metric

MEAN_ROW = "mean of the pairs above"


def checkpoint_per_user_metric(path: str, data, split: str, metric: str) -> torch.Tensor:
    """``metric`` of every user of ``split`` for the checkpoint at ``path`` (refused when it was
    trained on other data), full ranking with ``lares-rl eval``'s defaults."""
    payload = load_checkpoint(path)
    check_same_data(payload, data, path)
    policy = policy_from_checkpoint(payload, torch.device("cpu"))
    return per_user_metric(policy, data, split, int(payload["dataset"]["max_len"]), EvalConfig(), torch.device("cpu"), metric)


def markdown(record: dict) -> str:
    lines = [
        f"# Paired bootstrap on {record['dataset']} ({record['split']}, {record['metric']})",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {record['machine']}. {record['resamples']} resamples of the users, seed 0.",
        "",
        f"| before | after | users | {record['metric']} before | after | change | 95% interval | resamples with no gain |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["pairs"]:
        before, after = (path if path == MEAN_ROW else f"`{path}`" for path in (row["before_path"], row["after_path"]))
        lines.append(
            f"| {before} | {after} | {row['users']:,} | {row['before']:.4f} | {row['after']:.4f} | {100 * row['change']:+.1f}% "
            f"| {100 * row['ci_low']:+.1f}% .. {100 * row['ci_high']:+.1f}% | {100 * row['p_not_better']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(parser)
    parser.add_argument("--pairs", nargs="+", required=True, help="BEFORE AFTER [BEFORE AFTER ...] checkpoint paths")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out",
        default=None,
        help="markdown path, e.g. docs/results/paired_<dataset>__<runs>.md (the JSON goes next to it); default: print only",
    )
    args = parser.parse_args()
    if len(args.pairs) % 2:
        sys.exit(f"--pairs takes BEFORE AFTER checkpoints two by two; got {len(args.pairs)} paths")
    torch.set_num_threads(args.threads)
    data, _ = load_benchmark_dataset(args.dataset, key_values(args.dataset_set), args.beauty_path)
    pairs, values = [], []
    for before_path, after_path in zip(args.pairs[::2], args.pairs[1::2]):
        before, after = (checkpoint_per_user_metric(p, data, args.split, args.metric) for p in (before_path, after_path))
        values.append((before, after))
        pairs.append({"before_path": before_path, "after_path": after_path, **paired_bootstrap(before, after, args.resamples)})
    if len(values) > 1:  # the mean over pairs (e.g. 3 seeds) on the same users, resampled together
        before, after = (torch.stack(side).mean(0) for side in zip(*values))
        pairs.append({"before_path": MEAN_ROW, "after_path": MEAN_ROW, **paired_bootstrap(before, after, args.resamples)})
    for row in pairs:
        print(
            f"{row['before_path']} -> {row['after_path']}: {args.metric} {row['before']:.4f} -> {row['after']:.4f} ({100 * row['change']:+.1f}%, "
            f"95% {100 * row['ci_low']:+.1f}% .. {100 * row['ci_high']:+.1f}%, no gain in {100 * row['p_not_better']:.1f}% of resamples)",
            flush=True,
        )
    record = {
        "dataset": args.dataset,
        "split": args.split,
        "metric": args.metric,
        "resamples": args.resamples,
        "pairs": pairs,
        "machine": machine_description(),
        "command": "OMP_NUM_THREADS=1 " + command_line("paired_bootstrap.py", args, skip=("threads",)),
    }
    if args.out:
        out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
        write_result_json(out.with_suffix(".json"), record)
        write_result_text(out, markdown(record))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
