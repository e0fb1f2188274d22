"""``lares-rl <command> [hydra overrides]``: the one entry point.

Commands: ``run`` (the main job: SPT -> filter -> RPT -> test evaluation, next to a SASRec
baseline trained on the same split), ``spt`` (SPT only),
``rpt`` (RPT from ``checkpoint=<spt checkpoint>``), ``eval`` (a checkpoint on valid/test),
``sweep-k`` (a checkpoint over reasoning depths, table + plot), ``stats``, ``recommend`` (top-k
for JSON-lines histories; ``lares-rl recommend --help``). ``resume=<run dir>`` continues an
interrupted ``spt``, ``rpt`` (with the same ``checkpoint=``) or ``run`` exactly, in place.
Every run writes its composed config (``.hydra/``), checkpoints, ``metrics.json`` and TensorBoard
logs (``tb/``) into the Hydra run directory. A user mistake ends with one ``error:`` line and
exit status 2 (a misspelled key names the nearest valid ones); Hydra itself reports a bad group
option or a mistyped value.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import sys
import tempfile
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import hydra
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lares_rl.commands.overrides import unknown_key_errors
from lares_rl.commands.schemas import SCHEMAS, register_schemas, schema_node
from lares_rl.core.atomic import atomic_write_json
from lares_rl.core.checkpoint import build_policy, check_same_data, load_checkpoint, policy_from_checkpoint
from lares_rl.core.config import section_from_mapping, to_plain
from lares_rl.core.distributed import (
    DISTRIBUTED_COMMANDS,
    DistributedConfig,
    init_distributed,
    launch_command,
    launched_by_torchrun,
    shutdown,
)
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import TrainingInterrupted, load_training_state
from lares_rl.core.runtime import resolve_device, seed_everything
from lares_rl.core.tracking import Tracker, progress_enabled
from lares_rl.data import DatasetConfig, format_stats, load_dataset
from lares_rl.eval.adaptive_depth import check_halting_applies, format_histogram, steps_histogram
from lares_rl.eval.depth_sweep import sweep_depths, write_sweep
from lares_rl.eval.evaluation import EvalConfig, check_depth_applies, evaluate_policy
from lares_rl.eval.exposure import build_item_context
from lares_rl.eval.report import comparison_table, format_recommendations, results_table
from lares_rl.rewards.build import instantiate_reward
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.loop import train_rpt_with_test
from lares_rl.serve.cli import main as recommend_main
from lares_rl.serve.recommender import Recommender
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.train import train_spt

COMMANDS = ("run", "spt", "rpt", "eval", "sweep-k", "stats", "recommend")
# Sections that must match between an interrupted run and its resumption, per command, and the
# training state a resumable run has saved (``run`` saves spt_last.pt first, rpt_last.pt later).
RESUME_KEYS = {
    "spt": ("dataset", "policy", "spt", "seed", "eval"),
    "rpt": ("dataset", "rpt", "reward", "seed", "eval"),
    "run": ("dataset", "policy", "spt", "rpt", "reward", "seed", "eval", "baseline"),
}
RESUME_STATE = {"spt": "spt_last.pt", "rpt": "rpt_last.pt", "run": "spt_last.pt"}
# Policy keys the baseline takes from the run's policy, so both models have the same width and blocks.
BASELINE_SHARED_KEYS = ("backbone", "backbone_options", "d_model", "n_heads", "inner_size", "dropout", "n_pre_layers")
DISPLAY_NAMES = {"lares": "LARES", "sasrec": "SASRec"}


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _resume_dir(cfg: DictConfig, command: str = "spt") -> Path | None:
    """``resume=<run dir>``: continue that run in place, refusing a changed configuration or a run
    of another command. ``command`` picks the state that must exist and the sections compared.
    (For ``rpt`` the SPT checkpoint itself is compared by weights when RPT resumes.)"""
    if not cfg.get("resume"):
        return None

    run_dir = Path(str(cfg.resume))
    load_training_state(run_dir / "checkpoints" / RESUME_STATE[command])
    saved_path = run_dir / ".hydra" / "config.yaml"
    if saved_path.is_file():
        saved = OmegaConf.load(saved_path)
        saved_command = saved.get("command")
        if saved_command is not None and saved_command != command:
            raise LaresError(
                f"cannot resume {run_dir} with `lares-rl {command}`: it is a `lares-rl {saved_command}` run; use lares-rl {saved_command} resume={run_dir} {_replayed_overrides(run_dir)}"
            )

        def comparable(node, key: str):  # spt.epochs may grow: extending a run that hit its cap is a resume
            plain = to_plain(node.get(key))
            if key in SCHEMAS and isinstance(plain, dict):  # a run saved before its option listed a key ran with the default
                plain = {**to_plain(schema_node(key)), **plain}
            return {k: v for k, v in plain.items() if k != "epochs"} if key == "spt" and isinstance(plain, dict) else plain

        changed = [key for key in RESUME_KEYS[command] if comparable(saved, key) != comparable(cfg, key)]
        if changed:
            raise LaresError(
                f"cannot resume {run_dir}: the configuration differs in {', '.join(changed)}; pass the same overrides as the original run: {_replayed_overrides(run_dir)}"
            )
    return run_dir


def _load_data(cfg: DictConfig, dataset: dict | None = None):
    """The configured data set, or ``dataset`` (a plain dataset section) when given."""

    return load_dataset(DatasetConfig.from_mapping(dataset if dataset is not None else to_plain(cfg.dataset)), cfg.cache_dir)


def _eval_config(cfg: DictConfig):

    return section_from_mapping(EvalConfig, cfg.eval, "eval")


def _item_context(data, dataset: dict, policy, quiet: bool = False):
    """The run's item context (training popularity, categories, ``policy``'s item table): what
    beyond-accuracy rewards are bound to and what the beyond-accuracy columns are measured with."""

    context = build_item_context(data, dataset, policy)
    if not quiet:
        print(f"[lares-rl] beyond-accuracy measures: ild@K from {context.features()[1]}, novelty@K and popularity@K from training counts")
    return context


def command_stats(cfg: DictConfig) -> None:

    print(format_stats(_load_data(cfg)))


def command_spt(cfg: DictConfig, with_test: bool = True, quiet: bool = False, command: str = "spt") -> dict:
    """Train the configured policy with SPT (SASRec: plain CE), then evaluate the best weights on test.

    Under torchrun every rank trains its slice of each batch (DDP, spt_distributed); rank 0 alone
    reads the resumed state, writes the run directory and evaluates on test."""

    ctx, device = init_distributed(str(cfg.device), section_from_mapping(DistributedConfig, cfg.distributed, "distributed"))
    finished = False
    try:
        ctx.check_same("configuration", to_plain(cfg))
        results = _spt_on_ranks(cfg, ctx, device, with_test, quiet, command)
        finished = True
        return results
    finally:
        shutdown(ctx, wait=finished)


def _spt_on_ranks(cfg: DictConfig, ctx, device, with_test: bool, quiet: bool, command: str) -> dict:

    spt_cfg = section_from_mapping(SPTConfig, cfg.spt, "spt")
    eval_cfg = _eval_config(cfg)
    data = _load_data(cfg)
    max_len = int(cfg.dataset.max_len)
    seed_everything(int(cfg.seed))
    policy_config = to_plain(cfg.policy)
    policy = build_policy(policy_config, data.num_items, max_len)
    check_depth_applies(policy, cfg.eval.get("k"), "eval.k")
    check_halting_applies(policy, eval_cfg.halt_tol, "eval.halt_tol")
    resume_dir = ctx.on_main(lambda: _resume_dir(cfg, command))
    run_dir = ctx.broadcast_object(resume_dir or _run_dir())  # rank 0's Hydra directory: the others' may carry another timestamp
    if ctx.is_main:
        ranks = f" on {ctx.world_size} processes" if ctx.active else ""
        print(
            f"[lares-rl] {cfg.policy.name} on {cfg.dataset.name}{ranks}: {data.num_users} users, {data.num_items} items; run dir {run_dir}"
        )
    summary = train_spt(
        policy=policy,
        policy_config=policy_config,
        data=data,
        max_len=max_len,
        cfg=spt_cfg,
        eval_cfg=eval_cfg,
        run_dir=run_dir,
        device=device,
        seed=int(cfg.seed),
        config=to_plain(cfg),
        progress=bool(cfg.progress) and ctx.is_main,
        resume=resume_dir is not None,
        resume_command=f"{launch_command(ctx)} {command} resume={run_dir} {_replayed_overrides()}",
        dist_ctx=ctx,
    )
    results = {"spt": summary}
    if not ctx.is_main:
        return results
    if with_test:
        results["test"] = {
            "spt": evaluate_policy(
                policy, data, "test", max_len, eval_cfg, device, context=_item_context(data, to_plain(cfg.dataset), policy, quiet)
            )
        }
        if quiet:
            return results
        print(results_table(results["test"], eval_cfg.ks))
    atomic_write_json(run_dir / "metrics.json", results)
    print(
        f"[lares-rl] checkpoint {summary['checkpoint']}\n[lares-rl] metrics {run_dir / 'metrics.json'}\n[lares-rl] TensorBoard: tensorboard --logdir {run_dir / 'tb'}"
    )
    return results


def _rpt_setup(cfg: DictConfig, num_items: int, recurrent: bool, context):
    """RPT config + reward (with the item ``context`` fields it asks for bound) + the reward's
    config node, validated against the data and the policy: every user error surfaces here,
    before any training (also before SPT in ``run``)."""

    if int(cfg.rpt.slate_size) > num_items and not _overridden("rpt.slate_size"):
        # the configs' slate width (100 for latent_pg) cannot exceed a small catalog; reward.k follows
        # rpt.slate_size, so it shrinks with it. Only an explicit rpt.slate_size is an error. A copy:
        # the run's recorded config (what resume compares) stays as the user composed it.
        print(
            f"[lares-rl] rpt.slate_size={cfg.rpt.slate_size} is wider than the catalog ({num_items} items): RPT uses slates of {num_items}"
        )
        cfg = OmegaConf.merge(cfg, {"rpt": {"slate_size": num_items}})
    rpt_cfg = section_from_mapping(RPTConfig, cfg.rpt, "rpt")
    if not recurrent and rpt_cfg.exploration == "latent" and not _overridden("rpt.exploration"):
        # latent exploration (the reference) varies k and T0, which a backbone without a core
        # block (SASRec) does not have; only an explicit rpt.exploration=latent is an error
        print(
            "[lares-rl] this policy has no reasoning core, so latent exploration cannot vary anything: RPT samples slates instead (rpt.exploration=plackett_luce)"
        )
        rpt_cfg = replace(rpt_cfg, exploration="plackett_luce")
    reward_fn = instantiate_reward(cfg.reward, num_items, context)
    rpt_cfg.check_compatible(num_items=num_items, reward_fn=reward_fn, recurrent=recurrent)
    return rpt_cfg, reward_fn, cfg.reward


def _override_keys() -> list[str]:
    """The keys set on the command line (``key=``, ``+key=``, ``++key=``, ``~key``)."""
    if not HydraConfig.initialized():
        return []
    return [override.lstrip("+~").split("=", 1)[0] for override in HydraConfig.get().overrides.task]


def _replayed_overrides(run_dir: Path | None = None) -> str:
    """The overrides to pass again when resuming, shell-quoted: this call's, or those saved in
    ``run_dir/.hydra/overrides.yaml``. ``resume=``, ``checkpoint=`` (the hints name them) and
    ``hydra.*`` (the run directory is the resumed one) are left out."""

    if run_dir is not None:
        path = run_dir / ".hydra" / "overrides.yaml"
        overrides = [str(o) for o in OmegaConf.load(path)] if path.is_file() else []
    else:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("resume=", "checkpoint=", "hydra."))]
    return " ".join(shlex.quote(o) for o in kept)


def _overridden(key: str) -> bool:
    return key in _override_keys()


def _overrides_under(section: str) -> list[str]:
    """The command-line keys that set ``section`` itself (a group choice) or a key inside it."""
    return [key for key in _override_keys() if key == section or key.startswith(section + ".")]


def _check_policy_overrides(cfg: DictConfig, payload, path) -> None:
    """A checkpoint's policy is rebuilt from its own config, so a ``policy.*`` override would be
    silently ignored; one that restates the checkpoint's value (the training run's overrides,
    passed again) is fine, one that differs is an error saying what to do instead."""
    saved = OmegaConf.create(payload["policy_config"])
    for key in _overrides_under("policy"):
        field = key.partition(".")[2] or "name"
        wanted, trained = to_plain(OmegaConf.select(cfg.policy, field)), to_plain(OmegaConf.select(saved, field))
        if wanted != trained:
            raise LaresError(
                f"{key}={wanted!r} cannot change checkpoint {path}, whose policy has {field}={trained!r}: a checkpoint's policy comes from the checkpoint. "
                "Drop the override; set the reasoning depth with eval.k=N, or train a new model with it"
            )


def _load_spt_checkpoint(path, data, device, payload=None):
    """(payload, policy) of an SPT checkpoint trained on exactly ``data`` (``payload``: already loaded)."""

    payload = payload if payload is not None else load_checkpoint(path)
    check_same_data(payload, data, path)
    return payload, policy_from_checkpoint(payload, device)


def _checkpoint_dataset(cfg: DictConfig, payload) -> dict:
    """The dataset section a checkpoint was trained with, unless ``dataset`` or ``dataset.*`` is
    set on the command line: ``lares-rl eval checkpoint=...`` then needs no repeated overrides.
    The configured section for checkpoints that did not record one."""
    saved = (payload.get("config") or {}).get("dataset")
    if not isinstance(saved, dict) or _overrides_under("dataset"):
        return to_plain(cfg.dataset)
    print(
        f"[lares-rl] data set from the checkpoint's training config: {saved.get('name')} ({saved.get('path') or 'embedded'}); override dataset.* to use another"
    )
    return saved


def _checkpoint_inputs(cfg: DictConfig, command: str, device=None):
    """(payload, policy, data, device, config) for the commands that start from ``checkpoint=``;
    ``config`` is the plain run config with the policy and data set actually used (the
    checkpoint's), which is what RPT records in its checkpoint and TensorBoard hparams.
    ``device``: this rank's under torchrun (default: ``cfg.device`` resolved)."""

    if cfg.checkpoint is None:
        raise LaresError(f"checkpoint is not set; run `lares-rl {command} checkpoint=<run dir>/checkpoints/spt_best.pt`")
    device = device or resolve_device(cfg.device)
    payload = load_checkpoint(cfg.checkpoint)
    dataset = _checkpoint_dataset(cfg, payload)
    data = _load_data(cfg, dataset)
    payload, policy = _load_spt_checkpoint(cfg.checkpoint, data, device, payload)
    _check_policy_overrides(cfg, payload, cfg.checkpoint)
    check_depth_applies(policy, cfg.eval.get("k"), "eval.k")
    check_halting_applies(policy, cfg.eval.get("halt_tol"), "eval.halt_tol")
    config = {**to_plain(cfg), "policy": dict(payload["policy_config"]), "dataset": dataset}
    return payload, policy, data, device, config


def _rpt_with_before_after(
    cfg: DictConfig,
    payload,
    policy,
    data,
    rpt_cfg,
    reward_fn,
    eval_cfg,
    device,
    run_dir: Path,
    resume: bool,
    resume_command: str,
    config: dict,
    context,
    dist_ctx=None,
) -> dict:
    """Valid/test before, RPT (resumed from ``run_dir`` when ``resume``), valid/test after (the best
    RPT weights); ``config`` is what the RPT checkpoint and hparams record; ``context`` (the SPT
    model's) adds the beyond-accuracy measures to every evaluation."""

    seed_everything(int(cfg.seed))
    return train_rpt_with_test(
        policy=policy,
        policy_config=payload["policy_config"],
        data=data,
        max_len=int(payload["dataset"]["max_len"]),
        cfg=rpt_cfg,
        reward_fn=reward_fn,
        eval_cfg=eval_cfg,
        run_dir=run_dir,
        device=device,
        seed=int(cfg.seed),
        config=config,
        progress=bool(cfg.progress),
        resume=resume,
        resume_command=resume_command,
        filter_cache_dir=Path(str(cfg.cache_dir)) / "rpt_filter",
        item_context=context,
        dist_ctx=dist_ctx,
    )


def command_rpt(cfg: DictConfig) -> dict:
    """RPT from ``checkpoint=<spt checkpoint>``, then valid/test before and after in metrics.json.
    ``resume=<run dir>`` continues an interrupted ``rpt`` run (same checkpoint and overrides).

    Under torchrun every rank collects and trains on its share of each batch (DDP learners,
    rpt_distributed); rank 0 alone reads the resumed state, writes the run directory and
    evaluates on test."""

    ctx, device = init_distributed(str(cfg.device), section_from_mapping(DistributedConfig, cfg.distributed, "distributed"))
    finished = False
    try:
        ctx.check_same("configuration", to_plain(cfg))
        results = _rpt_on_ranks(cfg, ctx, device)
        finished = True
        return results
    finally:
        shutdown(ctx, wait=finished)


def _rpt_on_ranks(cfg: DictConfig, ctx, device) -> dict:

    eval_cfg = _eval_config(cfg)
    payload, policy, data, device, config = _checkpoint_inputs(cfg, "rpt", device)
    context = _item_context(data, config["dataset"], policy, quiet=not ctx.is_main)
    rpt_cfg, reward_fn, _ = _rpt_setup(cfg, data.num_items, bool(getattr(policy, "recurrent", False)), context)
    resume_dir = ctx.on_main(lambda: _resume_dir(cfg, "rpt"))
    run_dir = ctx.broadcast_object(resume_dir or _run_dir())  # rank 0's Hydra directory: the others' may carry another timestamp
    if ctx.is_main:
        ranks = f" on {ctx.world_size} processes" if ctx.active else ""
        print(
            f"[lares-rl] rpt ({rpt_cfg.algorithm}) from {cfg.checkpoint} on {data.name}{ranks}: {data.num_users} users, {data.num_items} items; run dir {run_dir}"
        )
    hint = f"{launch_command(ctx)} rpt resume={run_dir} checkpoint={cfg.checkpoint} {_replayed_overrides()}"
    outcome = _rpt_with_before_after(
        cfg,
        payload,
        policy,
        data,
        rpt_cfg,
        reward_fn,
        eval_cfg,
        device,
        run_dir,
        resume_dir is not None,
        hint,
        config,
        context,
        dist_ctx=ctx,
    )
    results = {"checkpoint": str(cfg.checkpoint), **outcome}
    if not ctx.is_main:
        return results
    print(results_table({"before rpt (test)": results["before"]["test"], "after rpt (test)": results["after"]["test"]}, eval_cfg.ks))
    atomic_write_json(run_dir / "metrics.json", results)
    print(
        f"[lares-rl] checkpoint {results['rpt']['checkpoint']}\n[lares-rl] metrics {run_dir / 'metrics.json'}\n[lares-rl] TensorBoard: tensorboard --logdir {run_dir / 'tb'}"
    )
    return results


def _spt_finished(run_dir: Path, spt_epochs: int) -> bool:
    """Whether the SPT phase of ``run_dir`` ended (early stopping or its last epoch)."""

    progress = load_training_state(run_dir / "checkpoints" / "spt_last.pt")["progress"]
    return bool(progress["finished"]) or progress["epoch"] >= spt_epochs


def _baseline_policy(cfg: DictConfig) -> dict | None:
    """The ``baseline=`` policy config (``configs/policy/<name>.yaml``) with the run's
    BASELINE_SHARED_KEYS, or None when there is none to train (``baseline=null``, or the run's
    policy is that baseline already)."""

    name = cfg.get("baseline")
    if name is None or name == cfg.policy.get("name"):
        return None
    path = files("lares_rl.configs") / "policy" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.name.removesuffix(".yaml") for p in (files("lares_rl.configs") / "policy").iterdir() if p.name.endswith(".yaml"))
        raise LaresError(
            f"baseline={name} names no file configs/policy/{name}.yaml; use one of {', '.join(choices)}, or baseline=null to skip the baseline"
        )
    policy = to_plain(OmegaConf.load(str(path)))
    return {**policy, **{key: to_plain(cfg.policy[key]) for key in BASELINE_SHARED_KEYS if key in cfg.policy}}


