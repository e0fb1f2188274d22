"""How much evaluation's T0 noise moves a checkpoint's test metrics: over eval seeds and batch sizes.

    OMP_NUM_THREADS=1 python benchmarks/eval_noise.py --dataset ml-100k --checkpoints run/seed0/checkpoints/spt_best.pt ...

LARES draws its initial thought T0 at evaluation too (``t0_init=normal``), from the fixed
``eval.seed``, as one tensor per user batch: a checkpoint gets the same numbers for the same
``eval.batch_size``, while another seed or batch size redraws every user's noise. This measures
how far that moves test NDCG@10 and Recall@10 next to the spread over training seeds the report
shows, and writes ``docs/results/eval_noise.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from benchmark_data import add_dataset_arguments, key_values, load_benchmark_dataset
from results_io import machine_description, mean_std, publish

from lares_rl.core.checkpoint import check_same_data, load_checkpoint, policy_from_checkpoint
from lares_rl.core.errors import LaresError
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--checkpoints", nargs="+", required=True, help="SPT/RPT checkpoints trained on this data set")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 256, 64])
    parser.add_argument("--output", default=str(ROOT / "docs" / "results" / "eval_noise.md"), help="markdown report; - to only print")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")

    data, _ = load_benchmark_dataset(args.dataset, key_values(args.dataset_set), args.beauty_path)
    rows = []
    for path in args.checkpoints:
        payload = load_checkpoint(path)
        check_same_data(payload, data, path)
        policy = policy_from_checkpoint(payload, cpu)
        max_len = int(payload["dataset"]["max_len"])
        by_seed = [evaluate_policy(policy, data, "test", max_len, EvalConfig(seed=s), cpu) for s in args.eval_seeds]
        by_batch = [evaluate_policy(policy, data, "test", max_len, EvalConfig(batch_size=b), cpu) for b in args.batch_sizes]
        rows.append((path, by_seed, by_batch))
        print(
            f"[eval-noise] {path}: ndcg@10 over eval seeds {[round(m['ndcg@10'], 4) for m in by_seed]}, over batch sizes {[round(m['ndcg@10'], 4) for m in by_batch]}",
            flush=True,
        )

    lines = [
        f"# Evaluation noise on {args.dataset} (test split, full ranking)",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/eval_noise.py {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {machine_description(cpu)}",
        "",
        f"Each checkpoint evaluated with eval seeds {args.eval_seeds} (batch size 1024) and with batch sizes {args.batch_sizes} (seed 0). "
        "Spread is the sample standard deviation; range is max - min.",
        "",
        "| checkpoint | NDCG@10 over eval seeds (mean ± sd) | Recall@10 over eval seeds (mean ± sd) | NDCG@10 range over batch sizes |",
        "|---|---:|---:|---:|",
    ]
    for path, by_seed, by_batch in rows:
        ndcg, recall = [m["ndcg@10"] for m in by_seed], [m["recall@10"] for m in by_seed]
        batch_ndcg = [m["ndcg@10"] for m in by_batch]
        lines.append(f"| `{path}` | {mean_std(ndcg)} | {mean_std(recall)} | {max(batch_ndcg) - min(batch_ndcg):.4f} |")
    lines += ["", "Compare with the spread over training seeds in the report's quality tables (docs/results/README.md).", ""]
    publish("\n".join(lines), args.output)


if __name__ == "__main__":
    try:
        main()
    except LaresError as err:
        raise SystemExit(f"error: {err}") from None
