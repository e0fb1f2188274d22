"""Distributed numbers for docs/distributed.md: 2-process vs 1-process SPT (torchrun, gloo), RPT
collection frames/s with 1 and 2 worker processes, and RPT with 1 vs 2 DDP learner processes.

SPT: the real CLI under ``torchrun --nproc-per-node=1`` and ``=2`` with the same global batch on
ML-100K, one thread per process, a deterministic model (dropout 0, T0 = 0) so that the two loss
curves must agree; reports the largest difference per loss term and samples/s. Collection: the
latent_pg actor of an SPT checkpoint over every ML-100K training row, ``--batches`` batches of
``--histories`` x G rows, weights synced after each batch, startup excluded. RPT learners: the
real ``lares-rl rpt`` from the same checkpoint under ``torchrun --nproc-per-node=1`` and ``=2``
(latent_pg, ``--rpt-batches`` batches of ``--histories`` global histories, one thread per
process, the filter computed once and cached); frames/s of the whole loop (collect + update,
rank 0's clock) and the largest loss difference between the two.

    python benchmarks/distributed.py --out benchmarks/results/distributed.json
    python benchmarks/distributed.py --parts rpt_learners   # only the RPT DDP rows, merged into --out
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from results_io import write_result_text

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "benchmarks" / "runs" / "ml-100k__lares_cosine__dense__L20" / "seed0" / "checkpoints" / "spt_best.pt"


def torchrun_cli(workdir: Path, nproc: int, command: str, overrides: list[str]) -> tuple[dict[str, list[float]], dict, float]:
    """One `lares-rl <command>` under torchrun with ``nproc`` processes, one thread each: its scalar
    curves (TensorBoard), its section of metrics.json and the wall time."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = workdir / f"{command}_{nproc}"
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "lares_rl.cli",
        command,
        *overrides,
        f"hydra.run.dir={run_dir}",
        f"cache_dir={workdir / 'cache'}",
    ]
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=workdir, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{command} torchrun nproc={nproc} failed:\n{result.stderr[-4000:]}")
    events = EventAccumulator(str(run_dir / "tb" / command))
    events.Reload()
    curves = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return curves, json.loads((run_dir / "metrics.json").read_text())[command], wall


def spt_run(workdir: Path, nproc: int, args: argparse.Namespace) -> dict:
    """One `lares-rl spt` under torchrun; its losses (TensorBoard), metrics.json and wall time."""
    curves, summary, wall = torchrun_cli(
        workdir,
        nproc,
        "spt",
        [
            "dataset=ml-100k",
            "device=cpu",
            "progress=false",
            "spt.mode=dense",
            f"spt.batch_size={args.spt_batch}",
            "spt.epochs=1",
            "policy.dropout=0",
            "policy.t0_init=zero",
        ],
    )
    losses = {tag: values for tag, values in curves.items() if "/losses/" in tag}
    return {
        "losses": losses,
        "samples_per_sec": summary["samples_per_sec"],
        "epoch_seconds": summary["seconds_per_epoch"],
        "wall_seconds": wall,
        "valid_ndcg@10": summary["valid"]["ndcg@10"],
    }


def collection_rate(workers: int, args: argparse.Namespace) -> dict:
    """Frames/s of ``workers`` collector processes (1 = the in-process Collector of train_rpt)."""
    from torchrl.collectors import Collector

    from lares_rl.core.checkpoint import load_checkpoint, policy_from_checkpoint
    from lares_rl.data import DatasetConfig, load_dataset
    from lares_rl.rewards.builtin import ndcg
    from lares_rl.rpt.collectors import multi_process_collector, sync_weights
    from lares_rl.rpt.config import RPTConfig
    from lares_rl.rpt.episodes import rows_env
    from lares_rl.rpt.learner import build_learner

    payload = load_checkpoint(CHECKPOINT)
    data = load_dataset(DatasetConfig.from_mapping(payload["config"]["dataset"]))
    max_len = int(payload["dataset"]["max_len"])
    policy = policy_from_checkpoint(payload, "cpu")
    cfg = RPTConfig(
        algorithm="latent_pg",
        exploration="gaussian",
        group_size=8,
        slate_size=100,
        histories_per_batch=args.histories,
        collector_workers=workers,
    )
    _, _, targets = data.train_rows(max_len)
    kept = torch.arange(len(targets))
    reward_fn = partial(ndcg, k=100)
    learner = build_learner(policy, cfg, device=torch.device("cpu"), eval_seed=0, seed=0)
    start = time.perf_counter()
    if workers == 1:
        env = rows_env(
            data, kept, targets, histories=args.histories, cfg=cfg, reward_fn=reward_fn, max_len=max_len, seed=0, device=torch.device("cpu")
        )
        collector = Collector(
            env, learner.actor, frames_per_batch=env.batch_size[0], total_frames=-1, device="cpu", auto_register_policy_transforms=False
        )
    else:
        import copy

        collector = multi_process_collector(
            data=data,
            kept=kept,
            targets=targets,
            histories=args.histories,
            cfg=cfg,
            reward_fn=reward_fn,
            max_len=max_len,
            seed=0,
            actor=learner.actor,
            policy=copy.deepcopy(policy),
            eval_seed=0,
        )
    batches = iter(collector)
    next(batches)  # the first batch includes start-up (worker spawn, imports)
    startup = time.perf_counter() - start
    frames, start = 0, time.perf_counter()
    for _ in range(args.batches):
        frames += next(batches).numel()
        sync_weights(collector, learner.actor)
    seconds = time.perf_counter() - start
    collector.shutdown()
    return {"workers": workers, "frames": frames, "seconds": seconds, "frames_per_sec": frames / seconds, "startup_seconds": startup}