def _train_baseline(cfg: DictConfig, data, eval_cfg, device, run_dir: Path, resuming: bool, hint: str) -> dict | None:
    """SPT of the baseline policy with the run's ``spt`` settings on the same split, in
    ``<run dir>/baseline/``, plus its test metrics. Saved there, so a resumed run reuses a finished
    baseline and continues an interrupted one."""

    policy_config = _baseline_policy(cfg)
    if policy_config is None:
        return None
    out = run_dir / "baseline"
    results_path = out / "checkpoints" / "spt_results.json"
    if resuming and results_path.is_file():
        return json.loads(results_path.read_text())
    max_len = int(cfg.dataset.max_len)
    seed_everything(int(cfg.seed))
    policy = build_policy(policy_config, data.num_items, max_len)
    if not getattr(policy, "recurrent", False):  # adaptive depth is the reasoner's; a core-less baseline evaluates its one state
        eval_cfg = replace(eval_cfg, halt_tol=None, halt_k_max=None)
    print(f"[lares-rl] baseline {policy_config['name']} on the same split and SPT settings; run dir {out}", flush=True)
    summary = train_spt(
        policy=policy,
        policy_config=policy_config,
        data=data,
        max_len=max_len,
        cfg=section_from_mapping(SPTConfig, cfg.spt, "spt"),
        eval_cfg=eval_cfg,
        run_dir=out,
        device=device,
        seed=int(cfg.seed),
        config={**to_plain(cfg), "policy": policy_config},
        progress=bool(cfg.progress),
        resume=resuming and (out / "checkpoints" / "spt_last.pt").is_file(),
        resume_command=hint,
    )
    context = _item_context(data, to_plain(cfg.dataset), policy, quiet=True)
    results = {
        "name": policy_config["name"],
        "spt": summary,
        "test": evaluate_policy(policy, data, "test", max_len, eval_cfg, device, context=context),
    }
    atomic_write_json(results_path, results)
    return results


