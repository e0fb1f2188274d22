"""``lares-rl run``, the main job: SPT -> top-K filter -> RPT -> test, then (or, with 2+ CPUs, beside
them in a second process) the baseline with the same SPT settings; one table with the three test
results and how each training ended."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from lares_rl.commands.baseline import baseline_policy, eval_config_for, train_baseline
from lares_rl.commands.baseline_process import baseline_beside
from lares_rl.commands.checkpoint import load_spt_checkpoint
from lares_rl.commands.overrides import replayed_overrides
from lares_rl.commands.rpt import check_reward_before_spt, fitted_rpt, rpt_with_before_after
from lares_rl.commands.session import eval_config, item_context, load_data, print_outputs, resume_dir, run_dir, training_numerics
from lares_rl.commands.spt import command_spt, spt_test_metrics
from lares_rl.core.atomic import atomic_write_json
from lares_rl.core.checkpoint import build_policy, load_checkpoint, policy_from_checkpoint
from lares_rl.core.config import to_plain
from lares_rl.core.precision import use_numerics
from lares_rl.core.resume import load_training_state
from lares_rl.core.runtime import resolve_device
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.eval.paired import DEFAULT_RESAMPLES, change_with_interval, paired_bootstrap, per_user_metric
from lares_rl.eval.report import comparison_table, format_recommendations, model_label
from lares_rl.rewards.build import instantiate_reward
from lares_rl.serve.recommender import Recommender


def command_run(cfg: DictConfig) -> dict:
    """SPT -> filter -> RPT -> test, then the baseline (``baseline=``, SASRec), or beside them in a
    second process (``baseline_parallel``: lares_rl/commands/baseline_process.py).

    ``resume=<run dir>`` continues an interrupted run: an unfinished SPT resumes exactly, then RPT
    runs; a finished SPT is not repeated (its results were saved) and RPT resumes from
    ``rpt_last.pt`` when it had started; a finished baseline is reused, an unfinished one resumed.
    metrics.json's ``valid`` and ``test`` key each model as the table labels it (``lares``,
    ``lares+rpt``: :func:`model_label`); the baseline's are under ``baseline``.
    """

    eval_cfg = eval_config(cfg)
    device = resolve_device(cfg.device)
    data = load_data(cfg)
    dataset = to_plain(cfg.dataset)
    baseline_policy(cfg)  # a wrong baseline= fails now, not after the main training
    # RPT settings and the reward are checked before SPT starts, so a typo never costs a pre-training
    # run; the untrained policy says whether it has a reasoning core and an item table.
    probe = build_policy(to_plain(cfg.policy), data.num_items, int(cfg.dataset.max_len))
    fitted, rpt_cfg = fitted_rpt(cfg, data.num_items, bool(getattr(probe, "recurrent", False)))
    check_reward_before_spt(fitted.reward, data.num_items, rpt_cfg, item_context(data, dataset, probe, quiet=True))
    del probe
    resumed = resume_dir(cfg, "run")
    out = resumed or run_dir()
    hint = f"lares-rl run resume={out} {replayed_overrides()}"
    with baseline_beside(cfg, device, out, resumed is not None, hint) as background:  # baseline_parallel: trains beside SPT and RPT
        spt_results = _spt_phase(cfg, out, resumed is not None)
        payload, policy = load_spt_checkpoint(spt_results["spt"]["checkpoint"], data, device)
        context = item_context(data, dataset, policy)
        reward_fn = instantiate_reward(fitted.reward, data.num_items, context)  # the run's one reward, bound to the SPT model's items
        rpt_resume = resumed is not None and (out / "checkpoints" / "rpt_last.pt").is_file()
        results = rpt_with_before_after(
            fitted, payload, policy, data, rpt_cfg, reward_fn, eval_cfg, device, out, rpt_resume, hint, to_plain(fitted), context
        )
        baseline = (
            background.result() if background is not None else _baseline_here(cfg, data, eval_cfg, device, out, resumed is not None, hint)
        )
    spt_label, rpt_label = model_label(str(cfg.policy.name)), model_label(str(cfg.policy.name), rpt=True)
    merged = {
        "spt": spt_results["spt"],
        "rpt": results["rpt"],
        "valid": {spt_label: results["before"]["valid"], rpt_label: results["after"]["valid"]},
        "test": {spt_label: spt_test_metrics(spt_results, spt_label), rpt_label: results["after"]["test"]},
    }
    if baseline is not None:
        merged["baseline"] = baseline
    print(format_recommendations(Recommender.from_checkpoint(results["rpt"]["checkpoint"], device=str(device), deterministic=True), data))
    merged["paired"] = _paired_changes(str(cfg.policy.name), merged, baseline, data, int(cfg.dataset.max_len), eval_cfg, device)
    print(_comparison(cfg, out, merged, baseline))
    atomic_write_json(out / "metrics.json", merged)
    print_outputs(f"checkpoints {spt_results['spt']['checkpoint']} {results['rpt']['checkpoint']}", out)
    return merged


def _baseline_here(cfg: DictConfig, data, eval_cfg: EvalConfig, device, out: Path, resuming: bool, hint: str) -> dict | None:
    """The baseline trained in this process after the method (``baseline_parallel`` off, one CPU,
    or a finished baseline that a resumed run reuses), with the precision SPT named."""
    with use_numerics(training_numerics(cfg, device)[0]):
        return train_baseline(cfg, data, eval_cfg, device, out, resuming, hint)


def _spt_phase(cfg: DictConfig, out: Path, resuming: bool) -> dict:
    """SPT and its test results: saved by an earlier attempt of this run when its SPT finished
    (a resumed run goes on with RPT), else trained (or resumed) now and saved."""
    results_path = out / "checkpoints" / "spt_results.json"
    if resuming and _spt_finished(out, int(cfg.spt.epochs)) and results_path.is_file():
        results = json.loads(results_path.read_text())
        print(f"[lares-rl] resuming {out}: SPT finished (best epoch {results['spt']['best_epoch']}), going on with RPT", flush=True)
        return results
    results = command_spt(cfg, with_test=True, quiet=True, command="run")  # its Ctrl-C hint resumes this run as a whole
    atomic_write_json(results_path, results)  # lets a resumed run skip the finished SPT phase
    return results


def _spt_finished(out: Path, spt_epochs: int) -> bool:
    """Whether the SPT phase of ``out`` ended (early stopping or its last epoch)."""

    progress = load_training_state(out / "checkpoints" / "spt_last.pt")["progress"]
    return bool(progress["finished"]) or progress["epoch"] >= spt_epochs


def _how_training_ended(state_path: Path, cap: int, best_epoch: int, units: str = "epochs") -> str:
    """One phrase for the results table: converged (early stopping) or stopped by the cap, read
    from the phase's saved training state; ``units`` names what was counted (RPT's epochs are
    passes over the kept rows or intervals of N histories: RPTConfig.epoch_unit)."""

    progress = load_training_state(state_path)["progress"]
    epochs = int(progress["epoch"])
    if best_epoch < 0:  # RPT whose epochs never beat the SPT start on validation
        ended = "converged by early stopping" if progress["finished"] else f"hit the cap ({epochs} of {cap} {units})"
        return f"{ended}; none beat the SPT weights on validation, so they were kept"
    if progress["finished"]:
        return f"converged by early stopping after {epochs} {units} (best: {best_epoch})"
    return f"hit the cap ({epochs} of {cap} {units}, best: {best_epoch}): not converged"


def _paired_changes(name: str, merged: dict, baseline: dict | None, data, max_len: int, eval_cfg: EvalConfig, device) -> dict[str, dict]:
    """Each row's test NDCG@10 against the row above it in the table (the baseline -> the model ->
    the model after RPT): the relative change of the mean over the same test users and its 95%
    paired-bootstrap interval (lares_rl/eval/paired.py), so a reader can tell a gain from the
    luck of the split. Keyed ``"<after> vs <before>"`` in metrics.json."""
    checkpoints = {model_label(baseline["name"]): baseline["spt"]["checkpoint"]} if baseline is not None else {}
    checkpoints[model_label(name)] = merged["spt"]["checkpoint"]
    checkpoints[model_label(name, rpt=True)] = merged["rpt"]["checkpoint"]
    values = {}
    for label, path in checkpoints.items():
        policy = policy_from_checkpoint(load_checkpoint(path), device)
        values[label] = per_user_metric(policy, data, "test", max_len, eval_config_for(policy, eval_cfg), device, "ndcg@10")
    labels = list(values)
    paired = {
        f"{after} vs {before}": {"before_model": before, "after_model": after, **paired_bootstrap(values[before], values[after])}
        for before, after in zip(labels, labels[1:])
    }
    print(f"[lares-rl] paired bootstrap over {len(values[labels[0]]):,} test users, {DEFAULT_RESAMPLES} resamples: done", flush=True)
    return paired


def _comparison(cfg: DictConfig, out: Path, merged: dict, baseline: dict | None) -> str:
    """The run's results table (baseline, SPT, SPT+RPT) and where converged numbers come from."""

    name = str(cfg.policy.name)
    rows = {}
    if baseline is not None:
        ended = _how_training_ended(out / "baseline" / "checkpoints" / "spt_last.pt", int(cfg.spt.epochs), baseline["spt"]["best_epoch"])
        rows[model_label(baseline["name"])] = (baseline["test"], ended)
    rows[model_label(name)] = (
        merged["test"][model_label(name)],
        _how_training_ended(out / "checkpoints" / "spt_last.pt", int(cfg.spt.epochs), merged["spt"]["best_epoch"]),
    )
    rows[model_label(name, rpt=True)] = (
        merged["test"][model_label(name, rpt=True)],
        _how_training_ended(
            out / "checkpoints" / "rpt_last.pt", int(cfg.rpt.epochs), merged["rpt"]["best_epoch"], merged["rpt"]["epoch_unit"]["plural"]
        ),
    )
    changes = {result["after_model"]: change_with_interval(result) for result in merged["paired"].values()}
    return (
        comparison_table(rows, changes)
        + "\nRows that hit their cap are not converged: for converged numbers run `make run PRESET=paper` (the reference settings; slow on a CPU)"
        + " or the benchmark commands in README.md (section Benchmarks); the full report, with seeds and commands, is docs/results/README.md."
    )
