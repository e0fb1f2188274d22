"""The speed measurements on a CUDA device, in one call (issue 34 item 7): SPT steps (LARES and
SASRec), evaluation and the RPT top-100 filter, on ML-100K and Amazon 2023 Instruments, for
precision fp32 / bf16 and compile off / on, as one table.

    python benchmarks/gpu_speed.py --data-dir <folder holding the Instruments file>   # needs a GPU

Fixed work per configuration (``--spt-steps`` steps of 128 windows, ``--eval-users`` users,
``--filter-rows`` rows), so the whole script stays under 8 minutes on one H100-class GPU; CUDA
time is measured with the device synchronised, after one warm-up step (which includes any
compilation: its seconds are reported apart, in the ``compile_s`` column). Writes
``benchmarks/results/gpu_speed.json`` and prints the table; ``benchmarks/gpu_speed.sh`` is the
one command to give a lent GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from results_io import write_result_text
from speed_common import DATASETS, add_data_dir_argument, build, load_data, spt_batches, spt_config

from lares_rl.core.precision import Numerics, use_numerics
from lares_rl.core.tracking import progress_enabled
from lares_rl.data import SequenceData
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.rpt.filter import top_k_filter
from lares_rl.spt.distributed import SPTStep
from lares_rl.spt.losses import total_loss

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_speed.json"
NUMERICS = [Numerics("fp32", False), Numerics("bf16", False), Numerics("fp32", True), Numerics("bf16", True)]


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()`` with the device's queue drained before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda _: None
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def spt_rate(policy_name: str, data: SequenceData, numerics: Numerics, steps: int, device: torch.device) -> tuple[float, float]:
    """(supervised targets per second over ``steps`` SPT steps, seconds of the warm-up step)."""
    policy = build(policy_name, data).to(device).train()
    cfg = spt_config()
    with use_numerics(numerics):
        step_module = SPTStep(policy, cfg)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    batches = spt_batches(policy, data, cfg)
    seconds, targets, warmup = 0.0, 0, 0.0
    for index in range(steps + 1):
        (seqs, lengths, target), (pos_seqs, pos_lengths) = next(batches)
        batch = (seqs.to(device), lengths.to(device), target.to(device))
        positive = (pos_seqs.to(device), pos_lengths.to(device))

        def step() -> None:
            loss = total_loss(step_module(batch, positive), index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        elapsed = timed(step, device)
        if index == 0:
            warmup = elapsed
        else:
            seconds, targets = seconds + elapsed, targets + int((target > 0).sum())
    return targets / seconds, warmup


def eval_rate(data: SequenceData, users: int, device: torch.device) -> float:
    """Validation users per second of a full-ranking pass (LARES, k = 4; evaluation scores in fp32)."""
    policy = build("lares", data).to(device)
    subset = _FirstUsers(data, users)
    cfg = EvalConfig(split="valid")
    evaluate_policy(policy, subset, "valid", policy.max_len, cfg, device)  # warm-up
    return subset.users / timed(lambda: evaluate_policy(policy, subset, "valid", policy.max_len, cfg, device), device)


def filter_rate(data: SequenceData, rows: int, device: torch.device) -> float:
    """Training rows per second of the RPT top-100 filter (3 stochastic passes)."""
    policy = build("lares", data).to(device)
    seqs, lengths, targets = (t[:rows] for t in data.train_rows(policy.max_len))
    top_k_filter(policy, seqs[:256], lengths[:256], targets[:256], device=device)  # warm-up
    return len(targets) / timed(lambda: top_k_filter(policy, seqs, lengths, targets, device=device), device)


class _FirstUsers:
    """``data`` seen through its first ``users`` evaluation rows (a fixed slice of work)."""

    def __init__(self, data: SequenceData, users: int) -> None:
        self.data, self.users = data, min(users, data.num_users)

    def eval_inputs(self, split: str, max_len: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[: self.users] for t in self.data.eval_inputs(split, max_len))


def measure(name: str, data: SequenceData, args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for policy_name in ("lares", "sasrec"):
        for numerics in [n for n in NUMERICS if args.compile or not n.compile]:
            rate, warmup = spt_rate(policy_name, copy.copy(data), numerics, args.spt_steps, device)
            rows.append({"data": name, "part": f"spt_{policy_name}", "precision": numerics.precision, "compile": numerics.compile,
                         "rate": rate, "unit": "samples/s", "compile_s": warmup})  # fmt: skip
            print(f"{rows[-1]}", flush=True)
    rows.append({"data": name, "part": "eval", "precision": "fp32", "compile": False, "rate": eval_rate(data, args.eval_users, device),
                 "unit": "users/s", "compile_s": 0.0})  # fmt: skip
    rows.append({"data": name, "part": "filter", "precision": "fp32", "compile": False, "rate": filter_rate(data, args.filter_rows, device),
                 "unit": "rows/s", "compile_s": 0.0})  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| data | part | precision | compile | throughput | unit | warm-up s |", "|---|---|---|---|---:|---|---:|"]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['part']} | {r['precision']} | {r['compile']} | {r['rate']:,.0f} | {r['unit']} | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--spt-steps", type=int, default=50, help="timed SPT steps per configuration, after one warm-up step")
    parser.add_argument("--eval-users", type=int, default=20000, help="validation users per evaluation pass")
    parser.add_argument("--filter-rows", type=int, default=50000, help="training rows the filter ranks")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test the script (CPU speed: benchmarks/speed.py)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled configurations")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_speed.py needs a CUDA device; on a CPU run benchmarks/speed.py")
    start, rows = time.perf_counter(), []
    with progress_enabled(False):
        for name in DATASETS:
            data = load_data(name, args.data_dir)
            if data is not None:
                rows += measure(name, data, args, device)
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    write_result_text(args.out, json.dumps(out, indent=2) + "\n")
    print(table(rows))
    print(f"{out['device']}, {out['seconds']:.0f} s; written {args.out}")


if __name__ == "__main__":
    main()
