"""Profile one SASRec/LARES training step on ML-100K-sized random data (CPU, 1 thread).

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py [--policy lares]
Prints seconds per batch and the top operators; used to find the dropout RNG hot spot.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch.profiler import profile

from lares_rl.policies.reasoner import LaresReasoner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", choices=["sasrec", "lares"], default="sasrec")
    parser.add_argument("--items", type=int, default=1349)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    core = dict(n_core_layers=0, step_sampler="none", t0_init="zero") if args.policy == "sasrec" else {}
    model = LaresReasoner(args.items, args.max_len, **core)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    seq = torch.randint(1, args.items, (args.batch, args.max_len))
    lengths = torch.randint(1, args.max_len + 1, (args.batch,))
    targets = torch.randint(1, args.items, (args.batch,))

    def step() -> None:
        loss = F.cross_entropy(model.scores(model.encode(seq, lengths)[:, -1]), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(10):
        step()
    print(f"{args.policy}: {(time.perf_counter() - start) / 10:.3f} s per batch of {args.batch}")
    with profile() as prof:
        for _ in range(3):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
