"""The gradient-direction check on real data: does each RPT algorithm raise the reward of the
histories it trains on?

    OMP_NUM_THREADS=1 python benchmarks/rpt_direction.py --checkpoint runs/.../spt_best.pt --updates 30

From one SPT checkpoint, for each algorithm (its ``configs/rpt/<name>.yaml`` plus ``--rpt-set``
overrides): a fixed set of ``--histories`` training rows (the same rows for every algorithm),
``--updates`` rounds of fresh rollouts + the configured update on them, and the evaluation-mode
reward and mean target rank of those rows after each round (lares_rl.rpt.direction). An objective
that follows the reward raises its own reward and lowers the target's rank. The reward each
algorithm trains on is its own (``reward.k`` follows its slate width); the target rank and
NDCG@10 of the greedy top-10 are the common yardsticks. Writes docs/results/gradient_direction.md (+ .json, .png).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from benchmark_data import DEFAULT_BEAUTY_PATH, config_file, dataset_names, key_values, load_benchmark_dataset, rpt_reward
from results_io import command_line, machine_description, write_result_json, write_result_text

from lares_rl.core.checkpoint import load_checkpoint, policy_from_checkpoint
from lares_rl.core.config import section_from_mapping
from lares_rl.rewards import make_reward
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.direction import direction_check
from lares_rl.rpt.probe import probe_metrics

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", choices=dataset_names(), default="ml-100k")
    parser.add_argument("--beauty-path", default=str(DEFAULT_BEAUTY_PATH))
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "latent_pg", "ppo"], help="file names in configs/rpt/")
    parser.add_argument("--rpt-set", nargs="*", default=[], help="overrides applied to every algorithm, key=value")
    parser.add_argument("--histories", type=int, default=400)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "gradient_direction.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")

    payload = load_checkpoint(args.checkpoint)
    data, dataset_cfg = load_benchmark_dataset(args.dataset, {"max_len": int(payload["dataset"]["max_len"])}, args.beauty_path)
    max_len = int(dataset_cfg["max_len"])
    seqs, lengths, targets = data.train_rows(max_len)
    rows = torch.randperm(len(targets), generator=torch.Generator().manual_seed(args.seed))[: args.histories].sort().values
    fixed = (seqs[rows], lengths[rows], targets[rows])
    ndcg10 = make_reward("ndcg", k=10)
    spt_policy = policy_from_checkpoint(payload, device)  # never trained here: the start and every run's reference
    before = probe_metrics(spt_policy, spt_policy, fixed, ndcg10, 10, device)["reward"]
    results = {}
    for name in args.algorithms:
        values = config_file("rpt", name, key_values(args.rpt_set))
        cfg = section_from_mapping(RPTConfig, values, "rpt")
        reward_fn = rpt_reward(values, "ndcg", {}, data.num_items)
        policy = policy_from_checkpoint(payload, device)
        start = time.perf_counter()
        curve = direction_check(policy, data, max_len, cfg, reward_fn, rows, updates=args.updates, device=device, seed=args.seed)
        after = probe_metrics(policy, spt_policy, fixed, ndcg10, 10, device)
        results[name] = {"settings": values, "curve": curve, "ndcg10_after": after["reward"], "seconds": time.perf_counter() - start}
        print(
            f"[direction] {name}: own reward {curve['reward'][0]:.4f} -> {curve['reward'][-1]:.4f}, target rank {curve['target_rank'][0]:.1f} -> {curve['target_rank'][-1]:.1f}, "
            f"{results[name]['seconds']:.0f}s",
            flush=True,
        )
    record = {
        "checkpoint": args.checkpoint,
        "dataset": args.dataset,
        "histories": args.histories,
        "updates": args.updates,
        "ndcg10_before": before,
        "results": results,
        "machine": machine_description(device),
        "command": command_line("rpt_direction.py", args, skip=("out", "beauty_path")),
    }
    out = Path(args.out)
    write_result_json(out.with_suffix(".json"), record)
    write_plot(record, out.with_suffix(".png"))
    write_result_text(out, markdown(record, out.with_suffix(".png").name))
    print(markdown(record, out.with_suffix(".png").name))


def markdown(record: dict, plot: str) -> str:
    lines = [
        f"# Gradient-direction check on {record['dataset']}",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {record['machine']}",
        "",
        f"{record['histories']} fixed training histories, {record['updates']} rounds of fresh rollouts + one update each, from one SPT checkpoint.",
        "*own reward*: the algorithm's training reward (its slate width sets the cut-off); *NDCG@10* and *target rank* (0-based, full catalog) are common to all.",
        "*seconds*: wall time of the whole check on a machine shared with other runs, not a speed measurement.",
        "",
        "| algorithm | own reward before -> after | NDCG@10 before -> after | mean target rank before -> after | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, result in record["results"].items():
        curve = result["curve"]
        lines.append(
            f"| {name} | {curve['reward'][0]:.4f} -> {curve['reward'][-1]:.4f} | {record['ndcg10_before']:.4f} -> {result['ndcg10_after']:.4f} | "
            f"{curve['target_rank'][0]:.1f} -> {curve['target_rank'][-1]:.1f} | {result['seconds']:.0f} |"
        )
    return "\n".join(lines + ["", f"![reward and target rank per update]({plot})", ""])


def write_plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, result in record["results"].items():
        left.plot(result["curve"]["reward"], label=name)
        right.plot(result["curve"]["target_rank"], label=name)
    left.set(xlabel="update", ylabel="own reward on the fixed histories", title="reward")
    right.set(xlabel="update", ylabel="mean target rank (lower is better)", title="target rank")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
