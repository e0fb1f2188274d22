"""The item context of a run, built from the data and the SPT model: what the beyond-accuracy
rewards and metrics read (popularity, categories, the item table and the model's top-10 exposure)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from lares_rl.core.checkpoint import training_item_counts
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.metrics.beyond import BeyondAccuracy
from lares_rl.metrics.ranking import policy_score_fn
from lares_rl.rewards.context import EXPOSURE_K, ItemContext, item_categories


def build_item_context(data, dataset: Mapping | None = None, policy: nn.Module | None = None) -> ItemContext:
    """The context of one run: training popularity, the categories ``dataset`` points to (if any),
    a detached copy of ``policy``'s item table (the SPT model's, so RPT cannot move it) and,
    lazily, ``policy``'s exposure at ``dataset.max_len`` (see :class:`ItemContext`)."""
    table = getattr(getattr(policy, "item_embedding", None), "weight", None)
    max_len = (dataset or {}).get("max_len")
    return ItemContext(
        popularity=torch.from_numpy(training_item_counts(data).astype(np.float32)),
        categories=item_categories(data, dataset) if dataset is not None else None,
        item_embeddings=None if table is None else table.detach().float().cpu().clone(),
        dataset=str(getattr(data, "name", "")),
        exposure_source=None if policy is None or max_len is None else functools.partial(top_k_exposure, policy, data, int(max_len)),
    )


def top_k_exposure(policy: nn.Module, data, max_len: int, k: int = EXPOSURE_K) -> Tensor:
    """float32 [N+1]: how many users have each item in ``policy``'s top-``k``, from the lists one
    validation pass ranks (``evaluate_policy``: each user's training history, evaluation mode and
    noise; the counts do not depend on the target). Items with exposure 0 are exactly those validation coverage@k
    does not count."""

    lists = BeyondAccuracy(torch.zeros(data.num_items + 1), None, [k])
    scores_of = policy_score_fn(policy)

    def observed(seq: Tensor, lengths: Tensor) -> Tensor:
        scores = scores_of(seq, lengths)
        lists.observe(scores)
        return scores

    evaluate_policy(policy, data, "valid", max_len, EvalConfig(ks=[k]), next(policy.parameters()).device, score_fn=observed)
    return lists.exposure(k).float()