def _how_training_ended(state_path: Path, cap: int, best_epoch: int) -> str:
    """One phrase for the results table: converged (early stopping) or stopped by the epoch cap,
    read from the phase's saved training state."""

    progress = load_training_state(state_path)["progress"]
    epochs = int(progress["epoch"])
    if best_epoch < 0:  # RPT whose epochs never beat the SPT start on validation
        ended = "converged by early stopping" if progress["finished"] else f"hit the epoch cap ({epochs} of {cap})"
        return f"{ended}; no epoch beat the SPT weights on validation, so they were kept"
    if progress["finished"]:
        return f"converged by early stopping after {epochs} epochs (best epoch {best_epoch})"
    return f"hit the epoch cap ({epochs} of {cap} epochs, best epoch {best_epoch}): not converged"


def _comparison(cfg: DictConfig, run_dir: Path, merged: dict, baseline: dict | None) -> str:
    """The run's results table (baseline, SPT, SPT+RPT) and where converged numbers come from."""

    name = DISPLAY_NAMES.get(str(cfg.policy.name), str(cfg.policy.name))
    rows = {}
    if baseline is not None:
        ended = _how_training_ended(
            run_dir / "baseline" / "checkpoints" / "spt_last.pt", int(cfg.spt.epochs), baseline["spt"]["best_epoch"]
        )
        rows[DISPLAY_NAMES.get(baseline["name"], baseline["name"])] = (baseline["test"], ended)
    rows[f"{name}-SPT"] = (
        merged["test"]["spt"],
        _how_training_ended(run_dir / "checkpoints" / "spt_last.pt", int(cfg.spt.epochs), merged["spt"]["best_epoch"]),
    )
    rows[f"{name}-SPT+RPT"] = (
        merged["test"]["rpt"],
        _how_training_ended(run_dir / "checkpoints" / "rpt_last.pt", int(cfg.rpt.epochs), merged["rpt"]["best_epoch"]),
    )
    return (
        comparison_table(rows)
        + "\nRows that hit the epoch cap are not converged: for converged numbers run `make run PRESET=paper` (the reference settings; slow on a CPU)"
        + " or the benchmark commands in README.md (section Benchmarks); the full report, with seeds and commands, is docs/RESULTS.md."
    )


