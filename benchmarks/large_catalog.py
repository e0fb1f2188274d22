"""Memory and throughput of evaluation, SPT steps and recommend as the catalog grows (issue 21).

    OMP_NUM_THREADS=1 python benchmarks/large_catalog.py                      # 100k, 300k, 1M items; about 10 minutes
    OMP_NUM_THREADS=1 python benchmarks/large_catalog.py --items 2000 5000 --users 2000 --out /tmp/x.md   # a smoke run

The data is a synthetic log of ``--users`` users (100,000) over N items, generated in a second:
history lengths uniform in 5..25, items drawn i.i.d. from a Zipf(0.8) popularity over a random
ranking of the catalog. It has no sequential signal, so its NDCG means nothing; it is printed only
to show that the chunked and the full-catalog paths give the same number.

Every (task, catalog size) runs in its own process, which builds the data and a narrow LARES model
(``--d-model``, constant depth 4 so that every SPT step does the same work), runs one warm-up step (so Adam's state exists), resets the process's peak RSS
(``/proc/self/clear_refs``), then times the task. The process runs with glibc's
``MALLOC_MMAP_THRESHOLD_=131072``: every block over 128 KB is its own mapping, returned to the
system when freed, so resident memory follows what is live (with glibc's default, freed tensors
stay in the heap and the peak after a warm-up says more about the allocator than the task).
Reported per cell:

- ``setup MB``: resident memory after the data, model (and optimiser state) are built; it holds
  the item table (N x d) and, for recommend, the id mapping, which grow with N by nature;
- ``working MB``: the peak resident memory during the timed task minus the memory at its start:
  what the task itself needs on top of the model, the number that chunking keeps flat;
- throughput: users/s (evaluation, recommend) or training rows/s (SPT).

Tasks: ``eval_full`` / ``eval_chunked`` (``evaluate_policy`` over ``--eval-users`` test users in
batches of ``--eval-batch``, without / with ``eval.item_chunk``); ``recommend_full`` /
``recommend_chunked`` (``Recommender.recommend`` top-10 with seen items excluded, same users);
``spt_full`` / ``spt_sampled`` / ``spt_in_batch`` (``--spt-steps`` full L_SPT steps of
``--spt-batch`` training rows: forward, backward, Adam, with ``spt.negatives`` full / sampled
(``--negatives`` popularity-drawn, log-Q corrected) / in_batch). Writes docs/results/large_catalog.md and
benchmarks/results/large_catalog.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from results_io import command_line, machine_description, write_result_text

from lares_rl.data import SequenceData

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("eval_full", "eval_chunked", "recommend_full", "recommend_chunked", "spt_full", "spt_sampled", "spt_in_batch")
MAX_LEN = 20


def synthetic_catalog(users: int, items: int, seed: int = 0) -> SequenceData:
    """``users`` histories of 5..25 items drawn from a Zipf(0.8) popularity over ``items`` items."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 26, size=users)
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    cdf = np.cumsum(weights) / weights.sum()
    ranked = np.searchsorted(cdf, rng.random(int(lengths.sum())), side="right").clip(max=items - 1)
    catalog = rng.permutation(items) + 1
    return SequenceData(
        items=catalog[ranked].astype(np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        num_items=items,
        user_ids=np.arange(users).astype(str),
        item_ids=np.concatenate([["<pad>"], np.arange(1, items + 1).astype(str)]),
        item_titles=None,
        fingerprint=f"synthetic-{users}-{items}-{seed}",
        source="<synthetic>",
    )


def first_users(data: SequenceData, count: int) -> SequenceData:
    """The first ``count`` users, same catalog (evaluation is timed on them)."""
    stop = int(data.offsets[count])
    return SequenceData(
        items=data.items[:stop],
        offsets=data.offsets[: count + 1],
        num_items=data.num_items,
        user_ids=data.user_ids[:count],
        item_ids=data.item_ids,
        item_titles=None,
        fingerprint=data.fingerprint + f"-first{count}",
        source=data.source,
    )


def _status_mb(field: str) -> float:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def reset_peak() -> float:
    """Reset the peak resident size to the current one (Linux ``clear_refs`` 5); returns it in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def run_task(task: str, items: int, args: argparse.Namespace) -> dict:
    """Build, warm up, reset the peak, time ``task``; one catalog size, in this process."""
    from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
    from lares_rl.policies.reasoner import LaresReasoner
    from lares_rl.serve.recommender import Recommender
    from lares_rl.spt.batches import SameTargetIndex
    from lares_rl.spt.config import SPTConfig
    from lares_rl.spt.losses import spt_loss, total_loss

    torch.manual_seed(0)
    data = synthetic_catalog(args.users, items)
    # a constant depth: with the sampled one (k up to 12) a step's activations vary 2-3x from step to step
    policy = LaresReasoner(
        items, MAX_LEN, d_model=args.d_model, n_heads=2, inner_size=2 * args.d_model, dropout=0.1, step_sampler="constant"
    )
    chunk = args.item_chunk if task.endswith("chunked") else None
    out: dict = {"task": task, "items": items, "users": args.users}

    if task.startswith("eval"):
        sub = first_users(data, args.eval_users)
        cfg = EvalConfig(batch_size=args.eval_batch, item_chunk=chunk)
        evaluate_policy(policy, first_users(data, args.eval_batch), "test", MAX_LEN, cfg, torch.device("cpu"))  # warm-up
        start_mb = reset_peak()
        start = time.perf_counter()
        metrics = evaluate_policy(policy, sub, "test", MAX_LEN, cfg, torch.device("cpu"))
        seconds, count, unit, out["ndcg@10"] = time.perf_counter() - start, args.eval_users, "users/s", metrics["ndcg@10"]
    elif task.startswith("recommend"):
        recommender = Recommender(policy, data.item_ids, MAX_LEN, deterministic=True, item_chunk=chunk)
        histories = [list(data.item_ids[data.items[data.offsets[u] : data.offsets[u + 1]]]) for u in range(args.eval_users)]
        recommender.recommend(histories[: args.eval_batch], top_k=10, batch_size=args.eval_batch)  # warm-up
        start_mb = reset_peak()
        start = time.perf_counter()
        answers = recommender.recommend(histories, top_k=10, batch_size=args.eval_batch)
        seconds, count, unit, out["first_items"] = time.perf_counter() - start, args.eval_users, "users/s", answers[0].items[:3]
    else:
        negatives = task.removeprefix("spt_")
        cfg = SPTConfig(batch_size=args.spt_batch, similarity="cosine", negatives=negatives, num_negatives=args.negatives)
        seqs, lengths, targets = data.train_rows(MAX_LEN)
        softmax = cfg.rec_softmax(policy, targets)
        positives = SameTargetIndex(targets)
        optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        batches = torch.randperm(len(targets), generator=generator)[: args.spt_batch * (args.spt_steps + 1)].split(args.spt_batch)

        def step(rows: torch.Tensor) -> None:
            pos = positives.sample(rows, generator)
            loss = total_loss(spt_loss(policy, (seqs[rows], lengths[rows], targets[rows]), (seqs[pos], lengths[pos]), cfg, softmax), 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step(batches[0])  # warm-up: allocates the gradients and Adam's moments
        start_mb = reset_peak()
        start = time.perf_counter()
        for rows in batches[1:]:
            step(rows)
        seconds, count, unit = time.perf_counter() - start, args.spt_batch * args.spt_steps, "rows/s"
    peak_mb = _status_mb("VmHWM")
    out.update(
        setup_mb=start_mb,
        working_mb=peak_mb - start_mb,
        peak_mb=peak_mb,
        seconds=seconds,
        throughput=count / seconds,
        unit=unit,
        item_table_mb=(items + 1) * args.d_model * 4 / 2**20,
    )
    return out


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    sizes = sorted({r["items"] for r in rows})
    by = {(r["task"], r["items"]): r for r in rows}
    head = "| task | " + " | ".join(f"{n:,} items" for n in sizes) + " |\n|---|" + "---:|" * len(sizes) + "\n"

    def table(field: str, fmt: str) -> str:
        return head + "".join(
            f"| {t} | " + " | ".join(fmt.format(by[t, n][field]) if (t, n) in by else "-" for n in sizes) + " |\n"
            for t in TASKS
            if any((t, n) in by for n in sizes)
        )

    same = all(
        by[("eval_full", n)]["ndcg@10"] == by[("eval_chunked", n)]["ndcg@10"]
        for n in sizes
        if ("eval_full", n) in by and ("eval_chunked", n) in by
    )
    same_rec = all(
        by[("recommend_full", n)]["first_items"] == by[("recommend_chunked", n)]["first_items"]
        for n in sizes
        if ("recommend_full", n) in by and ("recommend_chunked", n) in by
    )
    return f"""# Large catalogs: memory and throughput (synthetic, {args.users:,} users)

Command: `{command}`

Machine: {machine_description()}. Each cell is its own process, with large blocks
allocated as their own mappings so that resident memory follows live memory
(`benchmarks/large_catalog.py` says what is built, measured and timed). Model: LARES, d_model {args.d_model}, 2 pre + 2 core layers, constant depth 4; item
table {", ".join(f"{(n + 1) * args.d_model * 4 / 2**20:.0f} MB" for n in sizes)} for {", ".join(f"{n:,}" for n in sizes)} items.
Evaluation and recommend: {args.eval_users:,} users in batches of {args.eval_batch}, chunks of
{args.item_chunk:,} items. SPT: {args.spt_steps} steps of {args.spt_batch} training rows (rows mode, L_SPT with
TLA and SLA, Adam); sampled: {args.negatives:,} popularity-drawn negatives per batch, log-Q corrected.

## Working memory (MB): peak during the task minus memory at its start

{table("working_mb", "{:,.0f}")}
## Throughput

{table("throughput", "{:,.0f}")}
(users/s for eval and recommend, training rows/s for SPT)

## Memory at the start of the task (MB): data, model, optimiser state, id mapping

{table("setup_mb", "{:,.0f}")}
Chunked and full evaluation gave {"the same" if same else "DIFFERENT"} NDCG@10 at every size, and chunked and full
recommend {"the same" if same_rec else "DIFFERENT"} top items for the first user (the data is random, so the values themselves mean nothing).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--eval-users", type=int, default=2048)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--item-chunk", type=int, default=16384)
    parser.add_argument("--spt-batch", type=int, default=128)
    parser.add_argument("--spt-steps", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=1024)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "large_catalog.md"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "large_catalog.json"))
    parser.add_argument("--worker", nargs=2, metavar=("TASK", "ITEMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(1)
        print(json.dumps(run_task(args.worker[0], int(args.worker[1]), args)))
        return
    command = command_line("large_catalog.py", args, skip=("out", "json", "worker"))
    rows = []
    passthrough = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k in ("users", "d_model", "eval_users", "eval_batch", "item_chunk", "spt_batch", "spt_steps", "negatives")
    ]
    for items in args.items:
        for task in args.tasks:
            done = subprocess.run(
                [sys.executable, __file__, "--worker", task, str(items), *passthrough],
                capture_output=True,
                text=True,
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
            )
            if done.returncode != 0:
                raise SystemExit(f"{task} at {items} items failed:\n{done.stderr}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{task:18s} {items:>9,} items  working {r['working_mb']:8.1f} MB  setup {r['setup_mb']:8.1f} MB  {r['throughput']:9.1f} {r['unit']}",
                flush=True,
            )
    write_result_text(Path(args.json), json.dumps({"command": command, "machine": machine_description(), "rows": rows}, indent=1) + "\n")
    write_result_text(Path(args.out), report(rows, args, command))
    print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
