"""Accuracy parity of a speed change (issue 34 item 5): validation NDCG@10 of SPT after the same
epochs, today's path against the new one, over seeds, each run as a user runs it.

    OMP_NUM_THREADS=1 python benchmarks/accuracy_parity.py                       # precision: fp32 vs bf16, ML-100K, LARES, 3 epochs
    OMP_NUM_THREADS=1 python benchmarks/accuracy_parity.py --change catalog_loss \
        --dataset instruments --policy sasrec --epochs 1 --resume               # full vs fused cross-entropy, Instruments

Each run is ``lares-rl spt preset=cpu spt.epochs=E seed=S <the change's setting>`` in a child
process of one thread, two at a time; Instruments runs add its dataset option and
``spt.bucket_by_length=true`` as the Instruments table's runs do. ``--resume`` reads the runs that
finished before and continues one a stop cut short (``resume=<its run dir>``). It prints one table
and writes ``benchmarks/results/<change>_parity[_<dataset>_<policy>].json`` (no suffix for
LARES on ML-100K).

The changes: ``precision`` (fp32 against bf16, both through the fused catalog loss that real
catalogs use) and ``catalog_loss`` (the full logit matrix against the fused cross-entropy, fp32).
On a CPU without bf16 matrix units (no ``amx_bf16``/``avx512_bf16``) torch's bf16 matrix products
run about six times slower than fp32 (a LARES step on ML-100K: 0.6 s fp32, 3.7 s bf16), so the bf16
runs there are ``--bf16 emulated``: every bf16 matrix product (mm, addmm, bmm, baddbmm, 89% of a
bf16 step's time) is computed as bf16 matrix units compute it: bf16 operands, exact products summed
in fp32, one rounding of the result to bf16; everything else (the bf16 element-wise ops autocast
leaves, the fp32 loss) runs natively. Only the summation order can differ from a native kernel's,
which ``--check-emulation`` measures: native and emulated bf16 on the same SPT steps.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean, pstdev

import torch
from results_io import command_line, write_result_json
from speed_common import INSTRUMENTS_FILE, add_data_dir_argument, build, instruments_missing, load_data, spt_batches, spt_config
from torch.utils._python_dispatch import TorchDispatchMode

from lares_rl.cli import main as lares_rl_main
from lares_rl.core.precision import Numerics, bf16_matrix_units, use_numerics
from lares_rl.spt.distributed import SPTStep
from lares_rl.spt.losses import total_loss

ROOT = Path(__file__).resolve().parents[1]
# Per change: (today's path, the new path) as the value each run sets, and the overrides that set it.
CHANGES = {
    "precision": (("fp32", "bf16"), lambda value: [f"precision={value}", "spt.catalog_loss=fused"]),
    "catalog_loss": (("full", "fused"), lambda value: ["precision=fp32", f"spt.catalog_loss={value}"]),
}
aten = torch.ops.aten
PRODUCTS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}


class EmulatedBF16Products(TorchDispatchMode):
    """Matrix products with a bf16 operand computed in fp32 on the (exactly) widened operands and
    rounded once to bf16: the numerics of bf16 matrix units, at fp32 speed."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in PRODUCTS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            wide = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 else a for a in args]
            return func(*wide, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


def child(cli_args: list[str], emulate: bool) -> None:
    """``lares-rl <cli_args>`` in this process, under :class:`EmulatedBF16Products` when ``emulate``."""
    sys.argv = ["lares-rl", *cli_args]
    with EmulatedBF16Products() if emulate else contextlib.nullcontext():
        lares_rl_main()


def dataset_overrides(args: argparse.Namespace) -> list[str]:
    """The CLI's data set options for ``args.dataset`` (ML-100K is the default data set)."""
    if args.dataset == "ml-100k":
        return []
    path = args.data_dir / INSTRUMENTS_FILE
    if not path.is_file():
        raise SystemExit(instruments_missing(path))
    return ["dataset=amazon2023-instruments", f"dataset.path={path}", "spt.bucket_by_length=true"]


def spt_run(args: argparse.Namespace, seed: int, value: str) -> dict:
    """One SPT run in a child process (or the one a resumed benchmark finds finished); its best
    validation metrics and its seconds per epoch."""
    run_dir = args.runs_dir / f"{args.policy}_{value}_seed{seed}"
    metrics = run_dir / "metrics.json"
    start = time.perf_counter()
    if not (args.resume and metrics.is_file()):
        cli = [
            "spt",
            "preset=cpu",
            f"policy={args.policy}",
            f"spt.epochs={args.epochs}",
            f"seed={seed}",
            *CHANGES[args.change][1](value),
            *dataset_overrides(args),
            "progress=false",
        ]
        saved = run_dir / "checkpoints" / "spt_last.pt"  # what a cut run left to continue from
        cli += [f"resume={run_dir}"] if args.resume and saved.is_file() else [f"hydra.run.dir={run_dir}"]
        emulate = value == "bf16" and args.bf16 == "emulated"
        command = [sys.executable, __file__, "--child", *(["--emulate"] if emulate else []), "--", *cli]
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    spt = json.loads(metrics.read_text())["spt"]
    label = f"bf16 ({args.bf16})" if value == "bf16" else value
    print(f"{label} seed {seed}: valid ndcg@10 {spt['valid']['ndcg@10']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return {
        "seed": seed,
        args.change: label,
        "valid_ndcg@10": spt["valid"]["ndcg@10"],
        "valid_recall@10": spt["valid"]["recall@10"],
        "best_epoch": spt["best_epoch"],
        "seconds_per_epoch": spt["seconds_per_epoch"],
    }


def check_emulation(steps: int) -> dict:
    """SPT steps of one LARES model on ML-100K in fp32, native bf16 and emulated bf16 (copies of one
    model, the same batches and seeds): the losses, and the largest relative difference between
    native and emulated bf16 next to the one between bf16 and fp32."""
    data = load_data("ml-100k", ROOT)
    cfg = spt_config(catalog_loss="fused")
    base = build("lares", data)
    losses = {}
    for mode in ("fp32", "native", "emulated"):
        policy = copy.deepcopy(base).train()
        optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        with use_numerics(Numerics("fp32" if mode == "fp32" else "bf16")):
            step = SPTStep(policy, cfg)
        batches, losses[mode] = spt_batches(policy, data, cfg), []
        for index in range(steps):
            batch, positive = next(batches)
            torch.manual_seed(index)
            with EmulatedBF16Products() if mode == "emulated" else contextlib.nullcontext():
                loss = total_loss(step(batch, positive), index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            losses[mode].append(loss.item())

    def worst(a: str, b: str) -> float:
        return max(abs(x - y) / abs(x) for x, y in zip(losses[a], losses[b]))

    result = {"steps": steps, "losses": losses, "native_vs_emulated": worst("native", "emulated"), "bf16_vs_fp32": worst("native", "fp32")}
    print(
        f"{steps} SPT steps, largest relative loss difference: native vs emulated bf16 {result['native_vs_emulated']:.1e}, bf16 vs fp32 {result['bf16_vs_fp32']:.1e}"
    )
    return result


def table(runs: list[dict], change: str) -> str:
    lines = [
        f"| {change} | "
        + " | ".join(f"seed {r['seed']}" for r in runs if r[change] == runs[0][change])
        + " | mean | spread (max - min) | wall s/epoch |"
    ]
    lines.append("|---" * (len(lines[0].split("|")) - 2) + "|")
    for label in dict.fromkeys(r[change] for r in runs):
        mine = [r for r in runs if r[change] == label]
        ndcg = [r["valid_ndcg@10"] for r in mine]
        seconds = mean(r["seconds_per_epoch"] for r in mine)
        lines.append(
            f"| {label} | "
            + " | ".join(f"{v:.4f}" for v in ndcg)
            + f" | {mean(ndcg):.4f} ± {pstdev(ndcg):.4f} | {max(ndcg) - min(ndcg):.4f} | {seconds:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--change", choices=sorted(CHANGES), default="precision", help="the speed change to compare with today's path")
    parser.add_argument("--dataset", choices=["ml-100k", "instruments"], default="ml-100k")
    add_data_dir_argument(parser)
    parser.add_argument("--policy", default="lares")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    default_mode = "native" if bf16_matrix_units(torch.device("cpu")) else "emulated"
    parser.add_argument("--bf16", choices=["native", "emulated"], default=default_mode, help=f"default here: {default_mode}")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each one thread)")
    parser.add_argument("--resume", action="store_true", help="keep the runs that finished before; continue one that was cut short")
    parser.add_argument(
        "--check-emulation", type=int, default=0, metavar="STEPS", help="first compare native and emulated bf16 on STEPS SPT steps"
    )
    parser.add_argument("--runs-dir", type=Path, help="default: benchmarks/runs/<the results file's name>")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/<change>_parity[_<dataset>_<policy>].json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--emulate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("cli", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.cli, args.emulate)
        return
    command = "OMP_NUM_THREADS=1 " + command_line("accuracy_parity.py", args, skip=("child", "emulate", "cli", "resume"))
    name = f"{args.change}_parity" + ("" if (args.dataset, args.policy) == ("ml-100k", "lares") else f"_{args.dataset}_{args.policy}")
    args.out = args.out or ROOT / "benchmarks" / "results" / f"{name}.json"
    args.runs_dir = args.runs_dir or ROOT / "benchmarks" / "runs" / name
    torch.set_num_threads(1)
    emulation = check_emulation(args.check_emulation) if args.check_emulation else None
    today, new = CHANGES[args.change][0]
    jobs = [(seed, value) for seed in args.seeds for value in (today, new)]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: spt_run(args, *job), jobs))
    runs.sort(key=lambda r: (r[args.change] != today, r["seed"]))
    print(table(runs, args.change))
    payload = {
        "command": command,
        "change": args.change,
        "dataset": args.dataset,
        "policy": args.policy,
        "epochs": args.epochs,
        "runs": runs,
        "emulation_check": emulation,
        "torch": torch.__version__,
    }
    write_result_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
