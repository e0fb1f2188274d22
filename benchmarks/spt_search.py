"""Equal-budget validation search for SPT (SASRec or LARES) by successive halving.

    OMP_NUM_THREADS=1 python benchmarks/spt_search.py --dataset ml-100k --policy sasrec --trials 16 --rungs 3 9 27 --keep 0.5 \\
        --space spt.lr=0.0005,0.001,0.002 policy.dropout=0.2,0.35,0.5 spt.batch_size=64,128,256
    OMP_NUM_THREADS=1 python benchmarks/spt_search.py --dataset ml-100k --policy lares --trials 16 --rungs 3 9 27 --keep 0.5 --space space.yaml
    python benchmarks/spt_search.py ... the same flags ... --resume      # after Ctrl-C or a crash

The grid (``--space``: inline ``key=v1,v2`` pairs over ``spt.*``/``policy.*`` keys, or a YAML/JSON
file mapping those keys to value lists) is sampled down to ``--trials`` configurations with
``--seed``. Every trial trains with ``train_spt`` to the first rung's epochs; the best ``--keep``
share by validation NDCG@10 (the best-epoch value train_spt returns) continues, by resuming its own
run directory with a larger ``spt.epochs``, to the next rung, and so on; the winner is the best
trial at the last rung. Selection reads the validation split only: the test split is never evaluated.

Equal budget: the number of trials at each rung and the epochs they train depend only on
``--trials``, ``--rungs`` and ``--keep`` (``spt.patience`` is set to the last rung, so early stopping
never ends a trial before its rung). So SASRec and LARES searched with the same three flags get the
same number of trials and the same training epochs, whatever their grids; only the seconds differ.
That holds as long as each grid has at least ``--trials`` points: a smaller grid runs all its points,
fewer trials, and the script warns.

The JSON (default ``benchmarks/results/search/<dataset>__<policy>.json``) is rewritten after every
trial's rung, so ``--resume`` continues an interrupted search from it and the trials' run
directories: finished rungs are not retrained, an interrupted one continues from its saved state.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
from benchmark_data import add_dataset_arguments, config_file, key_values, load_benchmark_dataset
from omegaconf import OmegaConf
from results_io import command_line, machine_description, portable, repo_path, write_result_json

from lares_rl.core.checkpoint import build_policy
from lares_rl.core.config import flatten_keys, nearest_keys, section_from_mapping
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import TrainingInterrupted
from lares_rl.core.runtime import seed_everything
from lares_rl.data import SequenceData
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.train import train_spt

ROOT = Path(__file__).resolve().parents[1]
SEARCH_CONTROLLED = {"epochs": "--rungs", "patience": "--rungs", "mode": "--mode"}  # spt keys the search itself sets
POLICY_FIXED = ("name", "_target_")
METRIC = "ndcg@10"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(parser)
    parser.add_argument("--policy", choices=sorted(p.stem for p in (ROOT / "configs" / "policy").glob("*.yaml")), default="sasrec")
    parser.add_argument("--space", nargs="+", required=True, help="a YAML/JSON file, or key=v1,v2 pairs over spt.* and policy.* keys")
    parser.add_argument("--trials", type=int, default=16, help="configurations sampled from the grid (all when the grid is smaller)")
    parser.add_argument("--rungs", type=int, nargs="+", default=[2, 6, 18], help="increasing epoch counts at which trials are cut")
    parser.add_argument("--keep", type=float, default=0.5, help="share of trials kept at each rung but the last, in (0, 1)")
    parser.add_argument("--seed", type=int, default=0, help="samples the trials and seeds every trial's training")
    parser.add_argument("--mode", choices=["rows", "dense"], default="dense")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="spt.batch_size of every trial unless the space varies it; default: configs/spt/default.yaml's",
    )
    parser.add_argument("--max-len", type=int, default=None, help="default: the dataset config's")
    parser.add_argument("--spt-set", nargs="*", default=[], help="fixed spt overrides key=value for every trial")
    parser.add_argument("--policy-set", nargs="*", default=[], help="fixed policy overrides key=value for every trial, e.g. d_model=32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="default: benchmarks/results/search/<dataset>__<policy>.json")
    parser.add_argument("--runs-dir", default=None, help="trial run directories; default: benchmarks/runs/search/<--out's name>/")
    parser.add_argument("--resume", action="store_true", help="continue the search recorded in --out (same flags) and its run directories")
    return parser.parse_args()


# ----------------------------------------------------------------------------- input checks


def parse_space(items: list[str]) -> dict[str, list]:
    """``--space`` as {dotted key: values}: one YAML/JSON file (flat dotted keys or nested
    ``spt:``/``policy:`` sections) or ``key=v1,v2`` pairs, each value YAML-typed like an override."""
    if len(items) == 1 and "=" not in items[0]:
        path = Path(items[0])
        if not path.is_file():
            raise SystemExit(
                f"error: --space {items[0]}: no such file; pass a YAML/JSON file or key=v1,v2 pairs such as spt.lr=0.001,0.002"
            )
        loaded = OmegaConf.to_container(OmegaConf.load(path))
        if not isinstance(loaded, dict):
            raise SystemExit(f"error: --space {path}: must map keys such as spt.lr to value lists")
        return {key: values if isinstance(values, list) else [values] for key, values in flatten_keys(loaded).items()}
    space = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --space {item!r}: expected key=v1,v2 (e.g. spt.lr=0.001,0.002)")
        values = raw.split(",")
        space[key] = [] if "" in values else [key_values([f"v={value}"])["v"] for value in values]
    return space


def check_space(space: dict[str, list], policy_cfg: dict) -> None:
    """Every key must be one a trial can set and every value list non-empty, so a typo fails now
    and not after hours of trials that all silently ran the default."""
    valid = [f"spt.{f.name}" for f in dataclasses.fields(SPTConfig) if f.name not in SEARCH_CONTROLLED]
    valid += [f"policy.{key}" for key in policy_cfg if key not in POLICY_FIXED]
    for key, values in space.items():
        section, _, name = key.partition(".")
        if section == "spt" and name in SEARCH_CONTROLLED:
            raise SystemExit(f"error: --space {key}: the search sets it (use {SEARCH_CONTROLLED[name]}); drop it from the space")
        if key not in valid:
            near = nearest_keys(key, valid)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            raise SystemExit(f"error: --space {key}: unknown key; {hint}valid keys: {', '.join(valid)}")
        if not values:
            raise SystemExit(f"error: --space {key}: empty value list; give at least one value, e.g. {key}=v1,v2")


def check_fixed(spt_set: dict, policy_set: dict, policy_cfg: dict) -> None:
    """``--spt-set``/``--policy-set`` keys must exist too; their values are checked with the trials."""
    spt_keys = [f.name for f in dataclasses.fields(SPTConfig) if f.name not in SEARCH_CONTROLLED]
    policy_keys = [key for key in policy_cfg if key not in POLICY_FIXED]
    for flag, overrides, valid in (("--spt-set", spt_set, spt_keys), ("--policy-set", policy_set, policy_keys)):
        for key in overrides:
            if key not in valid:
                near = nearest_keys(key, valid)
                hint = f"did you mean {' or '.join(near)}? " if near else ""
                raise SystemExit(f"error: {flag} {key}: unknown or search-controlled key; {hint}valid keys: {', '.join(valid)}")


def check_schedule(trials: int, rungs: list[int], keep: float) -> None:
    if trials < 1:
        raise SystemExit(f"error: --trials must be >= 1, got {trials}")
    if rungs[0] < 1 or any(b <= a for a, b in zip(rungs, rungs[1:])):
        raise SystemExit(
            f"error: --rungs must be strictly increasing epoch counts >= 1, got {' '.join(map(str, rungs))}; e.g. --rungs 2 6 18"
        )
    if not 0.0 < keep < 1.0:
        raise SystemExit(f"error: --keep must lie strictly between 0 and 1, got {keep}; e.g. --keep 0.5")


# ----------------------------------------------------------------------------- the schedule


def sample_trials(space: dict[str, list], trials: int, seed: int) -> list[dict]:
    """``trials`` grid points drawn without replacement with ``seed`` (the whole grid when it is
    smaller), in grid order, so the same flags always give the same trials."""
    keys = sorted(space)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    if trials >= len(grid):
        return grid
    return [grid[i] for i in sorted(random.Random(seed).sample(range(len(grid)), trials))]


def survivors(count: int, keep: float) -> int:
    """Trials that go on to the next rung: ``floor(count * keep)``, never fewer than one."""
    return max(1, math.floor(count * keep))


def planned_epochs(trials: int, rungs: list[int], keep: float) -> int:
    """Training epochs the whole search costs: each rung's trials train from the previous rung on."""
    total, count, previous = 0, trials, 0
    for rung in rungs:
        total += count * (rung - previous)
        count, previous = survivors(count, keep), rung
    return total


