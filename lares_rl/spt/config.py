"""SPT settings (the `spt` config group): one typed section, checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lares_rl.catalog.sampled_softmax import NEGATIVES, PROPOSALS, SampledSoftmax
from lares_rl.catalog.topk import item_scorer
from lares_rl.core.config import require


@dataclass
class SPTConfig:
    """``spt`` section; defaults are the reference's except ``shared_anchor`` (a speed-up, see the module docstring).
    configs/spt/default.yaml departs further (cosine similarity, ``positive_gradient: false``)."""

    epochs: int = 200
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    alpha: float = 0.1  # weight of trajectory-level alignment (0 = "no TLA" ablation)
    gamma: float = 0.5  # weight of step-level alignment (0 = "no SLA" ablation)
    similarity: str = "dot"  # dot | cosine
    temperature: float | None = None  # null = DESIGN's value for the similarity: 1.0 for dot, 0.07 for cosine
    patience: int = 10  # epochs without validation NDCG@10 gain before stopping
    mode: str = "rows"  # rows: one row per prefix (reference); dense: every position of a window
    dense_stride: int | None = None  # dense: supervised targets per window; null = max_len // 2
    bucket_by_length: bool = False  # batch rows of similar length together (less padding work on short-history data)
    shared_anchor: bool = True  # the recommendation pass is also the alignment anchor (2 passes a step); false = the reference's 3
    positive_gradient: bool = True  # false: the TLA positive pass runs without autograd (a stop-gradient target, no backward through it)
    negatives: str = "full"  # L_rec over: full (every item) | sampled | in_batch (lares_rl/sampled_softmax.py)
    num_negatives: int = 1024  # sampled: negatives drawn per batch
    negative_proposal: str = "popularity"  # sampled: uniform | popularity (share of the training targets)
    logq_correction: bool = True  # sampled / in_batch: subtract log Q from every candidate's logit
    alignment_negatives: str = (
        "gathered"  # torchrun: TLA/SLA negatives from the whole global batch (gathered) or this rank's rows only (per_rank)
    )
    catalog_loss: str = "auto"  # negatives=full: auto (fused from 2,048 items, where faster) | fused (lares_rl/catalog/fused_ce.py) | full

    def __post_init__(self) -> None:
        if self.temperature is None:
            self.temperature = 0.07 if self.similarity == "cosine" else 1.0

    def validate(self) -> None:
        require(self.epochs >= 1, "spt.epochs", f"must be >= 1, got {self.epochs}")
        require(self.batch_size >= 2, "spt.batch_size", f"must be >= 2 (in-batch negatives), got {self.batch_size}")
        require(self.lr > 0, "spt.lr", f"must be > 0, got {self.lr}")
        require(self.alpha >= 0 and self.gamma >= 0, "spt.alpha/spt.gamma", "must be >= 0")
        require(self.similarity in ("dot", "cosine"), "spt.similarity", f"must be dot or cosine, got {self.similarity!r}")
        require(self.temperature > 0, "spt.temperature", f"must be > 0, got {self.temperature}")
        require(self.patience >= 1, "spt.patience", f"must be >= 1, got {self.patience}")
        require(self.mode in ("rows", "dense"), "spt.mode", f"must be rows or dense, got {self.mode!r}")
        require(isinstance(self.bucket_by_length, bool), "spt.bucket_by_length", f"must be true or false, got {self.bucket_by_length!r}")
        require(isinstance(self.shared_anchor, bool), "spt.shared_anchor", f"must be true or false, got {self.shared_anchor!r}")
        require(isinstance(self.positive_gradient, bool), "spt.positive_gradient", f"must be true or false, got {self.positive_gradient!r}")
        require(self.negatives in NEGATIVES, "spt.negatives", f"must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        require(self.num_negatives >= 1, "spt.num_negatives", f"must be >= 1, got {self.num_negatives}")
        require(
            self.negative_proposal in PROPOSALS,
            "spt.negative_proposal",
            f"must be one of {', '.join(PROPOSALS)}, got {self.negative_proposal!r}",
        )
        require(isinstance(self.logq_correction, bool), "spt.logq_correction", f"must be true or false, got {self.logq_correction!r}")

        require(
            self.alignment_negatives in ("gathered", "per_rank"),
            "spt.alignment_negatives",
            f"must be gathered or per_rank, got {self.alignment_negatives!r}",
        )
        require(
            self.catalog_loss in ("auto", "fused", "full"), "spt.catalog_loss", f"must be auto, fused or full, got {self.catalog_loss!r}"
        )

    def rec_softmax(self, policy: nn.Module, train_targets: torch.Tensor) -> SampledSoftmax | None:
        """The sampled / in-batch L_rec for ``policy`` (None: the full softmax). ``train_targets``:
        every supervised target of an epoch, whose counts are the popularity proposal."""
        if self.negatives == "full":
            return None
        item_scorer(policy, "spt.negatives")
        num_items = int(policy.num_items)
        require(
            self.negatives != "sampled" or self.num_negatives < num_items,
            "spt.num_negatives",
            f"must be below the catalog size ({num_items} items), got {self.num_negatives}; lower it, or use spt.negatives=full on a catalog this small",
        )
        counts = torch.bincount(train_targets[train_targets > 0], minlength=num_items + 1)
        return SampledSoftmax(self.negatives, counts, self.num_negatives, self.negative_proposal, self.logq_correction)
