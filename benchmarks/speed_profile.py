"""Where one SPT step and one evaluation pass spend their time, on ML-100K and Amazon 2023 Musical
Instruments, with the catalog cross-entropy of today (``spt.catalog_loss=full``, the whole
[positions x items] logit matrix) and the fused one (``fused``, lares_rl/catalog/fused_ce.py).

    OMP_NUM_THREADS=1 python benchmarks/speed_profile.py --out docs/speed_profile.md

The steps are ``lares-rl spt preset=cpu``'s (dense windows, 128 a batch, shared anchor, positive
pass without gradient, cosine TLA/SLA), on batches cut as ``train_spt`` cuts them. Each step is
split into its parts, each timed in CPU ms of one thread: the data (rows, positives), the anchor
pass forward (all positions, k'), the catalog cross-entropy forward and backward (on the pass's
states detached, so its own work alone), the positive pass, TLA/SLA forward and backward, the
anchor pass backward (fed the gradients the loss terms gave its states) and Adam. The two paths
alternate step by step on copies of one model, seeded alike (the same k', T0 and dropout), so
background load hits both; the table gives medians. The evaluation pass (validation users, in
batches of 1024) is split into the encoder, the catalog scores and the ranks and metrics.

Each part's matrix-product FLOPs (torch's FlopCounterMode, one step) against the bare
770 x 64 x 24,587 product's GFLOP/s on this CPU say how far it is from that floor: ``x floor`` =
its time / the time those FLOPs take at the floor's rate (1 = as fast as a bare product).
"""

from __future__ import annotations

import argparse
import copy
import platform
import resource
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from results_io import write_result_text
from speed_common import (
    DATASETS,
    SPTBatch,
    add_data_dir_argument,
    alternating,
    build,
    cpu_ms,
    load_data,
    one_thread,
    spt_batches,
    spt_config,
)
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lares_rl.core.allocator import keep_freed_memory
from lares_rl.data import SequenceData
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.metrics.ranking import metrics_from_ranks, target_ranks
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.losses import rec_cross_entropy, symmetric_info_nce

PATHS = ("full", "fused")
FLOOR_SHAPE = (770, 64, 24587)  # a dense step of 128 windows on Instruments supervises about 770 positions


