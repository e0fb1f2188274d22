"""Full-ranking evaluation throughput of this tree against an earlier revision, side by side.

    OMP_NUM_THREADS=1 python benchmarks/eval_speedup.py \\
        --checkpoint benchmarks/runs/ml-100k__lares_cosine__dense__L20/seed0/checkpoints/spt_best.pt

Why a revision and not the official code: issue 20 measured the official LARES code against this
project side by side (1 thread, 943 ML-100K test users, full ranking, k = 4: official 1,745
users/s, ours 2,527) at revision ``cedab91``. The official code does not run on this machine, but
that revision does, so timing it next to this tree here and multiplying by the issue's ratio gives
this tree's users/s relative to the official code on equal threads, without comparing numbers
from two machines.

Each setting runs in its own fresh single-thread process (the baseline with its own tree first on
``sys.path``), in rounds that time every setting once, so drifting load on a shared machine falls
on all of them alike. A process evaluates the test split ``--passes`` times after one warm-up
pass and reports the median thread CPU time; the table gives the median over ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILED_REVISION = "cedab91"  # main when issue 20 measured official 1,745 users/s against ours 2,527
OFFICIAL_USERS_PER_SEC, FILED_USERS_PER_SEC = 1745, 2527
WORKER_FLAG = "--worker"  # first argument of the per-setting processes main() starts
PACKAGE_DIRS = {"lares_rl": "lares_rl", "policies": "lares_rl/policies", "envs": "lares_rl/envs", "configs": "lares_rl/configs"}


def export_revision(revision: str, into: Path) -> tuple[Path, Path]:
    """The package tree of ``revision`` laid out as installed (policies/, envs/, configs/ inside
    lares_rl/) and its benchmarks/ folder; returns (path entry for the package, benchmarks dir)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, *PACKAGE_DIRS, "benchmarks"], capture_output=True
    )
    if archive.returncode:
        raise SystemExit(
            f"--baseline-rev {revision!r}: git archive failed ({archive.stderr.decode().strip()}); give a revision of this repository"
        )
    source = into / "source"
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(source, filter="data")
    package_root = into / "package"
    for folder, target in PACKAGE_DIRS.items():
        shutil.copytree(source / folder, package_root / target)
    return package_root, source / "benchmarks"


def worker(argv: list[str]) -> None:
    """One setting in this process: prints {"users_per_sec", "ndcg@10", "mean_steps"} as JSON.
    Nothing of this tree's benchmarks/ is imported here: the baseline runs with its own."""
    parser = argparse.ArgumentParser()
    for flag in ("--bench-dir", "--checkpoint", "--dataset", "--beauty-path"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--passes", type=int, required=True)
    parser.add_argument("--halt-tol", type=float, default=None)
    parser.add_argument("--dataset-overrides", default="{}", help="JSON of the --dataset-set pairs")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.bench_dir)
    import torch
    from benchmark_data import load_benchmark_dataset  # the tree's own loader (its data API)

    from lares_rl.core.checkpoint import load_checkpoint, policy_from_checkpoint
    from lares_rl.core.tracking import progress_enabled
    from lares_rl.eval.evaluation import EvalConfig, evaluate_policy

    torch.set_num_threads(1)
    payload = load_checkpoint(args.checkpoint)
    data, _ = load_benchmark_dataset(args.dataset, json.loads(args.dataset_overrides), args.beauty_path)
    policy = policy_from_checkpoint(payload, torch.device("cpu")).eval()
    max_len = int(payload["dataset"]["max_len"])
    users = len(data.eval_inputs("test", max_len)[2])
    halting = {"halt_tol": args.halt_tol, "halt_k_max": args.k} if args.halt_tol else {}
    cfg = EvalConfig(k=args.k, batch_size=1024, **halting)
    seconds = []
    with progress_enabled(False):
        for _ in range(args.passes + 1):
            start = time.thread_time()
            metrics = evaluate_policy(policy, data, "test", max_len, cfg, torch.device("cpu"))
            seconds.append(time.thread_time() - start)
    print(
        json.dumps(
            {
                "users_per_sec": users / statistics.median(seconds[1:]),
                "ndcg@10": metrics["ndcg@10"],
                "mean_steps": metrics.get("mean_steps", args.k),
            }
        )
    )