def command_run(cfg: DictConfig) -> dict:
    """The main job: SPT -> top-K filter -> RPT -> test, then the baseline (``baseline=``, SASRec)
    with the same SPT settings; one table with the three test results and how each training ended.

    ``resume=<run dir>`` continues an interrupted run: an unfinished SPT resumes exactly, then RPT
    runs; a finished SPT is not repeated (its results were saved) and RPT resumes from
    ``rpt_last.pt`` when it had started; a finished baseline is reused, an unfinished one resumed.
    """

    eval_cfg = _eval_config(cfg)
    device = resolve_device(cfg.device)
    data = _load_data(cfg)
    _baseline_policy(cfg)  # a wrong baseline= fails now, not after the main training
    # RPT settings are checked before SPT starts, so a typo never costs a pre-training run.
    probe = build_policy(to_plain(cfg.policy), data.num_items, int(cfg.dataset.max_len))
    # the reward's context is checked now with the untrained item table and bound to the SPT one after SPT
    rpt_cfg, _, reward_node = _rpt_setup(
        cfg, data.num_items, bool(getattr(probe, "recurrent", False)), _item_context(data, to_plain(cfg.dataset), probe, quiet=True)
    )
    del probe
    resume_dir = _resume_dir(cfg, "run")
    run_dir = resume_dir or _run_dir()
    hint = f"lares-rl run resume={run_dir} {_replayed_overrides()}"
    spt_results_path = run_dir / "checkpoints" / "spt_results.json"
    if resume_dir is not None and _spt_finished(run_dir, int(cfg.spt.epochs)) and spt_results_path.is_file():
        spt_results = json.loads(spt_results_path.read_text())
        print(f"[lares-rl] resuming {run_dir}: SPT finished (best epoch {spt_results['spt']['best_epoch']}), going on with RPT", flush=True)
    else:
        spt_results = command_spt(cfg, with_test=True, quiet=True, command="run")  # its Ctrl-C hint resumes this run as a whole
        atomic_write_json(spt_results_path, spt_results)  # lets a resumed run skip the finished SPT phase
    rpt_resume = resume_dir is not None and (run_dir / "checkpoints" / "rpt_last.pt").is_file()
    payload, policy = _load_spt_checkpoint(spt_results["spt"]["checkpoint"], data, device)
    context = _item_context(data, to_plain(cfg.dataset), policy)
    reward_fn = instantiate_reward(reward_node, data.num_items, context)
    results = _rpt_with_before_after(
        cfg, payload, policy, data, rpt_cfg, reward_fn, eval_cfg, device, run_dir, rpt_resume, hint, to_plain(cfg), context
    )
    merged = {
        "spt": spt_results["spt"],
        "rpt": results["rpt"],
        "valid": {"spt": results["before"]["valid"], "rpt": results["after"]["valid"]},
        "test": {"spt": spt_results["test"]["spt"], "rpt": results["after"]["test"]},
    }
    baseline = _train_baseline(cfg, data, eval_cfg, device, run_dir, resume_dir is not None, hint)
    if baseline is not None:
        merged["baseline"] = baseline
    print(format_recommendations(Recommender.from_checkpoint(results["rpt"]["checkpoint"], device=str(device), deterministic=True), data))
    print(_comparison(cfg, run_dir, merged, baseline))
    atomic_write_json(run_dir / "metrics.json", merged)
    print(
        f"[lares-rl] checkpoints {spt_results['spt']['checkpoint']} {results['rpt']['checkpoint']}\n[lares-rl] metrics {run_dir / 'metrics.json'}\n[lares-rl] TensorBoard: tensorboard --logdir {run_dir / 'tb'}"
    )
    return merged