def alive_at(trials: list[dict], rung_index: int, keep: float) -> list[int]:
    """Indices of the trials that reach rung ``rung_index``, recomputed from the recorded results
    (ties go to the earlier trial), so a resumed search cuts exactly as the first run did."""
    alive = list(range(len(trials)))
    for index in range(rung_index):
        ranked = sorted(alive, key=lambda t: (-trials[t]["rungs"][index][f"valid_{METRIC}"], t))
        alive = sorted(ranked[: survivors(len(alive), keep)])
    return alive


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class SearchContext:
    """What every trial shares: the data, the base configs the grid points update, the schedule."""

    data: SequenceData
    dataset_cfg: dict
    max_len: int
    base_spt: dict
    base_policy: dict
    rungs: list[int]
    seed: int
    resume: bool


def trial_configs(settings: dict, base_spt: dict, base_policy: dict, epochs: int, patience: int) -> tuple[SPTConfig, dict]:
    """The SPT section and policy config of one trial: the base configs updated by its grid point."""
    spt = base_spt | {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("spt.")} | {"epochs": epochs, "patience": patience}
    policy = base_policy | {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("policy.")}
    return section_from_mapping(SPTConfig, spt, "spt"), policy


def check_trials(trials: list[dict], base_spt: dict, base_policy: dict, data: SequenceData, max_len: int, rungs: list[int]) -> None:
    """Build every trial's configs and model before training any, so a bad value (a negative lr, an
    unknown backbone) stops the search at once with the trial named, not hours in."""
    for index, settings in enumerate(trials):
        try:
            _, policy_cfg = trial_configs(settings, base_spt, base_policy, rungs[-1], rungs[-1])
            build_policy(policy_cfg, data.num_items, max_len)
        except (LaresError, TypeError, ValueError) as err:
            raise SystemExit(
                f"error: trial {index} ({settings}) is invalid: {err}; fix that value in --space, --spt-set or --policy-set"
            ) from None