def run_setting(args: argparse.Namespace, package: Path | None, bench_dir: Path, halt_tol: float | None) -> dict:
    command = [
        sys.executable,
        __file__,
        WORKER_FLAG,
        "--bench-dir",
        str(bench_dir),
        "--checkpoint",
        args.checkpoint,
        "--dataset",
        args.dataset,
        "--beauty-path",
        args.beauty_path,
        "--k",
        str(args.k),
        "--passes",
        str(args.passes),
        "--dataset-overrides",
        json.dumps(args.dataset_overrides),
    ]
    if halt_tol:
        command += ["--halt-tol", str(halt_tol)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if package is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(package), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"[eval_speedup] a worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from benchmark_data import add_dataset_arguments, key_values
    from results_io import command_line, machine_description, publish

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    add_dataset_arguments(parser)
    parser.add_argument(
        "--baseline-rev", default=FILED_REVISION, help="the git revision to time against (default: the one issue 20 measured)"
    )
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument(
        "--halt-tol",
        type=float,
        default=0.25,
        help="also time this tree with adaptive depth (docs/results/adaptive_depth_*.md's recommended tolerance); 0: skip",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--output", default=str(ROOT / "docs" / "results" / "eval_speedup.md"))
    args = parser.parse_args()
    args.dataset_overrides = key_values(args.dataset_set)

    with tempfile.TemporaryDirectory(prefix="eval_speedup_") as tmp:
        package, bench_dir = export_revision(args.baseline_rev, Path(tmp))
        settings = {
            f"revision {args.baseline_rev}, fixed k = {args.k}": (package, bench_dir, None),
            f"this tree, fixed k = {args.k}": (None, ROOT / "benchmarks", None),
        }
        if args.halt_tol:
            settings[f"this tree, halt tol = {args.halt_tol}, k_max = {args.k}"] = (None, ROOT / "benchmarks", args.halt_tol)
        results: dict[str, list[dict]] = {name: [] for name in settings}
        for round_index in range(args.rounds):
            for name, setting in settings.items():
                results[name].append(run_setting(args, *setting))
            print(
                f"[eval_speedup] round {round_index + 1}/{args.rounds}: "
                + ", ".join(f"{r[-1]['users_per_sec']:,.0f}" for r in results.values()),
                flush=True,
            )

    baseline = statistics.median(r["users_per_sec"] for r in next(iter(results.values())))
    filed_ratio = FILED_USERS_PER_SEC / OFFICIAL_USERS_PER_SEC
    command = "OMP_NUM_THREADS=1 " + command_line("eval_speedup.py", args, skip=("output", "dataset_overrides"))
    lines = [
        f"# Evaluation throughput against revision {args.baseline_rev} ({args.dataset}, test, full ranking)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_description()} (1 thread per process). Each cell: median over {args.rounds} rounds; a round runs every setting once "
        f"in its own fresh process, which times {args.passes} passes after a warm-up (thread CPU time).",
        "",
        f"Issue 20 measured the official LARES code against revision {FILED_REVISION} side by side: {OFFICIAL_USERS_PER_SEC:,} against "
        f"{FILED_USERS_PER_SEC:,} users/s, a ratio of {filed_ratio:.2f}. The last column multiplies each setting's speed-up over "
        f"revision {FILED_REVISION}, measured here, by that ratio.",
        "",
        f"| setting | users/s | NDCG@10 | mean steps | speed-up over {args.baseline_rev} | against the official code |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        speed = statistics.median(r["users_per_sec"] for r in rows)
        chained = f"{speed / baseline * filed_ratio:.2f}x" if args.baseline_rev == FILED_REVISION else "-"
        lines.append(
            f"| {name} | {speed:,.0f} | {rows[-1]['ndcg@10']:.4f} | {statistics.median(r['mean_steps'] for r in rows):.2f} | {speed / baseline:.2f}x | {chained} |"
        )
    lines += [
        "",
        "Per round (users/s): "
        + "; ".join(f"{name}: " + ", ".join(f"{r['users_per_sec']:,.0f}" for r in rows) for name, rows in results.items()),
        "",
    ]
    publish("\n".join(lines), args.output)


if __name__ == "__main__":
    if sys.argv[1:2] == [WORKER_FLAG]:
        worker(sys.argv[2:])
    else:
        main()