def command_eval(cfg: DictConfig) -> dict:
    """Evaluate ``checkpoint=...`` on ``eval.split`` of the configured data set."""

    eval_cfg = _eval_config(cfg)
    payload, policy, data, device, config = _checkpoint_inputs(cfg, "eval")
    steps: list[int] = []
    metrics = evaluate_policy(
        policy,
        data,
        eval_cfg.split,
        payload["dataset"]["max_len"],
        eval_cfg,
        device,
        steps_out=steps,
        context=_item_context(data, config["dataset"], policy),
    )
    print(results_table({f"{payload['phase']} ({eval_cfg.split})": metrics}, eval_cfg.ks))
    record = {"checkpoint": str(cfg.checkpoint), "split": eval_cfg.split, "metrics": metrics}
    if steps:
        record["steps_histogram"] = _log_steps(steps, eval_cfg.split)
    atomic_write_json(_run_dir() / "metrics.json", record)
    return metrics


def _log_steps(steps: list[int], split: str) -> dict[int, int]:
    """Adaptive depth: print the histogram of steps taken and log it to TensorBoard (``tb/eval``)."""

    histogram = steps_histogram(steps)
    print(f"[lares-rl] {format_histogram(histogram)} (mean {sum(steps) / len(steps):.2f})")
    tracker = Tracker(_run_dir() / "tb" / "eval", "eval")
    tracker.log_histogram(f"{split}/steps", torch.tensor(steps), 0)
    tracker.close()
    return histogram


