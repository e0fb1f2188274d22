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
import json
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from benchmark_data import ROOT, add_dataset_arguments, key_values, load_benchmark_dataset  # noqa: E402
from results_io import command_line, machine_description, mean_std, write_result_json, write_result_text  # noqa: E402

from lares_rl.core.checkpoint import check_same_data, load_checkpoint, policy_from_checkpoint  # noqa: E402
from lares_rl.core.tracking import progress_enabled  # noqa: E402
from lares_rl.eval.adaptive_depth import steps_histogram  # noqa: E402
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy  # noqa: E402
from lares_rl.serve.recommender import Recommender  # noqa: E402

SPLITS = ("valid", "test")


def settings(args: argparse.Namespace) -> list[dict]:
    """Every depth setting measured: fixed k first, then (k_max, tol) from the loosest tolerance."""
    fixed = [{"name": f"fixed k={k}", "k": k, "tol": None} for k in args.fixed_ks]
    halting = [
        {"name": f"halt tol={tol:g}, k_max={k_max}", "k": k_max, "tol": tol}
        for k_max in args.k_maxes
        for tol in sorted(args.tols, reverse=True)
    ]
    return fixed + halting


def _config(setting: dict) -> EvalConfig:
    if setting["tol"] is None:
        return EvalConfig(k=setting["k"])
    return EvalConfig(halt_tol=setting["tol"], halt_k_max=setting["k"])


def _recommender(path: str, setting: dict) -> Recommender:
    fixed = setting["tol"] is None
    return Recommender.from_checkpoint(
        path, device="cpu", k=setting["k"] if fixed else None, halt_tol=setting["tol"], k_max=None if fixed else setting["k"]
    )


def quality(policy, data, max_len: int, setting: dict) -> dict:
    """NDCG@10, Recall@10, mean steps and the steps histogram on valid and test."""
    out = {}
    for split in SPLITS:
        steps: list[int] = []
        metrics = evaluate_policy(policy, data, split, max_len, _config(setting), torch.device("cpu"), steps_out=steps)
        users = len(data.eval_inputs(split, max_len)[2])
        out[split] = {
            "ndcg@10": metrics["ndcg@10"],
            "recall@10": metrics["recall@10"],
            "mean_steps": metrics.get("mean_steps", float(setting["k"])),
            "steps_histogram": steps_histogram(steps) if steps else {setting["k"]: users},
        }
    return out


def _clock(fn) -> tuple[float, float, object]:
    """(CPU seconds of this thread, wall seconds, result): torch runs on this one thread, and the
    machine is shared, so wall time also counts the time other processes held the core."""
    start, start_wall = time.thread_time(), time.perf_counter()
    out = fn()
    return time.thread_time() - start, time.perf_counter() - start_wall, out


def timings(path: str, policy, data, max_len: int, all_settings: list[dict], repeats: int, calls: int) -> dict[str, dict]:
    """Test-split users/s and single-history recommend latency for every setting, INTERLEAVED:
    each round times every setting once, and each history is answered under every setting back to
    back, so a change in the machine's load hits all settings alike (medians over rounds/calls)."""
    cpu, users = torch.device("cpu"), len(data.eval_inputs("test", max_len)[2])
    passes: dict[str, list[tuple[float, float]]] = {s["name"]: [] for s in all_settings}
    for _ in range(repeats):
        for setting in all_settings:
            seconds, wall, _ = _clock(lambda: evaluate_policy(policy, data, "test", max_len, _config(setting), cpu))
            passes[setting["name"]].append((seconds, wall))
    recs = {s["name"]: _recommender(path, s) for s in all_settings}
    seqs, lengths, _ = data.eval_inputs("test", max_len)
    histories = [[str(data.item_ids[i]) for i in seqs[u, : lengths[u]].tolist()] for u in range(min(calls, len(lengths)))]
    torch.manual_seed(0)
    for rec in recs.values():  # warm-up
        for history in histories[:20]:
            rec.recommend([history], top_k=10)
    calls_by: dict[str, list[tuple[float, float, int]]] = {name: [] for name in recs}
    for history in histories:
        for name, rec in recs.items():
            seconds, wall, answer = _clock(lambda: rec.recommend([history], top_k=10))
            calls_by[name].append((seconds, wall, answer[0].steps))
    out = {}
    for name in recs:
        cpu_s, wall_s = zip(*passes[name])
        times, walls, steps = zip(*calls_by[name])
        out[name] = {
            "users_per_sec": users / statistics.median(cpu_s),
            "users_per_wall_sec": users / statistics.median(wall_s),
            "p50_ms": 1e3 * statistics.median(times),
            "p99_ms": 1e3 * _p99(list(times)),
            "wall_p50_ms": 1e3 * statistics.median(walls),
            "wall_p99_ms": 1e3 * _p99(list(walls)),
            "recommend_mean_steps": statistics.fmean(steps),
        }
    return out


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