class Parts:
    """Times (or, while ``counting``, counts the matrix-product FLOPs of) named parts of a step."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.flops: dict[str, int] = defaultdict(int)
        self.counting = False

    def run(self, name: str, fn: Callable):
        if not self.counting:
            out, ms = cpu_ms(fn)
            self.ms[name].append(ms)
            return out
        with FlopCounterMode(display=False) as counter:
            out = fn()
        self.flops[name] += counter.get_total_flops()
        return out

    def median(self, name: str) -> float:
        return statistics.median(self.ms[name])


def matmul_floor(dtype: torch.dtype, repeats: int = 10) -> float:
    """GFLOP/s of the bare ``FLOOR_SHAPE`` product in ``dtype`` tensors, written into one
    preallocated output (so it is the arithmetic, not the allocation); the best of ``repeats``,
    as a floor is what the CPU can do when nothing else gets in the way."""
    n, d, items = FLOOR_SHAPE
    states, table, out = torch.randn(n, d).to(dtype), torch.randn(items, d).to(dtype), torch.empty(n, items, dtype=dtype)
    times = [cpu_ms(lambda: torch.mm(states, table.T, out=out))[1] for _ in range(repeats)]
    return 2 * n * d * items / min(times) / 1e6


def spt_step(policy: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[SPTBatch], cfg: SPTConfig, parts: Parts) -> None:
    """One ``spt_loss`` step cut into parts: the same passes, draws (in the same order) and
    gradients, with the loss terms' inputs detached so each part's backward is timed alone."""
    (seq, lengths, targets), (pos_seq, pos_lengths) = parts.run("data (rows, positives)", lambda: next(batches))
    k_prime = policy.sample_steps()
    states = parts.run("anchor pass fwd", lambda: policy.encode(seq, lengths, k=k_prime or None, all_positions=True))
    width_targets = targets[:, : states.shape[2]]
    supervised = width_targets > 0
    rec_states = states[:, -1][supervised]
    rec_leaf = rec_states.detach().requires_grad_()
    loss_rec = parts.run("catalog CE fwd", lambda: rec_cross_entropy(policy, rec_leaf, width_targets[supervised], None, cfg.catalog_loss))
    parts.run("catalog CE bwd", loss_rec.backward)
    outputs, grads = [rec_states], [rec_leaf.grad]
    if policy.recurrent:
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1, 1).expand(-1, states.shape[1], 1, states.shape[-1])
        anchor_steps = states.gather(2, last).squeeze(2)
        with torch.no_grad():
            positive = parts.run("positive pass fwd (no grad)", lambda: policy.encode(pos_seq, pos_lengths, k=k_prime)[:, -1])
        anchor_leaf = anchor_steps.detach().requires_grad_()

        def alignment() -> None:
            anchor = anchor_leaf[:, -1]
            loss = cfg.alpha * symmetric_info_nce(anchor, positive, cfg.similarity, cfg.temperature)
            if cfg.gamma > 0 and k_prime > 1:
                j = int(torch.randint(1, k_prime + 1, ()).item())
                loss = loss + cfg.gamma * symmetric_info_nce(anchor, anchor_leaf[:, j - 1], cfg.similarity, cfg.temperature)
            loss.backward()

        parts.run("TLA/SLA fwd+bwd", alignment)
        outputs.append(anchor_steps)
        grads.append(anchor_leaf.grad)
    parts.run("anchor pass bwd", lambda: torch.autograd.backward(outputs, grads))
    parts.run("Adam", lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)))


def profile_spt(data: SequenceData, policy_name: str, steps: int) -> tuple[dict[str, Parts], dict[str, float]]:
    """Parts of ``steps`` steps per catalog path (after one step that counts FLOPs and warms up),
    and each path's minor page faults per step."""
    base = build(policy_name, data)
    runs = {}
    for path in PATHS:
        policy = copy.deepcopy(base).train()
        cfg = spt_config(catalog_loss=path)
        runs[path] = (policy, torch.optim.Adam(policy.parameters(), lr=cfg.lr), spt_batches(policy, data, cfg), cfg, Parts())
    faults = {path: 0.0 for path in PATHS}
    for index in range(steps + 1):
        for path, (policy, optimizer, batches, cfg, parts) in alternating(list(runs.items()), index):
            parts.counting = index == 0
            torch.manual_seed(index)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            spt_step(policy, optimizer, batches, cfg, parts)
            if index:
                faults[path] += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
    return {path: run[-1] for path, run in runs.items()}, faults


@torch.no_grad()
def profile_eval(policy: nn.Module, data: SequenceData, users: int) -> tuple[Parts, int]:
    """The validation pass of ``evaluate_policy`` (full catalog scores, eval mode, seeded T0) on
    the first ``users`` users, cut into encoder, scores and ranks; the parts are summed over the
    batches of one pass (its FLOPs counted on a second)."""
    seqs, lengths, targets = data.eval_inputs("valid", policy.max_len)
    seqs, lengths, targets = seqs[:users], lengths[:users], targets[:users]
    cfg, parts = EvalConfig(split="valid"), Parts()
    policy.eval()
    for counting in (False, True):
        parts.counting = counting
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            for start in range(0, len(targets), cfg.batch_size):
                rows = slice(start, start + cfg.batch_size)
                states = parts.run("eval: encoder", lambda: policy.encode(seqs[rows], lengths[rows], cfg.k)[:, -1])
                scores = parts.run("eval: catalog scores", lambda: policy.scores(states).float())
                parts.run(
                    "eval: ranks and metrics",
                    lambda: {n: v.sum().item() for n, v in metrics_from_ranks(target_ranks(scores, targets[rows]), cfg.ks).items()},
                )
        if not counting:
            for name, values in parts.ms.items():
                parts.ms[name] = [sum(values)]
    return parts, len(targets)


