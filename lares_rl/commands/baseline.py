"""The baseline ``run`` trains next to the method (``baseline=``, SASRec by default): SPT of that
policy with the run's ``spt`` settings on the same split, for the results table."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

from lares_rl.commands.session import baseline_tb_dir, item_context
from lares_rl.core.atomic import atomic_write_json
from lares_rl.core.checkpoint import build_policy
from lares_rl.core.config import section_from_mapping, to_plain
from lares_rl.core.errors import LaresError
from lares_rl.core.runtime import seed_everything
from lares_rl.core.tracking import log_test_metrics
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.train import train_spt

# Policy keys the baseline takes from the run's policy, so both models have the same width and blocks.
BASELINE_SHARED_KEYS = ("backbone", "backbone_options", "d_model", "n_heads", "inner_size", "dropout", "n_pre_layers")


def baseline_policy(cfg: DictConfig) -> dict | None:
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


def eval_config_for(policy: nn.Module, eval_cfg: EvalConfig) -> EvalConfig:
    """The run's evaluation settings as they apply to ``policy``: a core-less one (SASRec) has no
    reasoning depth to halt, so it evaluates its one state."""
    return eval_cfg if getattr(policy, "recurrent", False) else replace(eval_cfg, halt_tol=None, halt_k_max=None)


def baseline_results_path(out: Path) -> Path:
    """Where a finished baseline of run ``out`` saved its results (what a resumed run reuses)."""
    return out / "baseline" / "checkpoints" / "spt_results.json"


def load_baseline_results(out: Path) -> dict:
    """The results :func:`train_baseline` saved for run ``out``: its name, SPT summary and test metrics."""
    return json.loads(baseline_results_path(out).read_text())


def train_baseline(cfg: DictConfig, data, eval_cfg: EvalConfig, device, out: Path, resuming: bool, hint: str) -> dict | None:
    """SPT of the baseline policy with the run's ``spt`` settings on the same split, in
    ``<out>/baseline/``, plus its test metrics. Saved there, so a resumed run reuses a finished
    baseline and continues an interrupted one. Its TensorBoard run is ``<out>/tb/baseline``
    (:func:`baseline_tb_dir`), test metrics included, under the run's one ``--logdir``."""

    policy_config = baseline_policy(cfg)
    if policy_config is None:
        return None
    folder = out / "baseline"
    results_path = baseline_results_path(out)
    if resuming and results_path.is_file():
        return load_baseline_results(out)
    max_len = int(cfg.dataset.max_len)
    seed_everything(int(cfg.seed))
    policy = build_policy(policy_config, data.num_items, max_len)
    depth = [f"eval.{key}={getattr(eval_cfg, key)}" for key in ("k", "halt_tol", "halt_k_max") if getattr(eval_cfg, key) is not None]
    if depth and not getattr(policy, "recurrent", False):
        print(f"[lares-rl] baseline {policy_config['name']} has no reasoning core: {', '.join(depth)} do not apply to it")
    eval_cfg = eval_config_for(policy, eval_cfg)
    print(f"[lares-rl] baseline {policy_config['name']} on the same split and SPT settings; run dir {folder}", flush=True)
    summary = train_spt(
        policy=policy,
        policy_config=policy_config,
        data=data,
        max_len=max_len,
        cfg=section_from_mapping(SPTConfig, cfg.spt, "spt"),
        eval_cfg=eval_cfg,
        run_dir=folder,
        device=device,
        seed=int(cfg.seed),
        config={**to_plain(cfg), "policy": policy_config},
        progress=bool(cfg.progress),
        resume=resuming and (folder / "checkpoints" / "spt_last.pt").is_file(),
        resume_command=hint,
        tb_dir=baseline_tb_dir(out),
    )
    context = item_context(data, to_plain(cfg.dataset), policy, quiet=True)
    test = evaluate_policy(policy, data, "test", max_len, eval_cfg, device, context=context)
    log_test_metrics(baseline_tb_dir(out), "spt", test, summary["seen_rows"])
    results = {"name": policy_config["name"], "spt": summary, "test": test}
    atomic_write_json(results_path, results)
    return results
