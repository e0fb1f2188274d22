"""Post-hoc re-ranking of a model's scores: the cheap baseline a beyond-accuracy RPT must beat.

A practitioner who wants more novel or more diverse lists first re-orders what the accuracy
model already ranks high, without retraining. Two standard ways, each with one strength knob:

- :func:`popularity_penalty`: re-order the top-``candidates`` items by
  ``z(score) - strength * z(log(1 + training count))`` (z: standardised within the candidates /
  over the catalog), so ``strength`` is unit-free and comparable across data sets;
- :func:`mmr`: maximal marginal relevance (Carbonell and Goldstein, 1998); greedily pick
  ``argmax (1 - strength) * relevance - strength * max cosine similarity to the items already
  picked``, with relevance the min-max scaled score inside the candidates.

Both return full-catalog scores in which the re-ordered candidates sit above every other item
(which keep the model's order), so the usual full-ranking evaluation and the beyond-accuracy
measures read them unchanged (:func:`reranked`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lares_rl.metrics.ranking import ScoreFn


def _place(scores: Tensor, candidates: Tensor, order: Tensor) -> Tensor:
    """Scores where ``candidates[row, order[row]]`` come first, in that order, above all others."""
    out = scores.clone()
    width = candidates.shape[1]
    ceiling = scores[:, 1:].max(dim=1, keepdim=True).values
    ranked = candidates.gather(1, order)
    out.scatter_(1, ranked, ceiling + 1.0 + torch.arange(width, 0, -1, device=scores.device, dtype=scores.dtype).expand_as(ranked))
    return out


def popularity_penalty(scores: Tensor, popularity: Tensor, strength: float, candidates: int = 100) -> Tensor:
    """Re-order each row's top-``candidates`` by standardised score minus ``strength`` times the
    standardised log training popularity; scores [B, N+1] (column 0 is padding)."""
    values, index = scores[:, 1:].topk(min(candidates, scores.shape[1] - 1), dim=1)
    index = index + 1
    log_pop = torch.log1p(popularity.to(scores.device).float())
    z_pop = (log_pop - log_pop[1:].mean()) / log_pop[1:].std().clamp(min=1e-8)
    z_score = (values - values.mean(dim=1, keepdim=True)) / values.std(dim=1, keepdim=True).clamp(min=1e-8)
    order = (z_score - strength * z_pop[index]).argsort(dim=1, descending=True, stable=True)
    return _place(scores, index, order)


def mmr(scores: Tensor, features: Tensor, strength: float, candidates: int = 100, picks: int = 20) -> Tensor:
    """Maximal-marginal-relevance re-ranking of each row's top-``candidates`` by item ``features``
    [N+1, F]; the first ``picks`` slots are chosen greedily, the rest keep the model's order."""
    values, index = scores[:, 1:].topk(min(candidates, scores.shape[1] - 1), dim=1)
    index = index + 1
    batch, width = index.shape
    low, high = values.min(dim=1, keepdim=True).values, values.max(dim=1, keepdim=True).values
    relevance = (values - low) / (high - low).clamp(min=1e-8)
    unit = torch.nn.functional.normalize(features.to(scores.device).float()[index], dim=-1)  # [B, M, F]
    max_similarity = torch.zeros(batch, width, device=scores.device)
    taken = torch.zeros(batch, width, dtype=torch.bool, device=scores.device)
    rows = torch.arange(batch, device=scores.device)
    order = []
    for step in range(min(picks, width)):
        gain = (1.0 - strength) * relevance - strength * (max_similarity if step else 0.0)
        pick = gain.masked_fill(taken, float("-inf")).argmax(dim=1)
        order.append(pick)
        taken[rows, pick] = True
        max_similarity = torch.maximum(max_similarity, (unit @ unit[rows, pick].unsqueeze(-1)).squeeze(-1))
    rest = torch.arange(width, device=scores.device).expand(batch, width)[~taken].view(batch, -1)  # model order
    return _place(scores, index, torch.cat([torch.stack(order, dim=1), rest], dim=1))


def reranked(score_fn: ScoreFn, rerank: Callable[[Tensor], Tensor]) -> ScoreFn:
    """``score_fn`` followed by ``rerank`` (e.g. ``lambda s: mmr(s, features, 0.3)``)."""

    def score(seq: Tensor, lengths: Tensor) -> Tensor:
        return rerank(score_fn(seq, lengths))

    return score
