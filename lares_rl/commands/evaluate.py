"""``lares-rl eval``: a checkpoint on valid or test, measured without training (``sweep-k`` and ``stats``
have modules of their own, so that this one does not import matplotlib)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from lares_rl.commands.checkpoint import checkpoint_inputs
from lares_rl.commands.session import eval_config, item_context, run_dir
from lares_rl.core.atomic import atomic_write_json
from lares_rl.core.tracking import Tracker
from lares_rl.eval.adaptive_depth import format_histogram, steps_histogram
from lares_rl.eval.evaluation import evaluate_policy
from lares_rl.eval.report import checkpoint_label, results_table


def command_eval(cfg: DictConfig) -> dict:
    """Evaluate ``checkpoint=...`` on ``eval.split`` of its data set (see lares_rl/commands/checkpoint.py)."""

    eval_cfg = eval_config(cfg)
    payload, policy, data, device, config = checkpoint_inputs(cfg, "eval")
    steps: list[int] = []
    metrics = evaluate_policy(
        policy,
        data,
        eval_cfg.split,
        payload["dataset"]["max_len"],
        eval_cfg,
        device,
        steps_out=steps,
        context=item_context(data, config["dataset"], policy),
    )
    print(results_table({f"{checkpoint_label(payload)} ({eval_cfg.split})": metrics}, eval_cfg.ks))
    record = {"checkpoint": str(cfg.checkpoint), "split": eval_cfg.split, "metrics": metrics}
    if steps:
        record["steps_histogram"] = _log_steps(steps, eval_cfg.split)
    atomic_write_json(run_dir() / "metrics.json", record)
    return metrics


def _log_steps(steps: list[int], split: str) -> dict[int, int]:
    """Adaptive depth: print the histogram of steps taken and log it to TensorBoard (``tb/eval``)."""

    histogram = steps_histogram(steps)
    print(f"[lares-rl] {format_histogram(histogram)} (mean {sum(steps) / len(steps):.2f})")
    tracker = Tracker(run_dir() / "tb" / "eval", "eval")
    tracker.log_histogram(f"{split}/steps", torch.tensor(steps), 0)
    tracker.close()
    return histogram