def train_rung(trial: dict, epochs: int, context: SearchContext) -> dict:
    """Train one trial to ``epochs`` epochs, continuing its run directory when it holds a saved
    state (the previous rung, or an interrupted try of this one), and return its validation result."""
    run_dir = repo_path(trial["run_dir"])
    resume = (run_dir / "checkpoints" / "spt_last.pt").is_file() and (bool(trial["rungs"]) or context.resume)
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    spt_cfg, policy_cfg = trial_configs(trial["settings"], context.base_spt, context.base_policy, epochs, context.rungs[-1])
    seed_everything(context.seed)
    policy = build_policy(policy_cfg, context.data.num_items, context.max_len)
    start = time.perf_counter()
    try:
        summary = train_spt(
            policy=policy,
            policy_config=policy_cfg,
            data=context.data,
            max_len=context.max_len,
            cfg=spt_cfg,
            eval_cfg=EvalConfig(),
            run_dir=run_dir,
            device=torch.device("cpu"),
            seed=context.seed,
            config={"dataset": context.dataset_cfg, "policy": policy_cfg},
            progress=False,
            resume=resume,
        )
    except TrainingInterrupted:
        raise SystemExit(
            f"[search] interrupted in trial {trial['trial']}; its state is saved under {run_dir}. Continue with the same command and --resume"
        ) from None
    return {
        "epochs": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        f"valid_{METRIC}": summary["valid"][METRIC],
        "valid": summary["valid"],
        "seconds": time.perf_counter() - start,
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "checkpoint": summary["checkpoint"],
    }


