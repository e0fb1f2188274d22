"""Train SASRec or LARES-SPT on a real data set over several seeds and record speed and quality.

    OMP_NUM_THREADS=1 python benchmarks/spt_benchmark.py --dataset ml-100k --policy sasrec --mode dense --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/spt_benchmark.py --dataset amazon-beauty --policy lares --max-len 20
    python benchmarks/spt_benchmark.py --dataset custom --dataset-set path=log.csv user_col=uid item_col=sku time_col=ts --policy lares

Each seed: SPT with early stopping on validation NDCG@10 (DESIGN defaults unless overridden), then
test metrics of the best checkpoint with history items masked and not masked, plus evaluation
speed, and for recurrent policies the test metrics over reasoning depth k. Checkpoints stay in
benchmarks/runs/ (not committed). One JSON file per configuration goes to benchmarks/results/; benchmarks/make_report.py
turns them into the markdown tables in docs/results/. Seeds of one configuration may run as separate
processes (``--seeds 1`` and ``--seeds 2`` side by side): each finished seed is merged into the
configuration's JSON under a lock, replacing an earlier row of the same seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import shutil
import time
from pathlib import Path

import torch
from benchmark_data import add_dataset_arguments, config_file, key_values, load_benchmark_dataset
from results_io import check_mergeable, command_line, machine_description, merge_seed
from seed_resume import interruption_names_resume, resumable

from lares_rl.core.allocator import keep_freed_memory
from lares_rl.core.checkpoint import build_policy
from lares_rl.core.errors import LaresError
from lares_rl.core.runtime import seed_everything
from lares_rl.eval.depth_sweep import sweep_depths
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.train import train_spt

ROOT = Path(__file__).resolve().parents[1]


def spt_overrides(cfg: SPTConfig, values: dict) -> SPTConfig:
    """``--spt-set`` on top of the named flags; an unknown key is an error that lists the known ones."""
    known = {field.name for field in dataclasses.fields(SPTConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise LaresError(f"--spt-set: unknown spt key(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(cfg, **values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(parser)
    parser.add_argument("--policy", default="sasrec", help="a file name in configs/policy/")
    parser.add_argument("--mode", choices=["rows", "dense"], default="rows")
    parser.add_argument("--max-len", type=int, default=None, help="default: the dataset config's")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--similarity", choices=["dot", "cosine"], default="dot", help="spt.similarity of the alignment losses")
    parser.add_argument("--temperature", type=float, default=None, help="spt.temperature; default: 1.0 for dot, 0.07 for cosine")
    parser.add_argument(
        "--reference-anchor",
        action="store_true",
        help="spt.shared_anchor=false: the reference's separate anchor pass (3 passes a step instead of 2)",
    )
    parser.add_argument(
        "--bucket", action="store_true", help="spt.bucket_by_length: batch histories of similar length (short-history data)"
    )
    parser.add_argument("--policy-set", nargs="*", default=[], help="policy overrides key=value, e.g. backbone=fmlp")
    parser.add_argument(
        "--spt-set",
        nargs="*",
        default=[],
        help="any other spt key=value, e.g. negatives=sampled num_negatives=128 (configs/spt/default.yaml)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue each seed's run directory from its saved training state "
        "(after Ctrl-C or a crash); a seed with no saved state starts fresh; with a --max-epochs at or below the saved epoch it only evaluates the best checkpoint so far",
    )
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--runs-dir",
        default=str(ROOT / "benchmarks" / "runs"),
        help="checkpoints and TensorBoard logs, one folder per configuration and seed",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()

    data, dataset_cfg = load_benchmark_dataset(
        args.dataset, key_values(args.dataset_set) | ({"max_len": args.max_len} if args.max_len else {}), args.beauty_path
    )
    max_len = int(dataset_cfg["max_len"])
    policy_cfg = config_file("policy", args.policy, key_values(args.policy_set))
    spt_cfg = SPTConfig(
        epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        alpha=args.alpha,
        gamma=args.gamma,
        patience=args.patience,
        mode=args.mode,
        bucket_by_length=args.bucket,
        similarity=args.similarity,
        temperature=args.temperature,
        shared_anchor=not args.reference_anchor,
    )
    spt_cfg = spt_overrides(spt_cfg, key_values(args.spt_set))
    spt_cfg.validate()
    eval_cfg = EvalConfig()
    device = torch.device("cpu")
    name = f"{args.dataset}__{args.policy}{args.tag}__{args.mode}{'-bucketed' if args.bucket else ''}__L{max_len}"
    out_path = Path(args.out_dir) / f"{name}.json"
    record = {
        "name": name,
        "dataset": args.dataset,
        "policy": args.policy,
        "mode": args.mode,
        "max_len": max_len,
        "policy_config": policy_cfg,
        "spt": vars(spt_cfg),
        "stats": data.stats(),
        "machine": machine_description(),
        "command": command_line("spt_benchmark.py", args, skip=("out_dir", "runs_dir", "beauty_path")),
    }
    merge_rule = {
        "same": ("policy_config", "spt", "max_len"),
        "defaults": {"spt": {**vars(SPTConfig()), "shared_anchor": False}},
    }  # files from before the switch ran 3 passes
    check_mergeable(out_path, record, **merge_rule)
    for seed in args.seeds:
        seed_everything(seed)
        policy = build_policy(policy_cfg, data.num_items, max_len)
        run_dir = Path(args.runs_dir) / name / f"seed{seed}"
        resume = resumable(args.resume, run_dir, "spt_last.pt", f"{name} seed {seed}")
        if not resume:
            shutil.rmtree(run_dir, ignore_errors=True)
        with interruption_names_resume(f"{name} seed {seed}", seed, run_dir):
            summary = train_spt(
                policy=policy,
                policy_config=policy_cfg,
                data=data,
                max_len=max_len,
                cfg=spt_cfg,
                eval_cfg=eval_cfg,
                run_dir=run_dir,
                device=device,
                seed=seed,
                config={"dataset": dataset_cfg, "policy": policy_cfg},
                progress=False,
                resume=resume,
            )
        start = time.perf_counter()
        test = evaluate_policy(policy, data, "test", max_len, eval_cfg, device)
        eval_seconds = time.perf_counter() - start
        masked = evaluate_policy(policy, data, "test", max_len, EvalConfig(exclude_history=True), device)
        depth = sweep_depths(policy, data, max_len, eval_cfg, device) if policy.recurrent else None
        row = {
            "seed": seed,
            "checkpoint": summary["checkpoint"],
            "depth_sweep": depth,
            **{k: summary[k] for k in ("best_epoch", "epochs_run", "seconds_per_epoch", "cpu_seconds_per_epoch", "samples_per_sec")},
            "valid": summary["valid"],
            "test": test,
            "test_masked": masked,
            "eval_users_per_sec": data.num_users / eval_seconds,
            # what the row cost: its training epochs at their CPU-time pace (all threads; epochs of
            # a state saved before the CPU clock existed count at the recorded epochs' median), else at
            # their wall pace on --threads cores (an upper bound: pauses and shared cores count too),
            # and the process's peak resident memory (run one seed per process for a per-seed figure)
            **core_hours(summary, args.threads),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        print(
            f"[bench] {name} seed {seed}: {row['seconds_per_epoch']:.1f}s/epoch, best epoch {row['best_epoch']}, test ndcg@10 {test['ndcg@10']:.4f} (masked {masked['ndcg@10']:.4f})",
            flush=True,
        )
        merge_seed(out_path, record, row, **merge_rule)


def core_hours(summary: dict, threads: int) -> dict:
    """``core_hours`` of a seed's training epochs and the clock it came from (``cpu`` or ``wall``)."""
    cpu = summary.get("cpu_seconds_per_epoch")
    if cpu is not None:
        return {"core_hours": cpu * summary["epochs_run"] / 3600, "core_hours_clock": "cpu"}
    return {"core_hours": summary["seconds_per_epoch"] * summary["epochs_run"] * threads / 3600, "core_hours_clock": "wall"}


if __name__ == "__main__":
    try:
        main()
    except LaresError as err:
        raise SystemExit(f"error: {err}") from None
