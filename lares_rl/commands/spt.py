"""``lares-rl spt``: SPT of the configured policy (SASRec: plain CE), then its best weights on test."""

from __future__ import annotations

from omegaconf import DictConfig

from lares_rl.commands.overrides import replayed_overrides
from lares_rl.commands.session import eval_config, item_context, load_data, print_outputs, resume_dir, run_dir, training_numerics
from lares_rl.core.atomic import atomic_write_json
from lares_rl.core.checkpoint import build_policy
from lares_rl.core.config import section_from_mapping, to_plain
from lares_rl.core.distributed import DistributedConfig, init_distributed, launch_command, shutdown
from lares_rl.core.precision import use_numerics
from lares_rl.core.runtime import seed_everything
from lares_rl.core.tracking import log_test_metrics, tensorboard_dir
from lares_rl.eval.adaptive_depth import check_halting_applies
from lares_rl.eval.evaluation import check_depth_applies, evaluate_policy
from lares_rl.eval.report import model_label, results_table
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.train import train_spt


def command_spt(cfg: DictConfig, with_test: bool = True, quiet: bool = False, command: str = "spt") -> dict:
    """Train the configured policy with SPT (SASRec: plain CE), then evaluate the best weights on test.

    Under torchrun every rank trains its slice of each batch (DDP, spt_distributed); rank 0 alone
    reads the resumed state, writes the run directory and evaluates on test. ``run`` calls it with
    ``quiet`` (its own table follows) and ``command="run"`` (the Ctrl-C hint resumes the whole run).
    Training runs with the ``precision`` and ``compile`` the first line names (lares_rl/core/precision.py).
    The test row is labelled by the model (:func:`model_label`: ``sasrec``, ``lares``, ``mostpop``), in
    the table and in metrics.json's ``test``."""

    ctx, device = init_distributed(str(cfg.device), section_from_mapping(DistributedConfig, cfg.distributed, "distributed"))
    finished = False
    try:
        ctx.check_same("configuration", to_plain(cfg))
        numerics, numerics_line = training_numerics(cfg, device)
        if ctx.is_main:
            print(f"[lares-rl] SPT precision {numerics_line}", flush=True)
        with use_numerics(numerics):
            results = _spt_on_ranks(cfg, ctx, device, with_test, quiet, command)
        finished = True
        return results
    finally:
        shutdown(ctx, wait=finished)


def spt_test_metrics(results: dict, label: str) -> dict:
    """The test metrics in :func:`command_spt`'s results, keyed by the model's label
    (:func:`model_label`); results saved before rows were labelled by model (the
    checkpoints/spt_results.json of a ``run`` resumed now) key them ``spt``."""
    test = results["test"]
    return test[label] if label in test else test["spt"]


def _spt_on_ranks(cfg: DictConfig, ctx, device, with_test: bool, quiet: bool, command: str) -> dict:

    spt_cfg = section_from_mapping(SPTConfig, cfg.spt, "spt")
    eval_cfg = eval_config(cfg)
    data = load_data(cfg)
    max_len = int(cfg.dataset.max_len)
    seed_everything(int(cfg.seed))
    policy_config = to_plain(cfg.policy)
    policy = build_policy(policy_config, data.num_items, max_len)
    check_depth_applies(policy, cfg.eval.get("k"), "eval.k")
    check_halting_applies(policy, eval_cfg.halt_tol, "eval.halt_tol")
    resumed = ctx.on_main(lambda: resume_dir(cfg, command))
    out = ctx.broadcast_object(resumed or run_dir())  # rank 0's Hydra directory: the others' may carry another timestamp
    if ctx.is_main:
        ranks = f" on {ctx.world_size} processes" if ctx.active else ""
        print(f"[lares-rl] {cfg.policy.name} on {cfg.dataset.name}{ranks}: {data.num_users} users, {data.num_items} items; run dir {out}")
    summary = train_spt(
        policy=policy,
        policy_config=policy_config,
        data=data,
        max_len=max_len,
        cfg=spt_cfg,
        eval_cfg=eval_cfg,
        run_dir=out,
        device=device,
        seed=int(cfg.seed),
        config=to_plain(cfg),
        progress=bool(cfg.progress) and ctx.is_main,
        resume=resumed is not None,
        resume_command=f"{launch_command(ctx)} {command} resume={out} {replayed_overrides()}",
        dist_ctx=ctx,
    )
    results = {"spt": summary}
    if not ctx.is_main:
        return results
    if with_test:
        context = item_context(data, to_plain(cfg.dataset), policy, quiet)
        test = evaluate_policy(policy, data, "test", max_len, eval_cfg, device, context=context)
        log_test_metrics(tensorboard_dir(out, "spt"), "spt", test, summary["seen_rows"])  # spt/test/ at the last x value
        results["test"] = {model_label(str(cfg.policy.name)): test}
        if quiet:
            return results
        print(results_table(results["test"], eval_cfg.ks))
    atomic_write_json(out / "metrics.json", results)
    print_outputs(f"checkpoint {summary['checkpoint']}", out)
    return results
