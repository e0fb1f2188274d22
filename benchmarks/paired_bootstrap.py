"""Is a checkpoint really better than another? A paired bootstrap over the users of one split.

    OMP_NUM_THREADS=1 python benchmarks/paired_bootstrap.py --dataset ml-100k \
        --pairs runs/.../spt_best.pt runs/.../rpt_best.pt  [more BEFORE AFTER pairs]

Every RPT gain in this project is a few percent of NDCG@10, measured on 943 (ML-100K) or 22k
(Amazon Beauty) test users, and one user's NDCG@10 is either 0 or a value near 0.3-1. Whether a
few percent is more than the luck of which users are in the split is a question of numbers, not
of taste: both checkpoints of a pair are evaluated on the same users (full ranking, same eval seed
and batches as ``lares-rl eval``), the users are resampled with replacement, and the relative change
of the mean is recomputed on each resample. The report gives the change, its 95% percentile
interval and the share of resamples in which the change is <= 0.

A pair can be any two model checkpoints of the same data set (SPT -> RPT, SASRec -> LARES).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from benchmark_data import ROOT, add_dataset_arguments, key_values, load_benchmark_dataset
from results_io import command_line, machine_description

from lares_rl.core.atomic import atomic_write_json, atomic_write_text
from lares_rl.core.checkpoint import check_same_data, load_checkpoint, policy_from_checkpoint
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.metrics.ranking import metrics_from_ranks, policy_score_fn, target_ranks

MEAN_ROW = "mean of the pairs above"


def per_user_metric(path: str, data, split: str, metric: str) -> torch.Tensor:
    """``metric`` (e.g. ``ndcg@10``) of every user of ``split``, in row order, computed inside the
    same ``evaluate_policy`` pass that reports its mean (so the two cannot disagree)."""
    payload = load_checkpoint(path)
    check_same_data(payload, data, path)
    policy = policy_from_checkpoint(payload, torch.device("cpu"))
    max_len = int(payload["dataset"]["max_len"])
    targets = data.eval_inputs(split, max_len)[2]
    ranks: list[torch.Tensor] = []
    scores_of = policy_score_fn(policy)

    def recording(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        scores = scores_of(seq, lengths)
        done = sum(len(r) for r in ranks)
        ranks.append(target_ranks(scores.float(), targets[done : done + len(scores)]))
        return scores

    k = int(metric.split("@")[1])
    mean = evaluate_policy(policy, data, split, max_len, EvalConfig(ks=[k]), torch.device("cpu"), score_fn=recording)[metric]
    values = metrics_from_ranks(torch.cat(ranks), [k])[metric]
    if abs(float(values.mean()) - mean) > 1e-9:
        raise RuntimeError(f"{path}: per-user {metric} averages {float(values.mean())}, the evaluation pass reported {mean}")
    return values


def paired_bootstrap(before: torch.Tensor, after: torch.Tensor, resamples: int, seed: int = 0) -> dict[str, float]:
    """Relative change of the mean (after / before - 1), its 95% percentile interval over user
    resamples, and the share of resamples where the change is <= 0."""
    generator = torch.Generator().manual_seed(seed)
    users = len(before)
    index = torch.randint(users, (resamples, users), generator=generator)
    change = after[index].mean(1) / before[index].mean(1).clamp(min=1e-12) - 1
    low, high = torch.quantile(change, torch.tensor([0.025, 0.975], dtype=change.dtype)).tolist()
    return {
        "before": float(before.mean()),
        "after": float(after.mean()),
        "change": float(after.mean() / before.mean() - 1),
        "ci_low": low,
        "ci_high": high,
        "p_not_better": float((change <= 0).double().mean()),
        "users": users,
    }


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
        before, after = (per_user_metric(p, data, args.split, args.metric) for p in (before_path, after_path))
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
        atomic_write_json(out.with_suffix(".json"), record)
        atomic_write_text(out, markdown(record))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
