"""How much of an RPT update is signal? Gradient signal-to-noise of the RPT loss against cross-entropy.

    OMP_NUM_THREADS=1 python benchmarks/rpt_gradient_snr.py --checkpoint runs/.../spt_best.pt --batches 8 --histories 400

From one SPT checkpoint, without changing it: ``--batches`` independent batches of ``--histories``
random training rows; for each, the gradient of the configured RPT loss (fresh rollouts, as a
Collector would draw them) and the gradient of the next-item cross-entropy on the same rows, over
the parameters RPT would train. With batch gradients g_1..g_M, mean g and per-batch noise
tr(Sigma) = sum_i |g_i - g|^2 / (M - 1), the signal is |g|^2 - tr(Sigma) / M and the per-batch
SNR is signal / tr(Sigma): below 1, one update is mostly noise, and about ``histories / SNR``
histories per update are needed before the signal dominates. Also reported: the mean pairwise
cosine of the batch gradients, and the cosine of the mean RPT gradient with the mean CE gradient
(does RPT push where further supervised training would?). Writes a JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from benchmark_data import DEFAULT_BEAUTY_PATH, config_file, dataset_names, key_values, load_benchmark_dataset, rpt_reward
from results_io import command_line, machine_description, write_result_json, write_result_text
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lares_rl.core.checkpoint import load_checkpoint, policy_from_checkpoint
from lares_rl.core.config import section_from_mapping
from lares_rl.rewards import describe_reward
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.episodes import rows_env
from lares_rl.rpt.learner import build_learner, set_dropout
from lares_rl.rpt.losses import total_loss

ROOT = Path(__file__).resolve().parents[1]


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def gradient_stats(grads: list[torch.Tensor]) -> dict[str, float]:
    """Signal, per-batch noise, SNR and mean pairwise cosine of M batch gradients."""
    stacked = torch.stack(grads)
    mean = stacked.mean(0)
    noise = float(((stacked - mean) ** 2).sum(1).sum() / (len(grads) - 1))
    signal = float(mean.pow(2).sum()) - noise / len(grads)
    cosines = [float(F.cosine_similarity(a, b, dim=0)) for a, b in itertools.combinations(grads, 2)]
    return {"signal": signal, "noise_per_batch": noise, "snr_per_batch": signal / noise, "pairwise_cosine": sum(cosines) / len(cosines)}


def batch_gradients(policy, learner, data, rows, cfg, reward_fn, max_len, seed) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(RPT loss gradient, CE gradient, mean reward) on one batch of training rows."""
    params = [p for p in learner.loss_module.parameters() if p.requires_grad]
    seqs, lengths, targets = data.train_rows(max_len)
    env = rows_env(
        data, rows, targets, histories=len(rows), cfg=cfg, reward_fn=reward_fn, max_len=max_len, seed=seed, device=torch.device("cpu")
    )
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        batch = env.rollout(1, learner.actor, break_when_any_done=False).reshape(-1)
    learner.prepare(batch)
    rpt_grad = flat(torch.autograd.grad(total_loss(learner.loss_module(batch), 0), params, allow_unused=True, materialize_grads=True))
    was_training = policy.training
    policy.eval()  # the served model: what latent_pg's mean state is
    scores = policy.scores(policy.encode(seqs[rows], lengths[rows])[:, -1])
    ce_grad = flat(torch.autograd.grad(F.cross_entropy(scores, targets[rows]), params, allow_unused=True, materialize_grads=True))
    policy.train(was_training)
    return rpt_grad, ce_grad, float(batch["next", "reward"].mean())


