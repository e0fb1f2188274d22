"""Where the time of a full-ranking evaluation pass goes, on CPU with one thread.

    OMP_NUM_THREADS=1 python benchmarks/eval_profile.py \\
        --checkpoint benchmarks/runs/ml-100k__lares_cosine__dense__L20/seed0/checkpoints/spt_best.pt

Times the same pass ``lares-rl eval`` runs (``evaluate_policy``, test split, full ranking, k = 4,
batch 1024) and splits it into phases: building the inputs, the embedding, the pre-block, the T0
draw, the reasoning steps (attention and feed-forward sublayers), scoring against the catalog,
the target ranks and the metric sums. Phases inside the model are timed with forward hooks on the
real modules; the others by calling the same functions ``evaluate_scores`` calls on the same
tensors. All times are CPU time of the one torch thread (the machine is shared, so wall time also
counts other jobs), the median of ``--repeats`` passes. Writes a markdown page (``--output``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
from benchmark_data import ROOT, add_dataset_arguments, key_values, load_benchmark_dataset
from results_io import command_line, machine_description, publish

import lares_rl.policies.reasoner as reasoner_module
from lares_rl.core.checkpoint import check_same_data, load_checkpoint, policy_from_checkpoint
from lares_rl.core.tracking import progress_enabled
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.metrics.ranking import metrics_from_ranks, target_ranks


class Clock:
    """Accumulates thread CPU time per named module through forward pre/post hooks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[int, float] = {}

    def watch(self, module: torch.nn.Module, name: str) -> None:
        module.register_forward_pre_hook(lambda m, args: self._started.__setitem__(id(m), time.thread_time()))
        module.register_forward_hook(
            lambda m, args, out: self.seconds.__setitem__(name, self.seconds[name] + time.thread_time() - self._started.pop(id(m)))
        )

    def watch_method(self, module: torch.nn.Module, method: str, name: str) -> None:
        """Times a method that bypasses the hooks (``forward_at``, the final layer's read-position
        pass) by shadowing it on the instance; :func:`profile_pass` removes the shadow."""
        original = getattr(module, method)

        def timed_method(*args, **kwargs):
            start = time.thread_time()
            out = original(*args, **kwargs)
            self.seconds[name] += time.thread_time() - start
            return out

        setattr(module, method, timed_method)


def timed(fn) -> tuple[float, object]:
    start = time.thread_time()
    out = fn()
    return time.thread_time() - start, out


def profile_pass(policy, data, max_len: int, k: int, split: str) -> dict[str, float]:
    """Seconds per phase of one pass (model phases via hooks, the rest replayed on the same tensors)."""
    clock = Clock()
    clock.watch(policy.pre_block, "pre-block (2 layers)")
    for layer in policy.core_block.layers:
        clock.watch(layer.attention, "reasoning steps: attention sublayers")
        clock.watch_method(layer.attention, "forward_at", "reasoning steps: attention sublayers")
        clock.watch(layer.ffn, "reasoning steps: feed-forward sublayers")
    cfg = EvalConfig(k=k, batch_size=1024)
    total, _ = timed(lambda: evaluate_policy(policy, data, split, max_len, cfg, torch.device("cpu")))
    seqs, lengths, targets = data.eval_inputs(split, max_len)
    phases = dict(clock.seconds)
    phases["inputs (eval_inputs)"], _ = timed(lambda: data.eval_inputs(split, max_len))
    with torch.no_grad():
        context, _ = policy.context(seqs, lengths)
        phases["T0 draw (truncated normal)"], _ = timed(lambda: policy.initial_thought(context))
        states = policy.encode(seqs, lengths, k=k)[:, -1]
        phases["scores vs catalog (matmul)"], scores = timed(lambda: policy.scores(states))
        phases["target ranks"], ranks = timed(lambda: target_ranks(scores, targets))
        phases["metrics and sums"], _ = timed(lambda: [v.sum().item() for v in metrics_from_ranks(ranks, cfg.ks).values()])
    phases["rest (embedding, f(T, H) + LN, gathers, Python)"] = total - sum(phases.values())
    phases["total (evaluate_policy)"] = total
    for hook_owner in [policy.pre_block, *policy.core_block.layers]:  # leave the policy as it was
        for module in hook_owner.modules():
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
            module.__dict__.pop("forward_at", None)
    return phases


