"""L_rec when the full softmax does not fit: sampled or in-batch negatives, with log-Q correction.

The full softmax scores every supervised position against all N items, an n x N matrix (and its
gradient): with dense windows of 128 x 10 targets and a million items that is 5 GB per step.
Instead each position is scored against its own target and a small candidate set:

- ``sampled``: ``num_negatives`` items drawn for the whole batch from a proposal Q, ``uniform``
  over the catalog or by ``popularity`` (the items' share of the training targets);
- ``in_batch``: the distinct targets of the batch itself, which arrive by popularity.

A candidate drawn with probability Q(j) shows up as a negative in proportion to Q(j), so popular
items get pushed down far more often than the full softmax would push them. Subtracting log Q(j)
from every candidate's logit (the positive's included) removes that bias (Jean et al. 2015 for
sampled softmax; Yi et al. 2019, "Sampling-bias-corrected neural modeling", for in-batch
negatives); ``logq_correction=false`` leaves the raw logits. For in-batch candidates Q is the
chance that an item is among the batch's n targets, ``1 - (1 - p_j)^n``. A sampled negative that
is the row's own target (an accidental hit) is masked.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lares_rl.catalog.topk import ItemScorer

NEGATIVES = ("full", "sampled", "in_batch")
PROPOSALS = ("uniform", "popularity")


class SampledSoftmax:
    """The recommendation loss over a candidate set, built once per data set.

    Args:
        kind: ``sampled`` or ``in_batch`` (``full`` needs no object: plain cross-entropy).
        target_counts: [N + 1] how often each item is a training target (index 0 unused).
        num_negatives: negatives per batch for ``sampled``.
        proposal: ``uniform`` or ``popularity``, the Q of ``sampled``.
        logq_correction: subtract log Q from every candidate's logit.
    """

    def __init__(self, kind: str, target_counts: torch.Tensor, num_negatives: int, proposal: str, logq_correction: bool) -> None:
        if kind not in ("sampled", "in_batch") or proposal not in PROPOSALS:
            raise ValueError(f"kind={kind!r} must be sampled or in_batch and proposal={proposal!r} one of {PROPOSALS}")
        self.kind, self.num_negatives, self.proposal, self.logq_correction = kind, num_negatives, proposal, logq_correction
        self.num_items = len(target_counts) - 1
        counts = target_counts.double().clone()
        counts[0] = 0.0
        # add-one smoothing: an item never seen as a target can still be drawn (and its log Q is finite)
        smoothed = counts + (torch.arange(len(counts)) > 0).double()
        self.popularity = smoothed / smoothed.sum()
        self.cdf = self.popularity.cumsum(0)

    def draw(self, count: int, device: torch.device) -> torch.Tensor:
        """``count`` negatives from the proposal (global RNG, so a saved training state replays them)."""
        if self.proposal == "uniform":
            return torch.randint(1, self.num_items + 1, (count,), device=device)
        picks = torch.searchsorted(self.cdf, torch.rand(count, dtype=torch.float64) * self.cdf[-1])
        return picks.clamp(1, self.num_items).to(device)

    def candidate_log_q(self, candidates: torch.Tensor, batch_targets: int) -> torch.Tensor:
        """log Q of each candidate column: the proposal's probability, or for in-batch candidates
        the chance of being among ``batch_targets`` popularity draws."""
        if self.kind == "sampled" and self.proposal == "uniform":
            return torch.full(candidates.shape, -math.log(self.num_items))
        p = self.popularity[candidates.cpu()]
        if self.kind == "sampled":
            return p.log().float()
        return torch.log(-torch.expm1(batch_targets * torch.log1p(-p))).float()

    def loss(self, states: torch.Tensor, targets: torch.Tensor, score_items: ItemScorer) -> torch.Tensor:
        """Mean cross-entropy of each state's target against the candidates. states [n, d], targets [n]."""
        unique, label = torch.unique(targets, return_inverse=True)
        if self.kind == "in_batch":
            logits = score_items(states, unique)
            log_q = self.candidate_log_q(unique, len(targets)).to(logits.device)
        else:
            negatives = self.draw(self.num_negatives, states.device)
            positive = score_items(states, unique).gather(1, label.view(-1, 1))
            negative = score_items(states, negatives).masked_fill(negatives.view(1, -1) == targets.view(-1, 1), float("-inf"))
            logits = torch.cat([positive, negative], dim=1)
            log_q = torch.cat(
                [
                    self.candidate_log_q(targets, len(targets)).view(-1, 1),
                    self.candidate_log_q(negatives, len(targets)).expand(len(targets), -1),
                ],
                dim=1,
            ).to(logits.device)
            label = torch.zeros_like(targets)
        if self.logq_correction:
            logits = logits - log_q
        return F.cross_entropy(logits, label)
