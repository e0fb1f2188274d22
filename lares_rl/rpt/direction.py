"""The gradient-direction check: does an RPT update move the policy toward more reward?

Fix a set of training histories; repeat ``updates`` times: roll them out afresh (G rollouts each,
exploration on) and take the configured update. An objective that follows the reward raises the
evaluation-mode reward of those same histories; one that does not leaves it flat or lowers it. It
is the cheapest test that separates "no signal" from "a signal the update ignores", and it runs
the learner that training runs (:func:`lares_rl.rpt.learner.build_learner`).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lares_rl.rpt.episodes import rows_env
from lares_rl.rpt.learner import build_learner, set_dropout
from lares_rl.rpt.probe import probe_metrics


def direction_check(
    policy: nn.Module,
    data,
    max_len: int,
    cfg,
    reward_fn,
    rows: torch.Tensor,
    *,
    updates: int,
    device: torch.device,
    seed: int = 0,
    eval_seed: int = 0,
) -> dict[str, list[float]]:
    """Train ``policy`` in place for ``updates`` batches on the training rows ``rows`` (indices into
    ``data.train_rows(max_len)``) and return the evaluation-mode ``reward``, mean ``target_rank``
    and ``kl_to_ref`` of those rows before the first update and after each one."""

    seqs, lengths, targets = data.train_rows(max_len)
    policy.to(device)
    set_dropout(policy, cfg.dropout)
    env = rows_env(data, rows, targets, histories=len(rows), cfg=cfg, reward_fn=reward_fn, max_len=max_len, seed=seed, device=device)
    learner = build_learner(policy, cfg, device=device, eval_seed=eval_seed, seed=seed, reward_fn=reward_fn)
    fixed = (seqs[rows], lengths[rows], targets[rows])
    curve: dict[str, list[float]] = {"reward": [], "target_rank": [], "kl_to_ref": []}

    def record() -> None:
        point = probe_metrics(policy, learner.reference, fixed, reward_fn, cfg.slate_size, device, eval_seed)
        for name in curve:
            curve[name].append(point[name])

    record()
    for _ in range(updates):
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):  # as a Collector collects
            batch = env.rollout(1, learner.actor, break_when_any_done=False).reshape(-1)
        learner.prepare(batch)
        learner.update(batch)
        record()
    return curve