def markdown(record: dict) -> str:
    lines = [
        "# RPT gradient signal-to-noise",
        "",
        f"Checkpoint `{record['checkpoint']}`, {record['batches']} independent batches of {record['histories']} training histories each. "
        "SNR per batch = |mean gradient|^2 (noise-corrected) / per-batch noise; below 1 an update is mostly noise. "
        "`cos(RPT, CE)` is the cosine of the mean RPT-loss gradient with the mean cross-entropy gradient.",
        "",
        "| algorithm | reward | SNR per batch | histories for SNR 1 | pairwise cosine | CE SNR per batch | cos(RPT, CE) | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in record["algorithms"].items():
        needed = f"{record['histories'] / row['rpt']['snr_per_batch']:,.0f}" if row["rpt"]["snr_per_batch"] > 0 else "no signal"
        lines.append(
            f"| {name} | {row['reward']} | {row['rpt']['snr_per_batch']:.3f} | {needed} | {row['rpt']['pairwise_cosine']:.3f} | "
            f"{row['ce']['snr_per_batch']:.3f} | {row['cos_rpt_ce']:.3f} | {row['seconds']:.0f} |"
        )
    lines += ["", f"Command: `{record['command']}` ({record['machine']})"]
    lines += [
        f"\nRow `{name}`: `{row['command']}`" for name, row in record["algorithms"].items() if "command" in row
    ]  # rows merged from another run
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", choices=dataset_names(), default="ml-100k")
    parser.add_argument("--beauty-path", default=str(DEFAULT_BEAUTY_PATH))
    parser.add_argument("--algorithms", nargs="+", default=["latent_pg", "grpo"], help="file names in configs/rpt/")
    parser.add_argument("--rpt-set", nargs="*", default=[], help="overrides applied to every algorithm, key=value")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--histories", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "gradient_snr.md"))
    args = parser.parse_args()
    if args.batches < 2:
        parser.error("--batches must be >= 2 (the noise needs two batch gradients)")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")

    payload = load_checkpoint(args.checkpoint)
    data, dataset_cfg = load_benchmark_dataset(args.dataset, {"max_len": int(payload["dataset"]["max_len"])}, args.beauty_path)
    max_len = int(dataset_cfg["max_len"])
    num_rows = len(data.train_rows(max_len)[2])
    generator = torch.Generator().manual_seed(args.seed)
    batches = [torch.randperm(num_rows, generator=generator)[: args.histories].sort().values for _ in range(args.batches)]
    record = {
        "checkpoint": args.checkpoint,
        "dataset": args.dataset,
        "batches": args.batches,
        "histories": args.histories,
        "algorithms": {},
        "command": command_line("rpt_gradient_snr.py", args, skip=("out", "beauty_path")),
        "machine": machine_description(),
    }
    for name in args.algorithms:
        values = {**config_file("rpt", name), **key_values(args.rpt_set)}
        cfg = section_from_mapping(RPTConfig, values, "rpt")
        reward_fn = rpt_reward(values, "ndcg", {}, data.num_items)
        policy = policy_from_checkpoint(payload, device)
        set_dropout(policy, cfg.dropout)
        learner = build_learner(policy, cfg, device=device, eval_seed=0, seed=args.seed, reward_fn=reward_fn)
        start = time.perf_counter()
        rpt_grads, ce_grads, rewards = [], [], []
        for index, rows in enumerate(batches):
            rpt_grad, ce_grad, reward = batch_gradients(policy, learner, data, rows, cfg, reward_fn, max_len, args.seed + index)
            rpt_grads.append(rpt_grad)
            ce_grads.append(ce_grad)
            rewards.append(reward)
            print(f"[snr] {name}: batch {index + 1}/{args.batches}", flush=True)
        mean_rpt, mean_ce = torch.stack(rpt_grads).mean(0), torch.stack(ce_grads).mean(0)
        record["algorithms"][name] = {
            "reward": f"{describe_reward(reward_fn)}, G={cfg.group_size}",
            "mean_reward": sum(rewards) / len(rewards),
            "rpt": gradient_stats(rpt_grads),
            "ce": gradient_stats(ce_grads),
            "cos_rpt_ce": float(F.cosine_similarity(mean_rpt, mean_ce, dim=0)),
            "seconds": time.perf_counter() - start,
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result_json(out.with_suffix(".json"), record)
    write_result_text(out, markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
