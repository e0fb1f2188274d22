"""Cost/accuracy of adaptive reasoning depth (per-user halting) against fixed depths, on CPU with one thread.

    OMP_NUM_THREADS=1 python benchmarks/adaptive_depth.py --dataset ml-100k \\
        --checkpoints benchmarks/runs/ml-100k__lares_cosine__dense__L20/seed{0,1,2}/checkpoints/spt_best.pt

For every checkpoint, on the valid and the test split (full ranking, no masking, eval seed 0):
NDCG@10, Recall@10, mean reasoning steps and evaluation users/s at fixed k in ``--fixed-ks`` and
with halting at every tolerance in ``--tols`` for every cap in ``--k-maxes``; plus
``Recommender.recommend`` latency for one history (p50/p99 over ``--calls`` calls, each call one
real test history, top-10, exclude_seen). Numbers are means over the checkpoints (± sample std).

The recommended default tolerance is chosen on VALIDATION only: the setting with the fewest mean
steps whose mean valid NDCG@10 is within ``--within`` (relative) of fixed k = 4; its test numbers
are then reported next to fixed k = 4. Writes ``<out>/adaptive_depth_<dataset>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lares_rl.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from lares_rl.checkpoint import load_checkpoint, policy_from_checkpoint  # noqa: E402
from lares_rl.evaluation import EvalConfig, evaluate_policy  # noqa: E402
from lares_rl.halting import steps_histogram  # noqa: E402
from lares_rl.recommender import Recommender  # noqa: E402
from lares_rl.tracking import progress_enabled  # noqa: E402

from benchmark_data import ROOT, load_benchmark_dataset  # noqa: E402
from results_io import command_line, machine_description, mean_std  # noqa: E402

SPLITS = ("valid", "test")


def settings(args: argparse.Namespace) -> list[dict]:
    """Every depth setting measured: fixed k first, then (k_max, tol) from the loosest tolerance."""
    fixed = [{"name": f"fixed k={k}", "k": k, "tol": None} for k in args.fixed_ks]
    halting = [{"name": f"halt tol={tol:g}, k_max={k_max}", "k": k_max, "tol": tol} for k_max in args.k_maxes for tol in sorted(args.tols, reverse=True)]
    return fixed + halting


def timed_eval(policy, data, split: str, max_len: int, setting: dict, repeats: int) -> dict:
    """Metrics, mean steps, the steps histogram and users/s (best of ``repeats`` full passes), in
    CPU time of this thread (torch runs on it alone) and in wall time: the machine is shared, so the
    wall clock also counts the time other processes held the core."""
    cfg = EvalConfig(k=setting["k"] if setting["tol"] is None else None, halt_tol=setting["tol"], halt_k_max=setting["k"] if setting["tol"] else None)
    cpu, best, best_wall = torch.device("cpu"), float("inf"), float("inf")
    for _ in range(repeats):
        steps: list[int] = []
        start, start_wall = time.thread_time(), time.perf_counter()
        metrics = evaluate_policy(policy, data, split, max_len, cfg, cpu, steps_out=steps)
        best, best_wall = min(best, time.thread_time() - start), min(best_wall, time.perf_counter() - start_wall)
    users = len(data.eval_inputs(split, max_len)[2])
    return {
        "ndcg@10": metrics["ndcg@10"], "recall@10": metrics["recall@10"], "mean_steps": metrics.get("mean_steps", float(setting["k"])),
        "steps_histogram": steps_histogram(steps) if steps else {setting["k"]: users}, "users_per_sec": users / best, "users_per_wall_sec": users / best_wall,
    }


def latency(path: str, data, max_len: int, setting: dict, calls: int) -> dict:
    """p50/p99 of ``recommend([one history])`` over ``calls`` real test histories (30 warm-up calls),
    in CPU time of this thread (what the call computes; the machine is shared) and in wall time."""
    rec = Recommender.from_checkpoint(path, device="cpu", k=setting["k"] if setting["tol"] is None else None, halt_tol=setting["tol"], k_max=setting["k"] if setting["tol"] else None)
    seqs, lengths, _ = data.eval_inputs("test", max_len)
    histories = [[str(data.item_ids[i]) for i in seqs[u, : lengths[u]].tolist()] for u in range(min(calls, len(lengths)))]
    torch.manual_seed(0)
    for history in histories[:30]:
        rec.recommend([history], top_k=10)
    times, walls, steps = [], [], []
    for history in histories:
        start, start_wall = time.thread_time(), time.perf_counter()
        [answer] = rec.recommend([history], top_k=10)
        times.append(time.thread_time() - start)
        walls.append(time.perf_counter() - start_wall)
        steps.append(answer.steps)
    return {"p50_ms": 1e3 * statistics.median(times), "p99_ms": 1e3 * _p99(times), "wall_p50_ms": 1e3 * statistics.median(walls), "wall_p99_ms": 1e3 * _p99(walls),
            "mean_steps": statistics.fmean(steps)}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def measure(args: argparse.Namespace) -> dict:
    data, dataset_cfg = load_benchmark_dataset(args.dataset, {})
    rows = []
    for path in args.checkpoints:
        payload = load_checkpoint(path)
        policy = policy_from_checkpoint(payload, torch.device("cpu"))
        max_len = int(payload["dataset"]["max_len"])
        for setting in settings(args):
            row = {"checkpoint": path, "setting": setting["name"], "k": setting["k"], "tol": setting["tol"]}
            for split in SPLITS:
                row[split] = timed_eval(policy, data, split, max_len, setting, args.repeats)
            row["latency"] = latency(path, data, max_len, setting, args.calls)
            rows.append(row)
            print(f"{Path(path).parts[-3]} {setting['name']}: valid ndcg@10 {row['valid']['ndcg@10']:.4f}, test ndcg@10 {row['test']['ndcg@10']:.4f}, "
                  f"steps {row['test']['mean_steps']:.2f}, {row['test']['users_per_sec']:,.0f} users/s, p50 {row['latency']['p50_ms']:.2f} ms", flush=True)
    return {"dataset": args.dataset, "dataset_config": dataset_cfg, "checkpoints": args.checkpoints, "machine": machine_description(), "rows": rows}


def summarise(record: dict, within: float) -> tuple[list[dict], dict | None]:
    """One summary per setting (means over checkpoints) and the recommended one (chosen on valid)."""
    names = list(dict.fromkeys(r["setting"] for r in record["rows"]))
    summary = []
    for name in names:
        rows = [r for r in record["rows"] if r["setting"] == name]
        entry = {"setting": name, "tol": rows[0]["tol"], "k": rows[0]["k"]}
        for split in SPLITS:
            for key in ("ndcg@10", "recall@10", "mean_steps", "users_per_sec"):
                entry[f"{split}_{key}"] = [r[split][key] for r in rows]
        for key in ("p50_ms", "p99_ms"):
            entry[key] = [r["latency"][key] for r in rows]
        summary.append(entry)
    reference = next(s for s in summary if s["setting"] == "fixed k=4")
    floor = (1 - within) * statistics.mean(reference["valid_ndcg@10"])
    eligible = [s for s in summary if s["tol"] is not None and statistics.mean(s["valid_ndcg@10"]) >= floor]
    chosen = min(eligible, key=lambda s: (statistics.mean(s["valid_mean_steps"]), -s["tol"])) if eligible else None
    return summary, chosen


def plot(summary: list[dict], path: Path, title: str) -> None:
    """Test NDCG@10 and recommend p50 latency against mean steps: fixed depths as one line, each
    halting cap as another."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    groups = {"fixed k": [s for s in summary if s["tol"] is None]}
    for k_max in sorted({s["k"] for s in summary if s["tol"] is not None}):
        groups[f"halting, k_max={k_max}"] = sorted([s for s in summary if s["tol"] is not None and s["k"] == k_max], key=lambda s: statistics.mean(s["test_mean_steps"]))
    for label, entries in groups.items():
        steps = [statistics.mean(s["test_mean_steps"]) for s in entries]
        marker = "s" if label == "fixed k" else "o"
        axes[0].plot(steps, [statistics.mean(s["test_ndcg@10"]) for s in entries], marker=marker, label=label)
        axes[1].plot(steps, [statistics.mean(s["p50_ms"]) for s in entries], marker=marker, label=label)
    axes[0].set_ylabel("test NDCG@10 (mean over checkpoints)")
    axes[1].set_ylabel("recommend p50 latency, 1 history (ms)")
    for ax in axes:
        ax.set_xlabel("mean reasoning steps per user (test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def markdown(record: dict, summary: list[dict], chosen: dict | None, within: float, plot_name: str) -> str:
    n = len(record["checkpoints"])
    lines = [
        f"# Adaptive reasoning depth on {record['dataset']}: cost against accuracy", "",
        f"Command: `{record['command']}`", "", f"Machine: {record['machine']}. Checkpoints ({n}): " + ", ".join(f"`{c}`" for c in record["checkpoints"]) + ".", "",
        "Full-ranking evaluation, no masking, eval seed 0 (T0 noise as the checkpoints evaluate by default). Halting: a user stops at the first "
        "step i >= 2 where ||h_i - h_{i-1}|| / ||h_i|| < tol, or at k_max. Users/s: the whole `evaluate_policy` pass, best of "
        f"{record['repeats']}. Latency: `Recommender.recommend([one history], top_k=10)`, one real test history per call, "
        f"{record['calls']} calls. Timings are CPU time of the one torch thread (the machine is shared by other jobs, so wall time "
        "also counts waiting for the core; the JSON has both). Cells: mean ± sample std over the {n} checkpoint(s).".replace("{n}", str(n)), "",
        "| setting | valid NDCG@10 | test NDCG@10 | test Recall@10 | mean steps (test) | eval users/s (test) | recommend p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['setting']} | {mean_std(s['valid_ndcg@10'])} | {mean_std(s['test_ndcg@10'])} | {mean_std(s['test_recall@10'])} | {statistics.mean(s['test_mean_steps']):.2f} "
            f"| {statistics.mean(s['test_users_per_sec']):,.0f} | {statistics.mean(s['p50_ms']):.2f} | {statistics.mean(s['p99_ms']):.2f} |"
        )
    reference = next(s for s in summary if s["setting"] == "fixed k=4")
    lines += ["", f"![cost against accuracy]({plot_name})", "", "## Recommended default (chosen on validation)", ""]
    if chosen is None:
        lines.append(f"No tolerance keeps the mean valid NDCG@10 within {100 * within:.1f}% of fixed k = 4; keep the fixed depth.")
    else:
        def change(key: str) -> str:
            return f"{100 * (statistics.mean(chosen[key]) / statistics.mean(reference[key]) - 1):+.1f}%"

        lines += [
            f"Rule: fewest mean valid steps among the settings whose mean valid NDCG@10 is at least {100 * (1 - within):.1f}% of fixed k = 4's. "
            f"Chosen: **{chosen['setting']}** (mean valid steps {statistics.mean(chosen['valid_mean_steps']):.2f}).", "",
            "| | fixed k=4 | " + chosen["setting"] + " | change |", "|---|---:|---:|---:|",
            f"| test NDCG@10 | {mean_std(reference['test_ndcg@10'])} | {mean_std(chosen['test_ndcg@10'])} | {change('test_ndcg@10')} |",
            f"| test Recall@10 | {mean_std(reference['test_recall@10'])} | {mean_std(chosen['test_recall@10'])} | {change('test_recall@10')} |",
            f"| mean steps (test) | 4.00 | {statistics.mean(chosen['test_mean_steps']):.2f} | {change('test_mean_steps')} |",
            f"| eval users/s (test) | {statistics.mean(reference['test_users_per_sec']):,.0f} | {statistics.mean(chosen['test_users_per_sec']):,.0f} | {change('test_users_per_sec')} |",
            f"| recommend p50 (ms) | {statistics.mean(reference['p50_ms']):.2f} | {statistics.mean(chosen['p50_ms']):.2f} | {change('p50_ms')} |",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--checkpoints", nargs="+", required=True)
    parser.add_argument("--fixed-ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--k-maxes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--tols", type=float, nargs="+", default=[0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05])
    parser.add_argument("--within", type=float, default=0.005, help="relative valid NDCG@10 loss allowed against fixed k=4 when choosing the default (default 0.005)")
    parser.add_argument("--repeats", type=int, default=3, help="timed evaluation passes per setting and split; the best counts (default 3)")
    parser.add_argument("--calls", type=int, default=200, help="single-history recommend calls per setting (default 200)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if 4 not in args.fixed_ks:
        raise SystemExit("error: --fixed-ks must include 4, the reference every setting is compared with")
    with progress_enabled(False):
        record = measure(args)
    record.update(command="OMP_NUM_THREADS=1 " + command_line("adaptive_depth.py", args, skip=("out",)), repeats=args.repeats, calls=args.calls)
    summary, chosen = summarise(record, args.within)
    record["recommended"] = None if chosen is None else {"tol": chosen["tol"], "k_max": chosen["k"]}
    stem = f"adaptive_depth_{args.dataset}"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"{stem}.json", record)
    plot(summary, args.out / f"{stem}.png", f"{args.dataset}: adaptive vs fixed depth ({len(args.checkpoints)} checkpoint(s), 1 thread)")
    text = markdown(record, summary, chosen, args.within, f"{stem}.png")
    atomic_write_text(args.out / f"{stem}.md", text)
    print(text, file=sys.stdout)


if __name__ == "__main__":
    main()
