"""RPT from SPT checkpoints over several seeds with the reference settings: quality before/after and speed.

    OMP_NUM_THREADS=1 python benchmarks/rpt_benchmark.py --checkpoints A.pt B.pt C.pt     # one SPT checkpoint per seed
    OMP_NUM_THREADS=1 python benchmarks/rpt_benchmark.py --spt-epochs 200                 # train SPT first (DESIGN defaults)
    # a smoke run on tiny data, writing outside docs/ (tests/test_benchmarks.py runs the chain this way):
    python benchmarks/rpt_benchmark.py --dataset custom --dataset-set path=log.csv user_col=uid item_col=sku time_col=ts max_len=8 \\
        --policy-set d_model=16 inner_size=32 --spt-epochs 2 --rpt-set epochs=1 --seeds 0 --out /tmp/rpt.md

Per seed: the SPT checkpoint (given, or trained here with early stopping), validation and test
metrics before RPT, RPT with ``configs/rpt/<--rpt>.yaml`` (reference: grpo) plus ``--rpt-set``
overrides, then validation and test metrics of the best RPT checkpoint. Writes a markdown report
(table per seed + mean, throughput of collection and of the whole RPT loop in frames/s, the
machine), a PNG with the training reward and validation NDCG@10 per RPT epoch, and the raw JSON
next to the report. Checkpoints go under ``--runs-dir`` (default benchmarks/runs/, not committed).
Ctrl-C saves the running seed's RPT state; the same command with ``--seeds <s> --resume``
continues it (a full-budget Beauty seed is most of an hour).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from benchmark_data import add_dataset_arguments, config_file, fresh_rpt_run, key_values, load_benchmark_dataset, rpt_reward
from results_io import check_mergeable, command_line, machine_description, mean_std, merge_seed, seed_commands, write_result_text
from seed_resume import interruption_names_resume, resumable

from lares_rl.core.allocator import keep_freed_memory
from lares_rl.core.checkpoint import build_policy, check_same_data, load_checkpoint, policy_from_checkpoint
from lares_rl.core.config import section_from_mapping
from lares_rl.core.runtime import resolve_device, seed_everything
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.rewards import describe_reward
from lares_rl.rpt.config import RPTConfig
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.train import train_spt

ROOT = Path(__file__).resolve().parents[1]
SHOWN = ("ndcg@10", "recall@10")


def spt_checkpoint(seed: int, args, data, dataset_cfg: dict, policy_cfg: dict, max_len: int, device: torch.device, run_root: Path) -> str:
    """The seed's SPT checkpoint: given on the command line, or trained now with DESIGN defaults."""
    if args.checkpoints:
        return args.checkpoints[args.seeds.index(seed)]
    seed_everything(seed)
    policy = build_policy(policy_cfg, data.num_items, max_len)
    spt_cfg = section_from_mapping(SPTConfig, {"epochs": args.spt_epochs}, "spt")
    summary = train_spt(
        policy=policy,
        policy_config=policy_cfg,
        data=data,
        max_len=max_len,
        cfg=spt_cfg,
        eval_cfg=EvalConfig(),
        run_dir=run_root / f"spt_seed{seed}",
        device=device,
        seed=seed,
        config={"dataset": dataset_cfg, "policy": policy_cfg},
        progress=False,
    )
    return summary["checkpoint"]


