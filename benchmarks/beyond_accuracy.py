"""Beyond-accuracy trade-off: RPT with accuracy + lambda * <beyond-accuracy reward> against
post-hoc re-ranking of the SPT model's scores, NDCG@10 against coverage@10 and novelty@10.

    OMP_NUM_THREADS=1 python benchmarks/beyond_accuracy.py --dataset ml-100k --seeds 0 1 2 \\
        --checkpoints A.pt B.pt C.pt --reward novelty --lambdas 0.5 1 2
    python benchmarks/beyond_accuracy.py --report docs/results/beyond_accuracy_ml-100k.json   # tables + PNG again from the JSON

Per seed (one SPT checkpoint each): the SPT model on validation and test with every
beyond-accuracy measure; the popularity-penalty and MMR re-rankings of its scores at every
``--pop-strengths`` / ``--mmr-strengths``; RPT (``configs/rpt/<--rpt>.yaml`` + ``--rpt-set``) with
``configs/reward/<--reward>.yaml`` at every ``--lambdas`` weight, keeping the epoch with the
highest validation coverage@10 whose validation NDCG@10 is within ``--tolerance`` of the start
(``rpt.select_metric`` / ``rpt.select_tolerance``). For each method one strength is then chosen
on validation only (most validation coverage@10 within the tolerance), and test is reported.
Writes JSON (one row per seed, merged under a lock, so seeds may run as separate processes), a
markdown page and a PNG beside it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch
from benchmark_data import add_dataset_arguments, config_file, fresh_rpt_run, key_values, load_benchmark_dataset, rpt_reward
from results_io import check_mergeable, command_line, machine_description, merge_seed, seed_commands, write_result_text

from lares_rl.core.checkpoint import check_same_data, load_checkpoint, policy_from_checkpoint
from lares_rl.core.config import section_from_mapping
from lares_rl.core.runtime import resolve_device
from lares_rl.core.tracking import progress_enabled
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.eval.exposure import build_item_context
from lares_rl.eval.rerank import mmr, popularity_penalty, reranked
from lares_rl.metrics.ranking import policy_score_fn
from lares_rl.rpt.config import RPTConfig

ROOT = Path(__file__).resolve().parents[1]
SHOWN = ("ndcg@10", "recall@10", "coverage@10", "novelty@10", "ild@10", "gini@10", "popularity@10")
METHODS = {"pop": "re-rank: popularity penalty", "mmr": "re-rank: MMR", "rpt": "RPT"}


def evaluate_both(policy, data, max_len: int, eval_cfg: EvalConfig, device, context, score_fn=None) -> dict:
    return {
        split: evaluate_policy(policy, data, split, max_len, eval_cfg, device, context=context, score_fn=score_fn)
        for split in ("valid", "test")
    }


def run_seed(seed: int, checkpoint: str, args, data, dataset_cfg: dict, device) -> dict:
    """Every method at every strength for one SPT checkpoint: ``{"spt", "pop", "mmr", "rpt"}``,
    each method a list of ``{"strength", "valid", "test"}``."""
    payload = load_checkpoint(checkpoint)
    check_same_data(payload, data, checkpoint)
    spt = policy_from_checkpoint(payload, device)
    spt.eval()
    max_len = int(payload["dataset"]["max_len"])
    context = build_item_context(
        data, {**dataset_cfg, "max_len": max_len}, spt
    )  # the checkpoint's max_len: exposure is scored as the model was trained
    eval_cfg = EvalConfig()
    row = {
        "seed": seed,
        "spt_checkpoint": checkpoint,
        "ild_from": context.features()[1],
        "spt": evaluate_both(spt, data, max_len, eval_cfg, device, context),
    }
    base = policy_score_fn(spt)
    rerankers = {
        "pop": lambda strength: lambda scores: popularity_penalty(scores, context.popularity, strength),
        "mmr": lambda strength: lambda scores: mmr(scores, context.features()[0], strength),
    }
    for method, strengths in (("pop", args.pop_strengths), ("mmr", args.mmr_strengths)):
        row[method] = [
            {"strength": s, **evaluate_both(spt, data, max_len, eval_cfg, device, context, reranked(base, rerankers[method](s)))}
            for s in strengths
        ]
        print(
            f"[bench] seed {seed}: {method} "
            + ", ".join(f"{r['strength']}: ndcg {r['test']['ndcg@10']:.4f} cov {r['test']['coverage@10']:.4f}" for r in row[method]),
            flush=True,
        )
    rpt_values = config_file(
        "rpt", args.rpt, {"select_metric": "coverage@10", "select_tolerance": args.tolerance} | key_values(args.rpt_set)
    )
    rpt_cfg = section_from_mapping(RPTConfig, rpt_values, "rpt")
    row["rpt"] = []
    for weight in args.lambdas:
        reward_fn = rpt_reward(
            rpt_values, args.reward, {"weights": {args.reward: weight}} | key_values(args.reward_set), data.num_items, context
        )
        policy = copy.deepcopy(spt)
        result = fresh_rpt_run(
            policy=policy,
            payload=payload,
            data=data,
            max_len=max_len,
            cfg=rpt_cfg,
            reward_fn=reward_fn,
            eval_cfg=eval_cfg,
            run_dir=Path(args.runs_dir) / f"beyond_{args.dataset}" / f"{args.reward}_{weight}_seed{seed}",
            device=device,
            seed=seed,
            dataset_cfg=dataset_cfg,
            runs_dir=args.runs_dir,
            item_context=context,
        )
        summary = result["rpt"]
        row["rpt"].append(
            {
                "strength": weight,
                "valid": result["after"]["valid"],
                "test": result["after"]["test"],
                "best_epoch": summary["best_epoch"],
                "epochs_run": summary["epochs_run"],
                "seconds": summary["seconds"],
                "valid_ndcg_per_epoch": summary["valid_ndcg_per_epoch"],
                "valid_coverage_per_epoch": summary["valid_selection_per_epoch"],
                "reward_per_epoch": summary["reward_per_epoch"],
            }
        )
        print(
            f"[bench] seed {seed}: rpt lambda {weight}: best epoch {summary['best_epoch']}, test ndcg {result['after']['test']['ndcg@10']:.4f} cov {result['after']['test']['coverage@10']:.4f} ({summary['seconds']:.0f}s)",
            flush=True,
        )
    return row


def chosen(row: dict, method: str, tolerance: float) -> dict:
    """The method's strength picked on validation: the most validation coverage@10 among the
    settings whose validation NDCG@10 lost at most ``tolerance`` against the SPT model's (the SPT
    model itself, strength 0, when none qualifies)."""
    floor = (1.0 - tolerance) * row["spt"]["valid"]["ndcg@10"]
    fallback = {"strength": 0, "valid": row["spt"]["valid"], "test": row["spt"]["test"]}
    return max([fallback] + [r for r in row[method] if r["valid"]["ndcg@10"] >= floor], key=lambda r: r["valid"]["coverage@10"])


def mean(values: list[float]) -> float:
    return statistics.mean(values)


def relative(value: float, start: float) -> str:
    return f"{value / start - 1:+.1%}" if start else "n/a"


def curve(rows: list[dict], method: str) -> list[dict]:
    """Test metrics averaged over seeds at each strength of ``method`` (strength 0 = the SPT model)."""
    strengths = [r["strength"] for r in rows[0][method]]
    points = [{"strength": 0, **{m: mean([row["spt"]["test"][m] for row in rows]) for m in SHOWN}}]
    for i, strength in enumerate(strengths):
        points.append({"strength": strength, **{m: mean([row[method][i]["test"][m] for row in rows]) for m in SHOWN}})
    return points


def best_at_least(points: list[dict], ndcg: float, metric: str) -> float | None:
    """The most ``metric`` any point of a re-ranking curve (strength 0 = the SPT model) reaches at
    a test NDCG@10 of at least ``ndcg``; None when no point is that accurate."""
    qualifying = [p[metric] for p in points if p["ndcg@10"] >= ndcg]
    return max(qualifying) if qualifying else None


def markdown(record: dict) -> str:
    rows, tol = record["seeds"], record["tolerance"]
    spt = {m: mean([r["spt"]["test"][m] for r in rows]) for m in SHOWN}
    lines = [
        f"# Beyond accuracy on {record['dataset']}: RPT (reward {record['reward']}) against re-ranking",
        "",
        f"Command: `{seed_commands(record)}`",
        "",
        f"Machine: {record['machine']}",
        "",
        f"Seeds: {', '.join(str(r['seed']) for r in rows)} (one LARES-SPT checkpoint each, the paths in the command; test numbers are means over seeds).",
        f"ILD@10 is measured with {rows[0]['ild_from']}. Novelty@10: mean -log2 of the smoothed training share of the recommended items;",
        "popularity@10: their mean training count; Gini@10: of how often each item is recommended (lares_rl/beyond_metrics.py).",
        "",
        "RPT settings: " + ", ".join(f"{k}={v}" for k, v in record["rpt"].items()),
        "",
        f"## Chosen on validation (most validation coverage@10 with at most {tol:.0%} validation NDCG@10 loss), reported on test",
        "",
        "| method | strength per seed | " + " | ".join(f"test {m}" for m in SHOWN) + " | coverage@10 vs SPT | NDCG@10 vs SPT |",
        "|---|---|" + "---:|" * (len(SHOWN) + 2),
        "| LARES-SPT | - | " + " | ".join(f"{spt[m]:.1f}" if m.startswith("popularity") else f"{spt[m]:.4f}" for m in SHOWN) + " | | |",
    ]
    for method, label in METHODS.items():
        picks = [chosen(r, method, tol) for r in rows]
        values = {m: mean([p["test"][m] for p in picks]) for m in SHOWN}
        lines.append(
            f"| {label} | {', '.join(str(p['strength']) for p in picks)} | "
            + " | ".join(f"{values[m]:.1f}" if m.startswith("popularity") else f"{values[m]:.4f}" for m in SHOWN)
            + f" | {relative(values['coverage@10'], spt['coverage@10'])} | {relative(values['ndcg@10'], spt['ndcg@10'])} |"
        )
    lines += [
        "",
        "## Every strength (test, mean over seeds)",
        "",
        "| method | strength | " + " | ".join(SHOWN) + " |",
        "|---|---:|" + "---:|" * len(SHOWN),
    ]
    curves = {method: curve(rows, method) for method in METHODS}
    for method, points in curves.items():
        for p in points[1:]:
            lines.append(
                f"| {METHODS[method]} | {p['strength']} | "
                + " | ".join(f"{p[m]:.1f}" if m.startswith("popularity") else f"{p[m]:.4f}" for m in SHOWN)
                + " |"
            )
    lines += [
        "",
        "## RPT against re-ranking at no less test NDCG@10",
        "",
        "| RPT lambda | RPT NDCG@10 | RPT coverage@10 | best re-rank coverage@10 at >= that NDCG@10 | RPT novelty@10 | best re-rank novelty@10 at >= that NDCG@10 | RPT ahead on |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in curves["rpt"][1:]:
        rerank = {
            m: [v for v in (best_at_least(curves["pop"], p["ndcg@10"], m), best_at_least(curves["mmr"], p["ndcg@10"], m)) if v is not None]
            for m in ("coverage@10", "novelty@10")
        }
        best = {m: max(values) if values else None for m, values in rerank.items()}
        ahead = [m for m in best if best[m] is None or p[m] > best[m]]
        shown = {m: "none that accurate" if best[m] is None else f"{best[m]:.4f}" for m in best}
        lines.append(
            f"| {p['strength']} | {p['ndcg@10']:.4f} | {p['coverage@10']:.4f} | {shown['coverage@10']} | {p['novelty@10']:.4f} | {shown['novelty@10']} | {', '.join(ahead) or 'neither'} |"
        )
    lines += [
        "",
        "*best re-rank*: over both re-rankings and every strength (strength 0 = the SPT model itself), the most the measure reaches",
        "while keeping at least RPT's test NDCG@10; RPT is ahead where it beats that. \"none that accurate\": no re-ranking reaches RPT's NDCG@10.",
        "",
        f"![NDCG@10 against coverage@10 and novelty@10]({record['plot_name']})",
        "",
    ]
    return "\n".join(lines)


def write_plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["seeds"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("coverage@10", "novelty@10")):
        for method, marker in (("pop", "s"), ("mmr", "^"), ("rpt", "o")):
            points = curve(rows, method)
            axis.plot([p[metric] for p in points], [p["ndcg@10"] for p in points], marker=marker, label=METHODS[method])
            for p in points[1:]:
                axis.annotate(str(p["strength"]), (p[metric], p["ndcg@10"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        start = curve(rows, "pop")[0]
        axis.scatter([start[metric]], [start["ndcg@10"]], color="black", zorder=5, label="LARES-SPT")
        axis.axhline((1 - record["tolerance"]) * start["ndcg@10"], linestyle=":", color="grey", label=f"-{record['tolerance']:.0%} NDCG@10")
        axis.set(xlabel=f"test {metric}", ylabel="test NDCG@10", title=f"{record['dataset']}: NDCG@10 against {metric}")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def publish(record: dict, out: Path) -> None:
    write_plot(record, out.with_suffix(".png"))
    write_result_text(out.with_suffix(".md"), markdown(record))
    print(markdown(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="*", default=[], help="one SPT checkpoint per seed (same order as --seeds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    add_dataset_arguments(parser)
    parser.add_argument("--rpt", default="latent_pg", help="a file name in configs/rpt/")
    parser.add_argument("--rpt-set", nargs="*", default=[], help="rpt overrides key=value (the budget), e.g. batches_per_epoch=10 epochs=6")
    parser.add_argument("--reward", default="novelty", help="a weighted file in configs/reward/ whose beyond-accuracy term has this name")
    parser.add_argument("--reward-set", nargs="*", default=[], help="reward overrides key=value, e.g. terms.novelty.k=20")
    parser.add_argument(
        "--lambdas", type=float, nargs="*", default=[0.5, 1.0, 2.0], help="weights of the beyond-accuracy term (NDCG keeps weight 1)"
    )
    parser.add_argument("--pop-strengths", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.5, 0.75, 1.0])
    parser.add_argument("--mmr-strengths", type=float, nargs="*", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--tolerance", type=float, default=0.03, help="accepted relative validation NDCG@10 loss when choosing a strength")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", default=None, help="report path without suffix (default docs/results/beyond_accuracy_<dataset>; .json/.md/.png)"
    )
    parser.add_argument("--report", default=None, help="only rewrite the page and PNG from this JSON")
    parser.add_argument(
        "--runs-dir", default=str(ROOT / "benchmarks" / "runs"), help="RPT checkpoints go under <runs-dir>/beyond_<dataset>/"
    )
    args = parser.parse_args()
    if args.report:
        import json

        publish(json.loads(Path(args.report).read_text()), Path(args.report))
        return
    if len(args.checkpoints) != len(args.seeds):
        parser.error(f"--checkpoints gives {len(args.checkpoints)} files for {len(args.seeds)} seeds")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data, dataset_cfg = load_benchmark_dataset(args.dataset, key_values(args.dataset_set), args.beauty_path)
    out = Path(args.out or ROOT / "docs" / "results" / f"beyond_accuracy_{args.dataset}").with_suffix(".json")
    rpt_values = config_file(
        "rpt", args.rpt, {"select_metric": "coverage@10", "select_tolerance": args.tolerance} | key_values(args.rpt_set)
    )
    record = {
        "dataset": args.dataset,
        "reward": args.reward,
        "rpt": rpt_values,
        "tolerance": args.tolerance,
        "machine": machine_description(device),
        "plot_name": out.with_suffix(".png").name,
        "command": command_line("beyond_accuracy.py", args, skip=("out", "runs_dir", "beauty_path", "report")),
    }
    same = ("dataset", "reward", "rpt", "tolerance")
    check_mergeable(out, record, same)
    with progress_enabled(False):
        for seed, checkpoint in zip(args.seeds, args.checkpoints):
            row = run_seed(seed, checkpoint, args, data, dataset_cfg, device)
            merged = merge_seed(out, record, row, same)
    publish(merged, out)


if __name__ == "__main__":
    main()