@torch.no_grad()
def contraction(policy, data, max_len: int, k: int = 8) -> list[dict]:
    """Per step i >= 2, quantiles over test users of ||h_i - h_{i-1}|| / ||h_i|| (eval seed 0):
    how fast, and how uniformly across users, the recurrence settles."""
    seqs, lengths, _ = data.eval_inputs("test", max_len)
    policy.eval()
    changes = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for start in range(0, len(lengths), 1024):
            states = policy.encode(seqs[start : start + 1024], lengths[start : start + 1024], k=k)
            changes.append((states[:, 1:] - states[:, :-1]).norm(dim=-1) / states[:, 1:].norm(dim=-1))
    change = torch.cat(changes)
    quantiles = torch.tensor([0.1, 0.5, 0.9])
    return [{"step": i + 2, **dict(zip(("q10", "q50", "q90"), change[:, i].quantile(quantiles).tolist()))} for i in range(k - 1)]


def measure(args: argparse.Namespace) -> dict:
    data, dataset_cfg = load_benchmark_dataset(args.dataset, key_values(args.dataset_set), args.beauty_path)
    rows, contractions = [], {}
    all_settings = settings(args)
    for path in args.checkpoints:
        payload = load_checkpoint(path)
        check_same_data(payload, data, path)
        policy = policy_from_checkpoint(payload, torch.device("cpu"))
        max_len = int(payload["dataset"]["max_len"])
        contractions[path] = contraction(policy, data, max_len)
        timed = timings(path, policy, data, max_len, all_settings, args.repeats, args.calls)
        for setting in all_settings:
            row = {
                "checkpoint": path,
                "setting": setting["name"],
                "k": setting["k"],
                "tol": setting["tol"],
                **quality(policy, data, max_len, setting),
            }
            row["test"].update(timed[setting["name"]])
            rows.append(row)
            print(
                f"{path}: {setting['name']}: valid ndcg@10 {row['valid']['ndcg@10']:.4f}, test ndcg@10 {row['test']['ndcg@10']:.4f}, "
                f"steps {row['test']['mean_steps']:.2f}, {row['test']['users_per_sec']:,.0f} users/s, p50 {row['test']['p50_ms']:.2f} ms",
                flush=True,
            )
    return {
        "dataset": args.dataset,
        "dataset_config": dataset_cfg,
        "checkpoints": args.checkpoints,
        "machine": machine_description(),
        "rows": rows,
        "contraction": contractions,
    }