def rpt_learner_run(workdir: Path, nproc: int, args: argparse.Namespace) -> dict:
    """One `lares-rl rpt` under torchrun with DDP learners; its losses, RPT summary and wall time."""
    curves, summary, wall = torchrun_cli(
        workdir,
        nproc,
        "rpt",
        [
            f"checkpoint={CHECKPOINT}",
            "device=cpu",
            "progress=false",
            "rpt=latent_pg",
            f"rpt.histories_per_batch={args.histories}",
            f"rpt.batches_per_epoch={args.rpt_batches}",
            "rpt.epochs=1",
            f"rpt.probe_every={args.rpt_batches + 1}",
        ],
    )
    keep = ("loop_frames_per_sec", "collect_frames_per_sec", "seconds_per_batch", "frames", "filter_seconds")
    return {"losses": curves["rpt/losses/total"], **{key: summary[key] for key in keep}, "wall_seconds": wall}


def drift(one: list[float], two: list[float]) -> dict[str, float]:
    """Largest |difference| of two loss curves over the steps [0, 1), [1, 10), [10, 50), [50, last)
    and at the last step: the epoch's short last batch, which W processes cut to a multiple of W."""
    diffs = [abs(a - b) for a, b in zip(one, two)]
    last = len(diffs) - 1
    spans = {
        "step 0": (0, 1),
        "steps 1-9": (1, 10),
        "steps 10-49": (10, 50),
        "steps 50 to last-1": (50, last),
        "last (short) batch": (last, last + 1),
    }
    return {name: max(diffs[lo:hi]) for name, (lo, hi) in spans.items() if hi > lo}


def spt_record(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {n: spt_run(Path(tmp), n, args) for n in (1, 2)}
    one, two = runs[1], runs[2]
    return {
        "steps": len(one["losses"]["spt/losses/total"]),
        "max_abs_loss_difference": {tag: max(abs(a - b) for a, b in zip(one["losses"][tag], two["losses"][tag])) for tag in one["losses"]},
        # how the difference grows: float rounding (other summation orders) compounds through Adam
        "total_loss_difference_by_steps": drift(one["losses"]["spt/losses/total"], two["losses"]["spt/losses/total"]),
        **{f"nproc{n}": {k: v for k, v in run.items() if k != "losses"} for n, run in runs.items()},
    }


def rpt_learner_record(args: argparse.Namespace) -> dict:
    """1 vs 2 DDP learner processes on the same global batch (the 1-process run fills the filter cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = {n: rpt_learner_run(Path(tmp), n, args) for n in (1, 2)}
    return {
        "histories_per_batch": args.histories,
        "batches": args.rpt_batches,
        "max_abs_total_loss_difference": max(abs(a - b) for a, b in zip(runs[1]["losses"], runs[2]["losses"])),
        **{f"nproc{n}": {k: v for k, v in run.items() if k != "losses"} for n, run in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spt-batch", type=int, default=64)
    parser.add_argument("--histories", type=int, default=200)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rpt-batches", type=int, default=5)
    parser.add_argument("--parts", nargs="+", choices=("spt", "collection", "rpt_learners"), default=["spt", "collection", "rpt_learners"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distributed.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    record: dict = (
        json.loads(args.out.read_text()) if args.out.is_file() and len(args.parts) < 3 else {}
    )  # a partial run keeps the other parts
    record.update({"cpus": os.cpu_count(), "visible_cpus": len(os.sched_getaffinity(0))})
    command = "python benchmarks/distributed.py " + " ".join(sys.argv[1:])
    if "spt" in args.parts:
        record["spt"] = {"command": command, "load_before": os.getloadavg(), **spt_record(args)}
    if "collection" in args.parts:
        record["collection"] = [
            {"command": command, "load_before": os.getloadavg(), **collection_rate(workers, args)} for workers in (1, 2)
        ]
    if "rpt_learners" in args.parts:
        record["rpt_learners"] = {"command": command, "load_before": os.getloadavg(), **rpt_learner_record(args)}
    write_result_text(args.out, json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