def command_sweep_k(cfg: DictConfig) -> dict:
    """Metrics of a checkpoint at every reasoning depth in ``eval.sweep_ks``: JSON, markdown and PNG."""

    eval_cfg = _eval_config(cfg)
    payload, policy, data, device, _ = _checkpoint_inputs(cfg, "sweep-k")
    rows = sweep_depths(policy, data, payload["dataset"]["max_len"], eval_cfg, device)
    paths = write_sweep(
        rows, _run_dir(), title=f"{payload['policy_config'].get('name', 'policy')} on {payload['dataset']['name']} ({eval_cfg.split})"
    )
    print(paths["markdown"].read_text())
    print(f"[lares-rl] plot {paths['plot']}")
    return rows


HANDLERS = {
    "run": command_run,
    "spt": command_spt,
    "rpt": command_rpt,
    "eval": command_eval,
    "sweep-k": command_sweep_k,
    "stats": command_stats,
}


@hydra.main(version_base="1.3", config_path="pkg://lares_rl.configs", config_name="config")
def hydra_entry(cfg: DictConfig) -> None:
    dispatch(cfg)


def dispatch(cfg: DictConfig) -> None:
    """Run ``cfg.command``; a user-fixable problem ends with one line on stderr and its exit status."""

    try:
        if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and cfg.command not in DISTRIBUTED_COMMANDS:
            raise LaresError(
                f"`lares-rl {cfg.command}` does not run on several processes; under torchrun run `{' or '.join(DISTRIBUTED_COMMANDS)}`, or start `lares-rl {cfg.command}` without torchrun"
            )
        with progress_enabled(bool(cfg.get("progress", True))):
            HANDLERS[cfg.command](cfg)
    except TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        sys.exit(130)
    except LaresError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except dist.DistError as err:  # a peer died or a collective ran past distributed.timeout_s
        detail = " ".join(str(err).split())[:300]
        print(
            f"error: rank {os.environ.get('RANK', '?')}: a collective with the other processes failed ({type(err).__name__}: {detail}); another rank died or stalled past distributed.timeout_s. "
            "Resume from the last saved state with the same torchrun command plus resume=<run dir>",
            file=sys.stderr,
        )
        sys.exit(3)
    except OSError as err:  # e.g. TensorBoard or a library writing into a full or read-only run directory
        if err.errno not in WRITE_ERRNOS:
            raise
        print(
            f"error: {err.strerror}: {err.filename or 'the run directory'}; free disk space or choose a writable output directory (hydra.run.dir=...)",
            file=sys.stderr,
        )
        sys.exit(2)


