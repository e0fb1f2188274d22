"""Entropy and KL of softmaxes over the item catalog, whose padding column sits at -inf: the
measures the slates, the rollouts and the RPT losses read from full-catalog scores."""

from __future__ import annotations

import torch


def final_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim; -inf columns (padding) contribute 0."""
    log_p = torch.log_softmax(logits, dim=-1)
    # clamp before the product: where() alone still backpropagates 0 * (-inf) = NaN
    finite_log_p = log_p.clamp(min=torch.finfo(log_p.dtype).min)
    return -(log_p.exp() * finite_log_p).sum(-1)


def catalog_kl(log_p: torch.Tensor, ref_log_p: torch.Tensor) -> torch.Tensor:
    """Exact KL(p || p_ref) over the last dim from two log-softmaxes; the padding column, -inf in
    both, contributes 0 (its -inf - -inf is NaN before the zero weight would cancel it)."""
    return (log_p.exp() * (log_p - ref_log_p).nan_to_num(0.0)).sum(-1)