def summarise(record: dict, within: float) -> tuple[list[dict], dict | None]:
    """One summary per setting (means over checkpoints) and the recommended one (chosen on valid)."""
    names = list(dict.fromkeys(r["setting"] for r in record["rows"]))
    summary = []
    for name in names:
        rows = [r for r in record["rows"] if r["setting"] == name]
        entry = {"setting": name, "tol": rows[0]["tol"], "k": rows[0]["k"]}
        for split in SPLITS:
            for key in ("ndcg@10", "recall@10", "mean_steps"):
                entry[f"{split}_{key}"] = [r[split][key] for r in rows]
        entry["test_users_per_sec"] = [r["test"]["users_per_sec"] for r in rows]
        for key in ("p50_ms", "p99_ms"):
            entry[key] = [r["test"][key] for r in rows]
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
        groups[f"halting, k_max={k_max}"] = sorted(
            [s for s in summary if s["tol"] is not None and s["k"] == k_max], key=lambda s: statistics.mean(s["test_mean_steps"])
        )
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
        f"# Adaptive reasoning depth on {record['dataset']}: cost against accuracy",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {record['machine']}. Checkpoints ({n}): " + ", ".join(f"`{c}`" for c in record["checkpoints"]) + ".",
        *(["", f"**Note:** {record['note']}"] if record.get("note") else []),
        "",
        "Full-ranking evaluation, no masking, eval seed 0 (T0 noise as the checkpoints evaluate by default). Halting: a user stops at the first "
        "step i >= 2 where ||h_i - h_{i-1}|| / ||h_i|| < tol, or at k_max. Users/s: the whole `evaluate_policy` pass on test, median of "
        f"{record['repeats']} rounds that time every setting once each. Latency: `Recommender.recommend([one history], top_k=10)`, "
        f"{record['calls']} real test histories, each answered under every setting back to back. Timings are CPU time of the one "
        "torch thread: the machine is shared by other jobs, so wall time also counts waiting for the core (the JSON has both). "
        f"Cells: mean ± sample std over the {n} checkpoint(s).",
        "",
        "| setting | valid NDCG@10 | test NDCG@10 | test Recall@10 | mean steps (test) | eval users/s (test) | recommend p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['setting']} | {mean_std(s['valid_ndcg@10'])} | {mean_std(s['test_ndcg@10'])} | {mean_std(s['test_recall@10'])} | {statistics.mean(s['test_mean_steps']):.2f} "
            f"| {statistics.mean(s['test_users_per_sec']):,.0f} | {statistics.mean(s['p50_ms']):.2f} | {statistics.mean(s['p99_ms']):.2f} |"
        )
    reference = next(s for s in summary if s["setting"] == "fixed k=4")
    lines += [
        "",
        f"![cost against accuracy]({plot_name})",
        "",
        "## How the recurrence settles",
        "",
        "Relative change of the last-position state per step, ||h_i - h_{i-1}|| / ||h_i||, over test users (fixed k = 8, eval seed 0; "
        "mean over the checkpoints of each quantile). A per-user rule can only save where users differ: a narrow q10-q90 band "
        "means nearly every user crosses a given tolerance at the same step.",
        "",
        "| step i | q10 | median | q90 |",
        "|---:|---:|---:|---:|",
    ]
    per_step = list(zip(*record["contraction"].values()))
    for entries in per_step:
        lines.append(
            f"| {entries[0]['step']} | " + " | ".join(f"{statistics.mean(e[q] for e in entries):.3f}" for q in ("q10", "q50", "q90")) + " |"
        )
    lines += ["", "## Recommended default (chosen on validation)", ""]
    if chosen is None:
        lines.append(f"No tolerance keeps the mean valid NDCG@10 within {100 * within:.1f}% of fixed k = 4; keep the fixed depth.")
    else:

        def change(key: str) -> str:
            return f"{100 * (statistics.mean(chosen[key]) / statistics.mean(reference[key]) - 1):+.1f}%"

        lines += [
            f"Rule: fewest mean valid steps among the settings whose mean valid NDCG@10 is at least {100 * (1 - within):.1f}% of fixed k = 4's. "
            f"Chosen: **{chosen['setting']}** (mean valid steps {statistics.mean(chosen['valid_mean_steps']):.2f}).",
            "",
            "| | fixed k=4 | " + chosen["setting"] + " | change |",
            "|---|---:|---:|---:|",
            f"| test NDCG@10 | {mean_std(reference['test_ndcg@10'])} | {mean_std(chosen['test_ndcg@10'])} | {change('test_ndcg@10')} |",
            f"| test Recall@10 | {mean_std(reference['test_recall@10'])} | {mean_std(chosen['test_recall@10'])} | {change('test_recall@10')} |",
            f"| mean steps (test) | 4.00 | {statistics.mean(chosen['test_mean_steps']):.2f} | {change('test_mean_steps')} |",
            f"| eval users/s (test) | {statistics.mean(reference['test_users_per_sec']):,.0f} | {statistics.mean(chosen['test_users_per_sec']):,.0f} | {change('test_users_per_sec')} |",
            f"| recommend p50 (ms) | {statistics.mean(reference['p50_ms']):.2f} | {statistics.mean(chosen['p50_ms']):.2f} | {change('p50_ms')} |",
        ]
    lines += ["", *target_lines(summary, reference)]
    return "\n".join(lines) + "\n"


