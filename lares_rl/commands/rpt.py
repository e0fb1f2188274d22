"""``lares-rl rpt``: RPT from ``checkpoint=<spt checkpoint>``, with valid/test before and after; and
the RPT half that ``run`` shares: the ``rpt`` section fitted to the catalog and policy, the
reward checked before SPT, and RPT between two evaluations."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from lares_rl.commands.checkpoint import checkpoint_inputs
from lares_rl.commands.overrides import override_keys, replayed_overrides
from lares_rl.commands.session import eval_config, item_context, print_outputs, resume_dir, run_dir
from lares_rl.core.atomic import atomic_write_json
from lares_rl.core.config import section_from_mapping, to_plain
from lares_rl.core.distributed import DistributedConfig, init_distributed, launch_command, shutdown
from lares_rl.core.errors import LaresError
from lares_rl.core.runtime import seed_everything
from lares_rl.data.cache import resolve_cache_dir
from lares_rl.eval.report import checkpoint_label, model_label, results_table
from lares_rl.rewards.build import instantiate_reward
from lares_rl.rewards.context import ItemContext, context_needs
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.loop import train_rpt_with_test


def fitted_rpt(cfg: DictConfig, num_items: int, recurrent: bool) -> tuple[DictConfig, RPTConfig]:
    """``cfg`` with the ``rpt`` values a config file chose that cannot apply to this catalog or
    policy replaced (:meth:`RPTConfig.fitted_values`), each change one line naming the key and
    why, and the checked RPTConfig. A copy: the run's .hydra/config.yaml keeps what the user
    composed (what resume compares); ``reward.k`` follows the fitted ``rpt.slate_size``."""

    changes = section_from_mapping(RPTConfig, cfg.rpt, "rpt").fitted_values(
        num_items=num_items, recurrent=recurrent, explicit=override_keys()
    )
    for key, (value, why) in changes.items():
        print(f"[lares-rl] rpt.{key}={cfg.rpt[key]} -> {value}: {why}")
    if changes:
        cfg = OmegaConf.merge(cfg, {"rpt": {key: value for key, (value, _) in changes.items()}})
    rpt_cfg = section_from_mapping(RPTConfig, cfg.rpt, "rpt")
    rpt_cfg.check_fits(num_items=num_items, recurrent=recurrent)
    return cfg, rpt_cfg


def check_reward_before_spt(reward: DictConfig, num_items: int, rpt_cfg: RPTConfig, context: ItemContext) -> None:
    """What can be wrong with the ``reward`` section before SPT, checked without building it (``run``
    builds it once, after SPT, bound to the SPT model's item table and exposure): ``reward.k``
    against the catalog and slate, every ``_target_`` importable, every item-context field a
    target asks for available. ``context``: the data's, with an untrained item table."""
    rpt_cfg.check_reward_k(reward.get("k"), num_items)
    _check_targets(to_plain(reward), "reward", context)


def _check_targets(values: dict, key: str, context: ItemContext) -> None:
    target = values.get("_target_")
    if target is not None:
        try:
            fn = get_object(str(target))
        except Exception as err:
            detail = " ".join(str(err.__cause__ or err).split())
            raise LaresError(
                f"{key}._target_={target!r} cannot be imported ({detail}); point it at a function reward(slate, target) -> [B] float, e.g. lares_rl.rewards.ndcg"
            ) from err
        for name in context_needs(fn):
            if name in values or (name == "exposure" and context.exposure_source is not None):
                continue  # given in the config, or measured with the SPT model once it exists
            context.require(name, f"reward {target}")
    for name, value in values.items():
        if isinstance(value, dict):
            _check_targets(value, f"{key}.{name}", context)


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

    eval_cfg = eval_config(cfg)
    payload, policy, data, device, config = checkpoint_inputs(cfg, "rpt", device)
    recurrent = bool(getattr(policy, "recurrent", False))
    context = item_context(data, config["dataset"], policy, quiet=not ctx.is_main)
    fitted, rpt_cfg = fitted_rpt(cfg, data.num_items, recurrent)
    reward_fn = instantiate_reward(fitted.reward, data.num_items, context)
    rpt_cfg.check_compatible(num_items=data.num_items, reward_fn=reward_fn, recurrent=recurrent)
    resumed = ctx.on_main(lambda: resume_dir(cfg, "rpt"))
    out = ctx.broadcast_object(resumed or run_dir())  # rank 0's Hydra directory: the others' may carry another timestamp
    if ctx.is_main:
        ranks = f" on {ctx.world_size} processes" if ctx.active else ""
        print(
            f"[lares-rl] rpt ({rpt_cfg.algorithm}) from {cfg.checkpoint} on {data.name}{ranks}: {data.num_users} users, {data.num_items} items; run dir {out}"
        )
    hint = f"{launch_command(ctx)} rpt resume={out} checkpoint={cfg.checkpoint} {replayed_overrides()}"
    config = {**to_plain(fitted), "policy": config["policy"]}
    outcome = rpt_with_before_after(
        fitted, payload, policy, data, rpt_cfg, reward_fn, eval_cfg, device, out, resumed is not None, hint, config, context, dist_ctx=ctx
    )
    results = {"checkpoint": str(cfg.checkpoint), **outcome}
    if not ctx.is_main:
        return results
    before = checkpoint_label(payload)  # the rows labelled by model, as every command's are: lares, lares+rpt
    print(results_table({before: results["before"]["test"], model_label(before, rpt=True): results["after"]["test"]}, eval_cfg.ks))
    atomic_write_json(out / "metrics.json", results)
    print_outputs(f"checkpoint {results['rpt']['checkpoint']}", out)
    return results


def rpt_with_before_after(
    cfg: DictConfig,
    payload,
    policy,
    data,
    rpt_cfg: RPTConfig,
    reward_fn,
    eval_cfg,
    device,
    out: Path,
    resume: bool,
    resume_command: str,
    config: dict,
    context: ItemContext,
    dist_ctx=None,
) -> dict:
    """Valid/test before, RPT (resumed from ``out`` when ``resume``), valid/test after (the best
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
        run_dir=out,
        device=device,
        seed=int(cfg.seed),
        config=config,
        progress=bool(cfg.progress),
        resume=resume,
        resume_command=resume_command,
        filter_cache_dir=resolve_cache_dir(cfg.cache_dir) / "rpt_filter",
        item_context=context,
        dist_ctx=dist_ctx,
    )