# errno values of a full disk or an unwritable location: one `error:` line instead of a traceback
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _check_output_dir(argv: list[str]) -> None:
    """Hydra creates the run directory before any lares_rl code runs and reports a failure as a
    traceback. Check the fixed part of ``hydra.run.dir`` (``hydra.sweep.dir`` with ``-m``) first:
    create it as Hydra would and write a probe file; a failure is one ``error:`` line, exit 2."""

    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    value = None
    for arg in argv:
        name, sep, given = arg.lstrip("+").partition("=")
        if sep and name == key:
            value = given.strip("'\"")
    if value is None:
        raw = OmegaConf.to_container(OmegaConf.load(str(files("lares_rl.configs") / "config.yaml")), resolve=False)
        value = str(raw.get("hydra", {}).get("sweep" if multirun else "run", {}).get("dir", "."))
    fixed = value.split("${", 1)[0]
    folder = Path(fixed) if "${" not in value or fixed.endswith("/") else Path(fixed).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".lares-rl-probe.")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        print(
            f"error: cannot write the run directory {folder} ({key}={value}): {err.strerror or err}; choose a writable location",
            file=sys.stderr,
        )
        sys.exit(2)


def main() -> None:
    """Console script: ``lares-rl [command] [overrides...]`` (command defaults to ``run``)."""
    # as `python -m` and `python -c` do: the README's reward._target_=my_rewards.fn and
    # policy.backbone=my_block.Block import from the current directory
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    argv = sys.argv[1:]
    if argv[:1] in (["-h"], ["--help"]):
        print(
            "usage: lares-rl <command> [key=value ...]   (Hydra overrides; `lares-rl <command> --help` shows the config)\n\n"
            + __doc__.split("\n\n")[1].replace("``", "`")
        )
        return
    flags = [a for a in argv if a.startswith("--") and a.split("=", 1)[0] in ("--checkpoint", "--resume", "--dataset", "--policy")]
    if flags and (argv[:1] != ["recommend"]):
        name = flags[0].lstrip("-").split("=", 1)[0]
        print(
            f"error: {flags[0]} is not an option here; write it as a Hydra override, {name}=<value> (only `lares-rl recommend` takes --checkpoint)",
            file=sys.stderr,
        )
        sys.exit(2)
    command = "run"
    if argv and not argv[0].startswith("-") and "=" not in argv[0]:
        command = argv.pop(0)
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    if command == "recommend":  # a plain argparse tool: reads JSON lines, writes JSON lines, no run directory
        sys.exit(recommend_main(argv))
    register_schemas()
    errors = unknown_key_errors(argv)
    if errors:
        print("\n".join(f"error: {line}" for line in errors), file=sys.stderr)
        sys.exit(2)
    _check_output_dir(argv)

    quiet_rank = []
    if launched_by_torchrun() and os.environ["RANK"] != "0":
        # only rank 0 writes a run directory; the others would create their own (another timestamp) for nothing
        quiet_rank = ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled", "hydra.run.dir=."]
    # appended last: Hydra's parser wants its flags (-m, --cfg ...) before the first override
    sys.argv = [sys.argv[0], *argv, *quiet_rank, f"command={command}"]
    hydra_entry()
    if launched_by_torchrun():
        # The work is done and written (every rank passed the final barrier). Skip interpreter
        # teardown: under load, a rank's C++ destructors raced the gloo / collector threads still
        # winding down ("terminate called without an active exception", SIGABRT), turning a
        # finished run into a failed torchrun.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":  # `python -m lares_rl.cli ...`, the form torchrun starts
    main()
