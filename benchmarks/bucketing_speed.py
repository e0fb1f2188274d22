"""Time SPT steps on real dense windows with and without ``spt.bucket_by_length``, in one process.

    OMP_NUM_THREADS=1 python benchmarks/bucketing_speed.py --dataset amazon-beauty --max-len 20

For each policy (SASRec, LARES) and each batch order (plain shuffle, bucketed), runs the same
number of full L_SPT steps (forward, backward, Adam) on the first batches of one epoch's order,
alternating the orders in rounds so that load from other processes hits both alike. Reports the
seconds per batch, the mean batch width (the longest history in a batch, which is how wide the
encoder runs) and the speed-up. Writes docs/results/bucketing_speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from benchmark_data import DEFAULT_BEAUTY_PATH, config_file, load_benchmark_dataset
from results_io import command_line, machine_description, write_result_text

from lares_rl.core.checkpoint import build_policy
from lares_rl.spt.batches import SameTargetIndex, epoch_order
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.losses import spt_loss, total_loss

ROOT = Path(__file__).resolve().parents[1]


def time_batches(
    policy_name: str, order: torch.Tensor, windows: tuple[torch.Tensor, ...], positives: SameTargetIndex, num_items: int, max_len: int, args
) -> list[float]:
    policy_cfg = config_file("policy", policy_name)
    torch.manual_seed(0)
    policy = build_policy(policy_cfg, num_items, max_len).train()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    cfg = SPTConfig(mode="dense", batch_size=args.batch_size)
    seqs, lengths, targets = windows
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for rows in order.split(args.batch_size)[: args.batches]:
        pos = positives.sample(rows, generator)
        start = time.perf_counter()
        loss = total_loss(spt_loss(policy, (seqs[rows], lengths[rows], targets[rows]), (seqs[pos], lengths[pos]), cfg), 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["ml-100k", "amazon-beauty"], default="amazon-beauty")
    parser.add_argument("--beauty-path", default=str(DEFAULT_BEAUTY_PATH))
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=10, help="timed batches per policy, order and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "bucketing_speed.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, _ = load_benchmark_dataset(args.dataset, {"max_len": args.max_len}, args.beauty_path)
    windows = data.train_windows(args.max_len, max(1, args.max_len // 2))
    lengths = windows[1]
    positives = SameTargetIndex(windows[2][torch.arange(len(lengths)), lengths - 1])
    orders = {bucketed: epoch_order(lengths, args.batch_size, bucketed, torch.Generator().manual_seed(0)) for bucketed in (False, True)}
    width = {b: statistics.mean(int(lengths[rows].max()) for rows in order.split(args.batch_size)) for b, order in orders.items()}
    rows = []
    for policy_name in ("sasrec", "lares"):
        seconds = {False: [], True: []}
        for _ in range(args.rounds):
            for bucketed in (False, True):
                seconds[bucketed] += time_batches(policy_name, orders[bucketed], windows, positives, data.num_items, args.max_len, args)
        plain, bucket = statistics.median(seconds[False]), statistics.median(seconds[True])
        rows.append(f"| {policy_name} | {plain:.3f} | {bucket:.3f} | {plain / bucket:.2f}x |")
        print(rows[-1], flush=True)
    report = "\n".join(
        [
            f"# Batch order and SPT step time ({args.dataset}, dense windows, max_len {args.max_len}, batch {args.batch_size})",
            "",
            f"Command: `OMP_NUM_THREADS=1 {command_line('bucketing_speed.py', args, skip=('out', 'beauty_path'))}`",
            "",
            f"Machine: {machine_description()}; "
            f"median of {args.rounds * args.batches} timed steps per cell (forward + backward + Adam of the whole L_SPT step).",
            "",
            f"Mean batch width over one epoch: {width[False]:.1f} plain, {width[True]:.1f} bucketed ({len(lengths):,} windows).",
            "",
            "| policy | s/batch, plain shuffle | s/batch, bucketed | speed-up |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            "The alternating rounds share whatever load the machine had; the ratio is the figure to read.",
            "",
        ]
    )
    write_result_text(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
