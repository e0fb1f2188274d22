"""``lares-rl sweep-k``: a checkpoint over reasoning depths (JSON, markdown table and PNG plot)."""

from __future__ import annotations

from omegaconf import DictConfig

from lares_rl.commands.checkpoint import checkpoint_inputs
from lares_rl.commands.session import eval_config, run_dir
from lares_rl.eval.depth_sweep import sweep_depths, write_sweep


def command_sweep_k(cfg: DictConfig) -> dict:
    """Metrics of a checkpoint at every reasoning depth in ``eval.sweep_ks``: JSON, markdown and PNG."""

    eval_cfg = eval_config(cfg)
    payload, policy, data, device, _ = checkpoint_inputs(cfg, "sweep-k")
    rows = sweep_depths(policy, data, payload["dataset"]["max_len"], eval_cfg, device)
    paths = write_sweep(
        rows, run_dir(), title=f"{payload['policy_config'].get('name', 'policy')} on {payload['dataset']['name']} ({eval_cfg.split})"
    )
    print(paths["markdown"].read_text())
    print(f"[lares-rl] plot {paths['plot']}")
    return rows