def target_lines(summary: list[dict], reference: dict) -> list[str]:
    """Issue 20's target, read off the test columns (reporting only; nothing is selected on it):
    at most half the steps of k = 4 at a test NDCG@10 within 0.5% of fixed k = 4."""
    base = statistics.mean(reference["test_ndcg@10"])
    halting = [s for s in summary if s["tol"] is not None]

    def describe(s: dict) -> str:
        return (
            f"{s['setting']}: {statistics.mean(s['test_mean_steps']):.2f} mean steps ({100 * statistics.mean(s['test_mean_steps']) / 4:.0f}% of k = 4), "
            f"test NDCG@10 {100 * (statistics.mean(s['test_ndcg@10']) / base - 1):+.1f}%"
        )

    met = [s for s in halting if statistics.mean(s["test_mean_steps"]) <= 2.0 and statistics.mean(s["test_ndcg@10"]) >= 0.995 * base]
    lines = ["## Target: at most half the steps of k = 4 at a test NDCG@10 within 0.5% of it", ""]
    if met:
        return lines + ["Met by " + "; ".join(describe(s) for s in met) + "."]
    close = [s for s in halting if statistics.mean(s["test_ndcg@10"]) >= 0.995 * base]
    fewest = min(halting, key=lambda s: statistics.mean(s["test_mean_steps"]), default=None)
    lines += [
        "Not met. A user takes at least 2 steps (the first step with a change to measure), so half of k = 4 needs every user to stop at step 2.",
        "",
    ]
    if close:
        lines.append(
            f"- Fewest steps within 0.5% of fixed k = 4's test NDCG@10: {describe(min(close, key=lambda s: statistics.mean(s['test_mean_steps'])))}."
        )
    if fewest is not None:
        lines.append(f"- Fewest steps measured: {describe(fewest)}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--checkpoints", nargs="+", help="checkpoints to measure (required unless --render)")
    parser.add_argument("--fixed-ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--k-maxes", type=int, nargs="+", default=[4])
    parser.add_argument("--tols", type=float, nargs="+", default=[0.6, 0.55, 0.5, 0.45, 0.3, 0.25, 0.2, 0.1])
    parser.add_argument(
        "--within",
        type=float,
        default=0.005,
        help="relative valid NDCG@10 loss allowed against fixed k=4 when choosing the default (default 0.005)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of timed test passes; the median counts (default 3)")
    parser.add_argument("--calls", type=int, default=200, help="single-history recommend calls per setting (default 200)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="re-write the markdown and plot from this JSON (written by an earlier run) without measuring",
    )
    parser.add_argument(
        "--note",
        default=None,
        help="a sentence for the report about the checkpoints (e.g. that one was a snapshot of a run still training)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.render is not None:
        record = json.loads(args.render.read_text())
    else:
        if not args.checkpoints:
            raise SystemExit("error: --checkpoints is required (or --render <json> to re-write a report)")
        if 4 not in args.fixed_ks:
            raise SystemExit("error: --fixed-ks must include 4, the reference every setting is compared with")
        with progress_enabled(False):
            record = measure(args)
        record.update(
            command="OMP_NUM_THREADS=1 " + command_line("adaptive_depth.py", args, skip=("out", "note")),
            repeats=args.repeats,
            calls=args.calls,
            within=args.within,
        )
    if args.note is not None:
        record["note"] = args.note
    summary, chosen = summarise(record, record["within"])
    record["recommended"] = None if chosen is None else {"tol": chosen["tol"], "k_max": chosen["k"]}
    stem = f"adaptive_depth_{record['dataset']}"
    args.out.mkdir(parents=True, exist_ok=True)
    write_result_json(args.out / f"{stem}.json", record)
    plot(
        summary,
        args.out / f"{stem}.png",
        f"{record['dataset']}: adaptive vs fixed depth ({len(record['checkpoints'])} checkpoint(s), 1 thread)",
    )
    text = markdown(record, summary, chosen, record["within"], f"{stem}.png")
    write_result_text(args.out / f"{stem}.md", text)
    print(text, file=sys.stdout)


if __name__ == "__main__":
    main()
