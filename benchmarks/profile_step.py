"""Time one training step on ML-100K-sized random data (CPU, 1 thread) and print the top operators.

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py                          # SASRec, rows batch of 1024
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --policy lares --step spt --batch 128   # full dense SPT step
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --policy lares --step spt --batch 128 --compile

``--step rec`` is the recommendation loss alone on prefix rows; ``--step spt`` is the whole L_SPT
step of ``spt.mode=dense`` (recommendation, anchor and positive passes). ``--compile`` wraps every
transformer layer in ``torch.compile`` (compile time excluded: warm-up steps run first). Used to
find the dropout RNG hot spot and to decide against torch.compile on this CPU.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch.profiler import profile

from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.spt import SPTConfig, spt_loss, total_loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", choices=["sasrec", "lares"], default="sasrec")
    parser.add_argument("--step", choices=["rec", "spt"], default="rec")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--items", type=int, default=1349)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    core = dict(n_core_layers=0, step_sampler="none", t0_init="zero") if args.policy == "sasrec" else {}
    model = LaresReasoner(args.items, args.max_len, **core)
    if args.compile:
        for block in (model.pre_block, model.core_block):
            for layer in block.layers if block is not None else []:
                layer.compile()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    seq = torch.randint(1, args.items, (args.batch, args.max_len))
    lengths = torch.full((args.batch,), args.max_len) if args.step == "spt" else torch.randint(1, args.max_len + 1, (args.batch,))
    if args.step == "spt":  # a dense window: the last half of the positions supervised
        targets = torch.randint(1, args.items, (args.batch, args.max_len))
        targets[:, : args.max_len // 2] = 0
    else:
        targets = torch.randint(1, args.items, (args.batch,))
    positive = (torch.randint(1, args.items, (args.batch, args.max_len)), lengths)
    cfg = SPTConfig(mode="dense" if args.step == "spt" else "rows")

    def step() -> None:
        if args.step == "spt":
            loss = total_loss(spt_loss(model, (seq, lengths, targets), positive, cfg), 0)
        else:
            loss = F.cross_entropy(model.scores(model.encode(seq, lengths)[:, -1]), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    torch.manual_seed(1)  # the same sequence of k draws for eager and compiled runs
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    print(f"{args.policy} {args.step}{' compiled' if args.compile else ''}: {(time.perf_counter() - start) / args.steps:.3f} s per batch of {args.batch}")
    with profile() as prof:
        for _ in range(3):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
