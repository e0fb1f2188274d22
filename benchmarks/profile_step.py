"""Time SPT training steps on ML-100K (CPU, 1 thread): whole steps, a per-pass breakdown, or the top operators.

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py                                    # SASRec, rows batch of 1024, top operators
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --policy lares --step spt --batch 128 --compile
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --policy lares --step spt --batch 128 --breakdown --steps 30
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --policy lares --step spt --batch 128 --compare-anchor --steps 79

The batches are real: ML-100K prefix rows (``--step rec``, the recommendation loss alone) or the
dense windows of ``spt.mode=dense`` with positives drawn as ``train_spt`` draws them (``--step
spt``, the whole L_SPT step), taken in a seeded epoch order. ``--breakdown`` times each pass of the
reference's three-pass step (recommendation, anchor, positive) forward and backward, at the
sampled depths, so docs/spt_profile.md can say where a step goes. Times are CPU ms of the process.
``--compare-anchor`` times whole steps (loss, backward, Adam) of the reference's separate anchor,
the shared anchor, and the shared anchor with a positive pass without gradient, alternating batch
by batch on copies of the model so that background load hits all alike; ``--steps 79`` is one dense
epoch at batch 128. ``--compile`` wraps every transformer layer in ``torch.compile`` (compile time
excluded: warm-up steps run first); it was tried and not adopted on this CPU.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from benchmark_data import load_benchmark_dataset
from torch.profiler import profile

from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.spt.batches import SameTargetIndex
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.losses import recommendation_loss, spt_loss, symmetric_info_nce, total_loss

Batch = tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batches(step: str, max_len: int, batch_size: int) -> tuple[int, int, Iterator[Batch]]:
    """(catalog size, batches per epoch, endless batches of (rows, positives)) from ML-100K, as ``train_spt`` cuts them."""
    data, _ = load_benchmark_dataset("ml-100k", {"max_len": max_len})
    if step == "spt":
        seqs, lengths, targets = data.train_windows(max_len, max(1, max_len // 2))
        last_targets = targets[torch.arange(len(targets)), lengths - 1]
    else:
        seqs, lengths, targets = data.train_rows(max_len)
        last_targets = targets
    positives = SameTargetIndex(last_targets)
    generator = torch.Generator().manual_seed(0)

    def endless() -> Iterator[Batch]:
        while True:
            for rows in torch.randperm(len(seqs), generator=generator).split(batch_size):
                if len(rows) == batch_size:
                    pos = positives.sample(rows, generator)
                    yield (seqs[rows], lengths[rows], targets[rows]), (seqs[pos], lengths[pos])

    return data.num_items, -(-len(seqs) // batch_size), endless()


def build_model(policy: str, num_items: int, max_len: int, compile_layers: bool) -> LaresReasoner:
    torch.manual_seed(0)
    core = dict(n_core_layers=0, step_sampler="none", t0_init="zero") if policy == "sasrec" else {}
    model = LaresReasoner(num_items, max_len, **core)
    if compile_layers:
        for block in (model.pre_block, model.core_block):
            for layer in block.layers if block is not None else []:
                layer.compile()
    return model


def train_step(model: LaresReasoner, optimizer: torch.optim.Optimizer, batch: Batch, cfg: SPTConfig, step: str) -> None:
    """One optimiser step exactly as ``train_spt`` takes it (``--step rec``: the recommendation loss alone)."""
    rows, positive = batch
    if step == "spt":
        loss = total_loss(spt_loss(model, rows, positive, cfg), 0)
    else:
        loss = F.cross_entropy(model.scores(model.encode(rows[0], rows[1])[:, -1]), rows[2])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def timed(fn: Callable[[], torch.Tensor | None], into: list[float]) -> torch.Tensor | None:
    """Run ``fn`` and append its CPU ms: with one thread that is the work of the call, and unlike
    wall time it does not grow when other jobs share the cores."""
    start = time.process_time()
    out = fn()
    into.append(1000 * (time.process_time() - start))
    return out


def breakdown(model: LaresReasoner, batch_iter: Iterator[Batch], steps: int, cfg: SPTConfig) -> None:
    """Forward and backward ms of each pass of the three-pass step. The alignment losses join the
    anchor and positive graphs, so each side's backward is timed with the other side detached:
    the same gradient work as the joint backward, split by pass."""
    times: dict[str, list[float]] = {
        name: [] for name in ("rec fwd", "rec bwd", "anchor fwd", "anchor bwd", "positive fwd", "positive bwd", "adam")
    }
    ks, kps = [], []
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(steps):
        (seq, lengths, targets), (pos_seq, pos_lengths) = next(batch_iter)
        k, k_prime = model.sample_steps(), model.sample_steps()
        ks.append(k)
        kps.append(k_prime)
        optimizer.zero_grad()
        loss_rec, _ = timed(lambda: recommendation_loss(model, seq, lengths, targets, k=k), times["rec fwd"])
        timed(loss_rec.backward, times["rec bwd"])
        anchor_steps = timed(lambda: model.encode(seq, lengths, k=k_prime), times["anchor fwd"])
        positive = timed(lambda: model.encode(pos_seq, pos_lengths, k=k_prime)[:, -1], times["positive fwd"])
        anchor, j = anchor_steps[:, -1], int(torch.randint(1, k_prime + 1, ()).item())
        align = lambda a, p: cfg.alpha * symmetric_info_nce(a, p, cfg.similarity, cfg.temperature)  # noqa: E731
        sla = cfg.gamma * symmetric_info_nce(anchor, anchor_steps[:, j - 1], cfg.similarity, cfg.temperature) if k_prime > 1 else 0.0
        timed((align(anchor, positive.detach()) + sla).backward, times["anchor bwd"])
        timed(align(anchor.detach(), positive).backward, times["positive bwd"])
        timed(optimizer.step, times["adam"])
    print(f"per-pass breakdown over {steps} dense steps (mean k {statistics.mean(ks):.2f}, mean k' {statistics.mean(kps):.2f}):")
    print("| part | mean ms | median ms |\n|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.mean(values):.1f} | {statistics.median(values):.1f} |")
    total = sum(statistics.mean(v) for v in times.values())
    print(f"| total | {total:.1f} | |")


STEP_VARIANTS = {  # label -> SPTConfig overrides, timed side by side by --compare-anchor
    "separate anchor (3 passes, reference)": {"shared_anchor": False, "positive_gradient": True},
    "shared anchor (2 passes)": {"shared_anchor": True, "positive_gradient": True},
    "shared anchor, positive without gradient": {"shared_anchor": True, "positive_gradient": False},
}


def compare_anchor(model: LaresReasoner, batch_iter: Iterator[Batch], steps: int, cfg: SPTConfig, per_epoch: int) -> None:
    """Whole-step ms of every ``STEP_VARIANTS`` entry, alternating on the same batches and seeded
    alike per step, so that all see the same depths (k varies 1..12 and dominates a step's cost)."""
    runs = {label: (copy.deepcopy(model), SPTConfig(**{**cfg.__dict__, **overrides})) for label, overrides in STEP_VARIANTS.items()}
    optimizers = {label: torch.optim.Adam(m.parameters(), 1e-3) for label, (m, _) in runs.items()}
    times: dict[str, list[float]] = {label: [] for label in runs}
    for index in range(steps):
        batch = next(batch_iter)
        for label, (m, c) in runs.items():
            torch.manual_seed(index)  # all draw the same first k: the recommendation pass's (separate) or k' (shared)
            timed(lambda: train_step(m, optimizers[label], batch, c, "spt"), times[label])
    reference = statistics.mean(times[next(iter(runs))])
    print(
        f"| setting | mean ms / step | median ms / step | training s / epoch ({per_epoch} steps) | speed-up (mean) |\n|---|---:|---:|---:|---:|"
    )
    for label, values in times.items():
        mean = statistics.mean(values)
        print(f"| {label} | {mean:.0f} | {statistics.median(values):.0f} | {per_epoch * mean / 1000:.0f} | {reference / mean:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", choices=["sasrec", "lares"], default="sasrec")
    parser.add_argument("--step", choices=["rec", "spt"], default="rec")
    parser.add_argument("--separate-anchor", action="store_true", help="spt.shared_anchor=false (the reference's three passes)")
    parser.add_argument("--breakdown", action="store_true", help="per-pass forward/backward ms of the three-pass step")
    parser.add_argument(
        "--compare-anchor",
        action="store_true",
        help="whole-step ms: separate anchor, shared anchor, shared anchor with a positive pass without gradient",
    )
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    num_items, per_epoch, batch_iter = batches(args.step, args.max_len, args.batch)
    model = build_model(args.policy, num_items, args.max_len, args.compile)
    cfg = SPTConfig(mode="dense" if args.step == "spt" else "rows", shared_anchor=not args.separate_anchor)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(3):  # warm-up (and compilation)
        train_step(model, optimizer, next(batch_iter), cfg, args.step)
    torch.manual_seed(1)  # the same sequence of k draws for every variant
    if args.breakdown:
        return breakdown(model, batch_iter, args.steps, cfg)
    if args.compare_anchor:
        return compare_anchor(model, batch_iter, args.steps, cfg, per_epoch)
    times: list[float] = []
    for _ in range(args.steps):
        timed(lambda: train_step(model, optimizer, next(batch_iter), cfg, args.step), times)
    anchor = "" if args.step == "rec" or args.policy == "sasrec" else (" separate anchor" if args.separate_anchor else " shared anchor")
    print(
        f"{args.policy} {args.step}{anchor}{' compiled' if args.compile else ''}: {statistics.mean(times) / 1000:.3f} s per batch of {args.batch}"
    )
    with profile() as prof:
        for _ in range(3):
            train_step(model, optimizer, next(batch_iter), cfg, args.step)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