def chunk_size_throughput(policy, data, max_len: int, args: argparse.Namespace, users: int) -> dict[int, tuple[float, float]]:
    """users/s and test NDCG@10 of whole passes at each ``--chunk-positions`` size (0: no chunks)."""
    default = reasoner_module.INFERENCE_CHUNK_POSITIONS
    cfg = EvalConfig(k=args.k, batch_size=1024)
    results = {}
    try:
        for size in args.chunk_positions:
            reasoner_module.INFERENCE_CHUNK_POSITIONS = size or 10**12
            passes = [
                timed(lambda: evaluate_policy(policy, data, args.split, max_len, cfg, torch.device("cpu"))) for _ in range(args.repeats + 1)
            ]
            results[size] = (users / statistics.median(seconds for seconds, _ in passes[1:]), passes[-1][1]["ndcg@10"])
    finally:
        reasoner_module.INFERENCE_CHUNK_POSITIONS = default
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    add_dataset_arguments(parser)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--chunk-positions",
        type=int,
        nargs="*",
        default=[0, 1024, 2048, 4096, 8192],
        help="also time whole passes with these inference chunk sizes (positions; 0: no chunks, one batch of 1024 at once)",
    )
    parser.add_argument("--output", default=str(ROOT / "docs" / "results" / "eval_profile.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    payload = load_checkpoint(args.checkpoint)
    data, _ = load_benchmark_dataset(args.dataset, key_values(args.dataset_set), args.beauty_path)
    check_same_data(payload, data, args.checkpoint)
    policy = policy_from_checkpoint(payload, torch.device("cpu")).eval()
    max_len = int(payload["dataset"]["max_len"])
    users = len(data.eval_inputs(args.split, max_len)[2])
    with progress_enabled(False):
        profile_pass(policy, data, max_len, args.k, args.split)  # warm-up
        runs = [profile_pass(policy, data, max_len, args.k, args.split) for _ in range(args.repeats)]
        by_chunk = chunk_size_throughput(policy, data, max_len, args, users)
    phases = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    total = phases.pop("total (evaluate_policy)")
    ours = users / total
    command = "OMP_NUM_THREADS=1 " + command_line("eval_profile.py", args, skip=("output",))
    lines = [
        f"# Full-ranking evaluation profile ({args.dataset}, {args.split}, k = {args.k})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_description()}. {users} users, {data.num_items} items, max_len {max_len}, batches of 1024 users that the model runs "
        f"in row chunks of about {reasoner_module.INFERENCE_CHUNK_POSITIONS:,} positions, "
        f"median of {args.repeats} passes after one warm-up; CPU time of the one torch thread.",
        "",
        "| phase | ms per pass | share |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {name} | {1e3 * seconds:.1f} | {100 * seconds / total:.1f}% |"
        for name, seconds in sorted(phases.items(), key=lambda item: -item[1])
    ]
    lines += [
        f"| **total** | **{1e3 * total:.1f}** | 100% |",
        "",
        f"Throughput: **{ours:,.0f} users/s** (1 thread, full ranking, k = {args.k}). Against the official code, through the revision "
        "issue 20 timed it against: [eval_speedup.md](eval_speedup.md).",
        "",
    ]
    if by_chunk:
        lines += [
            "## Inference chunk size",
            "",
            f"Whole passes (median of {args.repeats}) with `INFERENCE_CHUNK_POSITIONS` (policies/reasoner.py) set to each size; the model runs "
            f"a batch in chunks of that many positions (rows x window, the window here {max_len}); the metrics are the same at every size.",
            "",
            "| positions per chunk | rows per chunk | users/s | NDCG@10 |",
            "|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {size or 'no chunks'} | {min(1024, size // max_len) if size else 1024} | {speed:,.0f} | {ndcg:.4f} |"
            for size, (speed, ndcg) in by_chunk.items()
        ]
        lines.append("")
    publish("\n".join(lines), args.output)


if __name__ == "__main__":
    main()
