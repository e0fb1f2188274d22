"""Recommendation latency and throughput of ``Recommender.recommend`` on CPU with one thread.

    OMP_NUM_THREADS=1 python benchmarks/latency.py [--checkpoint PATH] [--calls 300] [--output docs/results/latency.md]

Without ``--checkpoint`` it builds a default LARES model (``LaresReasoner`` defaults: d_model 64,
2 pre + 2 core layers, k = mean_recurrence = 4) for ML-100K after 5-core (1,349 items, max_len 20)
with random weights: latency does not depend on the weights. Measures one full-length history
per call (p50/p99 over ``--calls`` calls after warm-up, top-10, exclude_seen) and the throughput
for 1,000 histories in one ``recommend`` call, in the default mode (T0 noise drawn) and with
``deterministic=True``. Writes a markdown report (machine, command, torch version) and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
from results_io import cpu_name, publish

from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.serve.recommender import Recommender

NUM_ITEMS, MAX_LEN = 1349, 20  # ML-100K after 5-core


def _build(args: argparse.Namespace, deterministic: bool) -> Recommender:
    if args.checkpoint:
        return Recommender.from_checkpoint(args.checkpoint, device="cpu", deterministic=deterministic)
    torch.manual_seed(0)
    policy = LaresReasoner(num_items=NUM_ITEMS, max_len=MAX_LEN, mean_recurrence=4)
    item_ids = ["<pad>", *[str(i) for i in range(1, NUM_ITEMS + 1)]]
    return Recommender(policy, item_ids, MAX_LEN, device="cpu", deterministic=deterministic)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(rec: Recommender, calls: int, num_histories: int, top_k: int) -> dict:
    gen = torch.Generator().manual_seed(1)
    catalog = rec.item_ids[1:]

    def history() -> list[str]:
        return [catalog[i] for i in torch.randint(0, len(catalog), (rec.max_len,), generator=gen).tolist()]

    one = history()
    for _ in range(30):
        rec.recommend([one], top_k=top_k)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        rec.recommend([one], top_k=top_k)
        times.append(time.perf_counter() - start)
    many = [history() for _ in range(num_histories)]
    rec.recommend(many[:64], top_k=top_k)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        rec.recommend(many, top_k=top_k)
        runs.append(time.perf_counter() - start)
    return {
        "p50_ms": 1e3 * statistics.median(times),
        "p99_ms": 1e3 * _percentile(times, 0.99),
        "mean_ms": 1e3 * statistics.fmean(times),
        "throughput": num_histories / min(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="measure this checkpoint instead of a default LARES model")
    parser.add_argument("--calls", type=int, default=300, help="timed single-history calls (default 300)")
    parser.add_argument("--histories", type=int, default=1000, help="histories for the throughput run (default 1000)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--output", default="docs/results/latency.md", help="markdown report (default docs/results/latency.md; - to only print)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = {}
    for deterministic in (False, True):
        rec = _build(args, deterministic)
        rows["deterministic" if deterministic else "default (T0 noise)"] = (rec, measure(rec, args.calls, args.histories, args.top_k))
    rec = next(iter(rows.values()))[0]
    model = (
        f"checkpoint `{args.checkpoint}`"
        if args.checkpoint
        else "default `LaresReasoner` (d_model 64, 2 pre + 2 core layers), random weights"
    )
    command = "OMP_NUM_THREADS=1 python " + " ".join(["benchmarks/latency.py", *sys.argv[1:]])
    lines = [
        "# Recommendation latency (CPU, one thread)",
        "",
        f"Model: {model}; N = {rec.num_items} items, max_len = {rec.max_len}, k = {rec.k or rec.policy.sample_steps()}; "
        f"top-{args.top_k}, exclude_seen, full-length histories of original string ids.",
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs visible, {platform.system()} {platform.release()}",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, torch threads {torch.get_num_threads()}",
        f"- Command: `{command}`",
        f"- Latency: {args.calls} timed calls of `recommend([one history])` after 30 warm-up calls; "
        f"throughput: best of 3 `recommend(...)` calls on {args.histories} histories (batch_size 1024)",
        "",
        "| mode | p50 latency (ms) | p99 latency (ms) | mean (ms) | throughput (histories/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (_, result) in rows.items():
        lines.append(
            f"| {name} | {result['p50_ms']:.2f} | {result['p99_ms']:.2f} | {result['mean_ms']:.2f} | {result['throughput']:,.0f} |"
        )
    lines += ["", "Target: p50 under 10 ms for one history. The machine is shared, so p99 includes scheduling noise.", ""]
    publish("\n".join(lines), args.output)


if __name__ == "__main__":
    main()