def cpu_description() -> str:
    """The CPU's model and its vector / matrix extensions (bf16 products are fast only with AMX or AVX-512 BF16)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    extensions = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    has, lacks = [f for f in extensions if f in flags], [f for f in extensions if f not in flags]
    return f"{model} (has {', '.join(has) or 'none of them'}; lacks {', '.join(lacks) or 'none of them'})"


def x_floor(ms: float, flops: int, floor: float) -> str:
    return f"{ms / (flops / floor / 1e6):.1f}" if flops else "-"


def spt_table(runs: dict[str, Parts], faults: dict[str, float], floor: float) -> list[str]:
    full, fused = runs["full"], runs["fused"]
    lines = [
        "| part | GFLOP | full ms | fused ms | full x floor | fused x floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in full.ms:
        gflop = f"{full.flops[name] / 1e9:.2f}" + ("" if fused.flops[name] == full.flops[name] else f" / {fused.flops[name] / 1e9:.2f}")
        lines.append(
            f"| {name} | {gflop} "
            f"| {full.median(name):.1f} | {fused.median(name):.1f} "
            f"| {x_floor(full.median(name), full.flops[name], floor)} | {x_floor(fused.median(name), fused.flops[name], floor)} |"
        )
    totals = {path: sum(runs[path].median(n) for n in runs[path].ms) for path in PATHS}
    lines.append(f"| **step (sum of medians)** | | **{totals['full']:.0f}** | **{totals['fused']:.0f}** | | |")
    lines.append(f"| minor page faults per step | | {faults['full']:,.0f} | {faults['fused']:,.0f} | | |")
    return lines


def eval_table(parts: Parts, users: int, floor: float) -> list[str]:
    lines = ["| part | GFLOP | ms per pass | x floor |", "|---|---:|---:|---:|"]
    for name in parts.ms:
        ms = parts.median(name)
        lines.append(f"| {name} | {parts.flops[name] / 1e9:.2f} | {ms:.0f} | {x_floor(ms, parts.flops[name], floor)} |")
    total = sum(parts.median(n) for n in parts.ms)
    lines.append(f"| **pass ({users:,} users)** | | **{total:.0f}** ({1000 * users / total:,.0f} users/s) | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per path (after one warm-up step that counts FLOPs)")
    parser.add_argument("--eval-users", type=int, default=8192, help="validation users of the evaluation pass")
    parser.add_argument("--floor-repeats", type=int, default=10, help="products timed for the floor (the best counts)")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    one_thread()
    keep_freed_memory()
    floors = {dtype: matmul_floor(dtype, args.floor_repeats) for dtype in (torch.float32, torch.bfloat16)}
    n, d, items = FLOOR_SHAPE
    lines = [
        f"Bare {n} x {d} x {items:,} product (the floor): fp32 {floors[torch.float32]:.0f} GFLOP/s, "
        f"bf16 tensors {floors[torch.bfloat16]:.0f} GFLOP/s; `x floor` is against fp32.",
        "",
    ]
    print("\n".join(lines), flush=True)
    for name in DATASETS:
        data = load_data(name, args.data_dir)
        if data is None:
            lines += [f"{name}: skipped ({args.data_dir} holds no data file)", ""]
            continue
        for policy_name in ("lares", "sasrec"):
            runs, faults = profile_spt(data, policy_name, args.steps)
            block = [f"### {name}, {policy_name}: one SPT step ({data.num_items:,} items, median of {args.steps} steps)", ""]
            block += spt_table(runs, faults, floors[torch.float32]) + [""]
            print("\n".join(block), flush=True)
            lines += block
        parts, users = profile_eval(build("lares", data), data, args.eval_users)
        block = [f"### {name}, lares: one evaluation pass (validation, k = 4, full-catalog scores)", ""]
        block += eval_table(parts, users, floors[torch.float32]) + [""]
        print("\n".join(block), flush=True)
        lines += block
    if args.out:
        header = [
            "# Speed profile: one SPT step and one evaluation pass",
            "",
            "Produced by (one thread, CPU time; see the script's docstring for what each part holds):",
            "",
            "    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speed_profile.py --out docs/speed_profile.md",
            "",
            f"Machine: {cpu_description()}, torch {torch.__version__}.",
            "",
        ]
        write_result_text(args.out, "\n".join(header + lines))


if __name__ == "__main__":
    main()