def write_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 3.6))
    for row in rows:
        epochs = range(1, len(row["rpt"]["reward_per_epoch"]) + 1)
        left.plot(epochs, row["rpt"]["reward_per_epoch"], marker="o", label=f"seed {row['seed']}")
        curve = row["rpt"].get("probe_curve", [])
        middle.plot([p["histories"] for p in curve], [p["reward"] for p in curve], label=f"seed {row['seed']}")
        right.plot(epochs, row["rpt"]["valid_ndcg_per_epoch"], marker="o", label=f"seed {row['seed']}")
        right.axhline(row["before"]["valid"]["ndcg@10"], linestyle=":", color=right.lines[-1].get_color())
    left.set(xlabel="RPT epoch", ylabel="mean training reward (rollouts)", title="training reward")
    middle.set(xlabel="histories trained on", ylabel="greedy reward on the fixed probe", title="probe-set reward")
    right.set(xlabel="RPT epoch", ylabel="valid NDCG@10", title="validation (dotted: SPT)")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in (left, middle, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learning_cells(summary: dict) -> str:
    """The zero-advantage group share and the fixed probe's greedy reward at the start and the end."""
    zero = summary.get("zero_adv_group_fraction")
    curve = summary.get("probe_curve") or []
    probe = f"{curve[0]['reward']:.4f} -> {curve[-1]['reward']:.4f}" if curve else "n/a"
    return f"{zero:.1%} | {probe}" if zero is not None else f"n/a | {probe}"


def markdown(record: dict) -> str:
    rows = record["seeds"]
    header = (
        "| seed | "
        + " | ".join(f"{split} {m} SPT -> RPT" for split in ("valid", "test") for m in SHOWN)
        + " | kept rows | epochs to best | zero-adv groups | probe reward start -> end | collect frames/s | loop frames/s |"
    )
    lines = [
        f"# RPT on {record['dataset']} ({record['rpt']['algorithm']}, reward {record['reward']})",
        "",
        f"Command: `{seed_commands(record)}`",
        "",
        f"Machine: {record['machine']}",
        "",
        "RPT settings: " + ", ".join(f"{k}={v}" for k, v in record["rpt"].items()),
        "",
        header,
        "|---|" + "---:|" * (len(SHOWN) * 2 + 6),
    ]
    for row in rows:
        cells = [f"{row['before'][split][m]:.4f} -> {row['after'][split][m]:.4f}" for split in ("valid", "test") for m in SHOWN]
        lines.append(
            f"| {row['seed']} | "
            + " | ".join(cells)
            + f" | {row['rpt']['kept_rows']} ({row['rpt']['kept_fraction']:.1%}) | {row['rpt']['best_epoch'] + 1} | {learning_cells(row['rpt'])} | {row['rpt']['collect_frames_per_sec']:.0f} | {row['rpt']['loop_frames_per_sec']:.0f} |"
        )
    if len(rows) > 1:
        cells = [
            f"{mean_std([r['before'][s][m] for r in rows])} -> {mean_std([r['after'][s][m] for r in rows])}"
            for s in ("valid", "test")
            for m in SHOWN
        ]
        lines.append(
            "| mean ± std | "
            + " | ".join(cells)
            + f" | | | | | {statistics.mean(r['rpt']['collect_frames_per_sec'] for r in rows):.0f} | {statistics.mean(r['rpt']['loop_frames_per_sec'] for r in rows):.0f} |"
        )
    lines += [
        "",
        "Frames = rollouts (one history x one of its G rollouts). *collect*: the TorchRL Collector alone (env + actor);",
        "*loop*: collection + group advantage + frozen-reference pass + the gradient step. Validation time is excluded.",
        "*epochs to best* 0: no RPT epoch beat the SPT weights on validation NDCG@10, so RPT kept them.",
        "*zero-adv groups*: share of groups whose G rollouts all got the same reward (no gradient signal);",
        "*probe reward*: the evaluation-mode reward on a fixed set of kept training histories, before RPT and at the last probe.",
        "",
        "Time per batch (collect / advantage + reference / update), seconds: "
        + "; ".join(
            f"seed {r['seed']}: " + " / ".join(f"{r['rpt']['seconds_per_batch'][p]:.2f}" for p in ("collect", "prepare", "update"))
            for r in rows
            if "seconds_per_batch" in r["rpt"]
        )
        + ". Filter: "
        + ", ".join(f"{r['rpt']['filter_seconds']:.0f}s" for r in rows if "filter_seconds" in r["rpt"])
        + " (0 when reused from the cache).",
        "",
        f"![reward and validation per RPT epoch]({record['plot_name']})",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="*", default=[], help="one SPT checkpoint per seed (same order as --seeds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--spt-epochs", type=int, default=200, help="SPT epochs cap when no checkpoints are given")
    add_dataset_arguments(parser)
    parser.add_argument("--policy", default="lares", help="a file name in configs/policy/ (when training SPT here)")
    parser.add_argument("--policy-set", nargs="*", default=[], help="policy overrides key=value")
    parser.add_argument("--rpt", default="grpo", help="a file name in configs/rpt/")
    parser.add_argument("--rpt-set", nargs="*", default=[], help="rpt overrides key=value, e.g. epochs=20")
    parser.add_argument("--reward", default="ndcg", help="a file name in configs/reward/")
    parser.add_argument("--reward-set", nargs="*", default=[], help="reward overrides key=value, e.g. k=10")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="markdown report path (default docs/results/rpt_<dataset>.md; JSON and PNG beside it)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue each seed's RPT run from its saved training state (checkpoints/rpt_last.pt under "
        "<runs-dir>/<--out's name>/rpt_seed<s>); seeds without one start fresh",
    )
    parser.add_argument(
        "--runs-dir",
        default=str(ROOT / "benchmarks" / "runs"),
        help="SPT/RPT checkpoints and TensorBoard logs go under <runs-dir>/<--out's name, e.g. rpt_ml-100k__grpo>/",
    )
    args = parser.parse_args()
    if args.checkpoints and len(args.checkpoints) != len(args.seeds):
        parser.error(f"--checkpoints gives {len(args.checkpoints)} files for {len(args.seeds)} seeds")
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    device = resolve_device(args.device)

    data, dataset_cfg = load_benchmark_dataset(args.dataset, key_values(args.dataset_set), args.beauty_path)
    max_len = int(dataset_cfg["max_len"])
    policy_cfg = config_file("policy", args.policy, key_values(args.policy_set))
    rpt_values = config_file("rpt", args.rpt, key_values(args.rpt_set))
    rpt_cfg = section_from_mapping(RPTConfig, rpt_values, "rpt")
    reward_fn = rpt_reward(rpt_values, args.reward, key_values(args.reward_set), data.num_items)
    eval_cfg = EvalConfig()
    out = Path(args.out or ROOT / "docs" / "results" / f"rpt_{args.dataset}.md")
    run_root = Path(args.runs_dir) / out.stem  # one directory per results file: variants run side by side never share a seed's state
    record = {
        "dataset": args.dataset,
        "reward": describe_reward(reward_fn),
        "rpt": vars(rpt_cfg),
        "machine": machine_description(device),
        "plot_name": out.with_suffix(".png").name,
        "command": command_line("rpt_benchmark.py", args, skip=("out", "runs_dir", "beauty_path")),
    }
    merge_rule = {
        "same": ("dataset", "reward", "rpt"),
        "defaults": {"rpt": {**vars(RPTConfig()), "filter_order": "given"}},
    }  # files from before a setting existed ran its default (the filter's order: given, before it was a setting)
    check_mergeable(out.with_suffix(".json"), record, **merge_rule)
    for seed in args.seeds:
        checkpoint = spt_checkpoint(seed, args, data, dataset_cfg, policy_cfg, max_len, device, run_root)
        payload = load_checkpoint(checkpoint)
        check_same_data(payload, data, checkpoint)
        policy = policy_from_checkpoint(payload, device)
        ckpt_len = int(payload["dataset"]["max_len"])
        run_dir = run_root / f"rpt_seed{seed}"
        resume = resumable(args.resume, run_dir, "rpt_last.pt", f"RPT seed {seed}")
        with interruption_names_resume(f"RPT seed {seed}", seed, run_dir):
            result = fresh_rpt_run(
                policy=policy,
                payload=payload,
                data=data,
                max_len=ckpt_len,
                cfg=rpt_cfg,
                reward_fn=reward_fn,
                eval_cfg=eval_cfg,
                run_dir=run_dir,
                device=device,
                seed=seed,
                dataset_cfg=dataset_cfg,
                runs_dir=args.runs_dir,
                resume=resume,
            )
        before, after, summary = result["before"], result["after"], result["rpt"]
        merged = merge_seed(out.with_suffix(".json"), record, {"seed": seed, "spt_checkpoint": str(checkpoint), **result}, **merge_rule)
        print(
            f"[bench] seed {seed}: test ndcg@10 {before['test']['ndcg@10']:.4f} -> {after['test']['ndcg@10']:.4f}, "
            f"collect {summary['collect_frames_per_sec']:.0f} frames/s, loop {summary['loop_frames_per_sec']:.0f} frames/s",
            flush=True,
        )
    write_plot(merged["seeds"], out.with_suffix(".png"))
    write_result_text(out, markdown(merged))
    print(markdown(merged))


if __name__ == "__main__":
    main()
