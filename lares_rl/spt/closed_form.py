"""SPT for a policy with no trainable parameters (``policy=mostpop``): nothing to train, so it is
fitted from the training data once, measured on validation, and saved as a trained policy's best
epoch, so every later command (``eval``, ``recommend``, the results table) reads it like any other."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from lares_rl.core.checkpoint import save_checkpoint
from lares_rl.core.distributed import DistContext
from lares_rl.core.errors import LaresError
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy


def has_nothing_to_train(policy: nn.Module) -> bool:
    return not any(parameter.requires_grad for parameter in policy.parameters())


def fit_closed_form(
    *,
    policy: nn.Module,
    policy_config: Mapping,
    data,
    max_len: int,
    eval_cfg: EvalConfig,
    run_dir: Path,
    device: torch.device,
    config: Mapping,
    ctx: DistContext,
) -> dict:
    """``policy.fit(data)``, one validation pass and checkpoints/spt_best.pt; the summary has the
    keys of :func:`lares_rl.spt.train.train_spt`'s (no epochs run)."""
    if not hasattr(policy, "fit"):
        raise LaresError(
            f"{type(policy).__name__} has no trainable parameters and no fit(data) method, so SPT has nothing to do; "
            "give it parameters, or a fit(data) that sets it from the training data"
        )
    start = time.perf_counter()
    policy.fit(data)
    policy.to(device)
    best_path = run_dir / "checkpoints" / "spt_best.pt"
    summary = {
        "best_epoch": 0,
        "epochs_run": 0,
        "seen_rows": 0,
        "checkpoint": str(best_path),
        "seconds_per_epoch": 0.0,
        "samples_per_sec": 0.0,
    }
    if not ctx.is_main:
        return summary
    seconds = time.perf_counter() - start
    print(
        f"[spt] {type(policy).__name__} has no trainable parameters: fitted from the training data in {seconds:.2f}s, no SPT epochs",
        flush=True,
    )
    metrics = evaluate_policy(policy, data, "valid", max_len, eval_cfg, device)
    dataset_name = str(config["dataset"]["name"])
    save_checkpoint(
        best_path, policy=policy, policy_config=policy_config, data=data, max_len=max_len, dataset_name=dataset_name,
        phase="spt", epoch=0, metrics=metrics, config=config,
    )  # fmt: skip
    return {**summary, "valid": metrics}