def run_search(record: dict, context: SearchContext, out_path: Path) -> None:
    """Successive halving over the recorded trials; the record is saved after every trained rung."""
    rungs, keep, start = record["rungs"], record["keep"], time.perf_counter()
    wall_before = record["wall_seconds"]

    def save() -> None:
        record["epochs_spent"] = sum(t["rungs"][-1]["epochs"] for t in record["trials"] if t["rungs"])
        record["wall_seconds"] = wall_before + time.perf_counter() - start
        write_result_json(out_path, record)

    for index, epochs in enumerate(rungs):
        for position in alive_at(record["trials"], index, keep):
            trial = record["trials"][position]
            if len(trial["rungs"]) > index:
                continue
            trial["rungs"].append(train_rung(trial, epochs, context))
            print(
                f"[search] trial {position} rung {index} ({epochs} epochs): valid {METRIC} {trial['rungs'][-1][f'valid_{METRIC}']:.4f}  {trial['settings']}",
                flush=True,
            )
            save()
    finalists = alive_at(record["trials"], len(rungs) - 1, keep)
    best = max(finalists, key=lambda t: (record["trials"][t]["rungs"][-1][f"valid_{METRIC}"], -t))
    winner = record["trials"][best]
    record["winner"] = {
        "trial": best,
        "settings": winner["settings"],
        f"valid_{METRIC}": winner["rungs"][-1][f"valid_{METRIC}"],
        "epochs": winner["rungs"][-1]["epochs"],
        "checkpoint": winner["rungs"][-1]["checkpoint"],
    }
    record["finished"] = True
    save()


# ----------------------------------------------------------------------------- records


def markdown_table(record: dict) -> str:
    """One row per trial: its varied settings and validation NDCG@10 at each rung it reached; the
    winner in bold. The whole search in one table, for the report."""
    keys = sorted(record["space"])
    head = ["trial", *keys, *(f"valid NDCG@10 @{r}" for r in record["rungs"])]
    winner = (record.get("winner") or {}).get("trial")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(keys + ["trial"]) + "---:|" * len(record["rungs"])]
    for trial in record["trials"]:
        scores = [f"{r[f'valid_{METRIC}']:.4f}" for r in trial["rungs"]] + ["-"] * (len(record["rungs"]) - len(trial["rungs"]))
        if trial["trial"] == winner:
            scores[-1] = f"**{scores[-1]}**"
        lines.append("| " + " | ".join([str(trial["trial"]), *(str(trial["settings"][k]) for k in keys), *scores]) + " |")
    footer = f"\n{record['policy']} on {record['dataset']}: {len(record['trials'])} trials, rungs {record['rungs']}, keep {record['keep']}, {record['epochs_spent']} epochs, {record['wall_seconds'] / 3600:.2f} h"
    return "\n".join(lines) + footer


def search_settings(
    args: argparse.Namespace, space: dict, trials: list[dict], base_spt: dict, base_policy: dict, dataset_cfg: dict, data: SequenceData
) -> dict:
    """Everything that decides which trials run and what they train on: a resumed search must match it."""
    return {
        "dataset": args.dataset,
        "dataset_config": dataset_cfg,
        "data_fingerprint": data.fingerprint,
        "policy": args.policy,
        "mode": args.mode,
        "max_len": int(dataset_cfg["max_len"]),
        "spt": base_spt,
        "policy_config": base_policy,
        "space": space,
        "trials_requested": args.trials,
        "grid_size": math.prod(len(v) for v in space.values()),
        "rungs": args.rungs,
        "keep": args.keep,
        "seed": args.seed,
        "planned_epochs": planned_epochs(len(trials), args.rungs, args.keep),
    }


def load_or_start(out_path: Path, settings: dict, trials: list[dict], runs_dir: Path, resume: bool, command: str) -> dict:
    """The saved record when resuming (refused if the flags differ), else a fresh one."""
    if resume:
        record = json.loads(out_path.read_text())
        changed = [key for key, value in settings.items() if record.get(key) != portable(json.loads(json.dumps(value)))]
        if changed:
            raise SystemExit(
                f"error: --resume: {out_path} was searched with other settings ({', '.join(changed)}); pass the same flags, or a new --out to start another search"
            )
        return record | {"command": command, "finished": False}
    return settings | {
        "trials": [{"trial": i, "settings": s, "run_dir": str(runs_dir / f"trial{i:03d}"), "rungs": []} for i, s in enumerate(trials)],
        "winner": None,
        "finished": False,
        "epochs_spent": 0,
        "wall_seconds": 0.0,
        "machine": machine_description(),
        "command": command,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    check_schedule(args.trials, args.rungs, args.keep)
    spt_set, policy_set = key_values(args.spt_set), key_values(args.policy_set)
    base_policy = config_file("policy", args.policy, policy_set)
    check_fixed(spt_set, policy_set, base_policy)
    space = parse_space(args.space)
    check_space(space, base_policy)
    controlled = {
        "mode": args.mode,
        "epochs": args.rungs[-1],
        "patience": args.rungs[-1],
    }  # each rung lowers epochs; patience never cuts a trial
    base_spt = config_file("spt", "default", spt_set) | controlled | ({"batch_size": args.batch_size} if args.batch_size else {})
    data, dataset_cfg = load_benchmark_dataset(
        args.dataset, key_values(args.dataset_set) | ({"max_len": args.max_len} if args.max_len else {}), args.beauty_path
    )
    trials = sample_trials(space, args.trials, args.seed)
    if len(trials) < args.trials:
        print(
            f"[search] warning: the grid has only {len(trials)} points, fewer than --trials {args.trials}: this search is not equal-budget with one that runs {args.trials}",
            flush=True,
        )
    check_trials(trials, base_spt, base_policy, data, int(dataset_cfg["max_len"]), args.rungs)

    out_path = Path(args.out or ROOT / "benchmarks" / "results" / "search" / f"{args.dataset}__{args.policy}.json")
    runs_dir = Path(args.runs_dir or ROOT / "benchmarks" / "runs" / "search" / out_path.stem)
    command = command_line("spt_search.py", args, skip=("out", "runs_dir", "beauty_path", "resume"))
    resumed = args.resume and out_path.is_file()  # a fresh search never picks up stale trial directories
    if args.resume and not resumed:
        print(f"[search] no saved search at {out_path}; starting it fresh", flush=True)
    record = load_or_start(
        out_path, search_settings(args, space, trials, base_spt, base_policy, dataset_cfg, data), trials, runs_dir, resumed, command
    )
    print(
        f"[search] {args.policy} on {args.dataset}: {len(trials)} trials, rungs {args.rungs}, keep {args.keep}: {record['planned_epochs']} training epochs",
        flush=True,
    )
    context = SearchContext(data, dataset_cfg, record["max_len"], base_spt, base_policy, args.rungs, args.seed, resumed)
    run_search(record, context, out_path)
    print(markdown_table(record))
    print(
        f"[search] winner: trial {record['winner']['trial']} {record['winner']['settings']} (valid {METRIC} {record['winner'][f'valid_{METRIC}']:.4f}); written to {out_path}",
        flush=True,
    )


if __name__ == "__main__":
    try:
        main()
    except LaresError as err:
        raise SystemExit(f"error: {err}") from None
