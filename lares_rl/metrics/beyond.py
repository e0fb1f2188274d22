"""Beyond-accuracy measures of top-K lists: catalog coverage, novelty, popularity, exposure Gini
and intra-list diversity.

Accuracy metrics score one held-out item per user; these score the lists themselves, which is
what a novelty or diversity objective changes. The item-level formulas (self-information,
intra-list distance) are shared with the rewards in :mod:`lares_rl.rewards`, so what RPT is
trained on and what evaluation reports are the same quantity.

Definitions (K a cut-off, L_u user u's top-K, c_i item i's training interactions, C = sum c_i,
N the catalog size):

- ``coverage@K``: |union of L_u| / N;
- ``novelty@K``: mean over users and slots of the self-information -log2((c_i + 1) / (C + N))
  (add-one smoothed, so an item never seen in training is finite);
- ``popularity@K``: mean c_i of the recommended items (average recommended popularity);
- ``gini@K``: Gini coefficient of how often each of the N items is recommended (0: equal
  exposure, 1: one item takes it all);
- ``ild@K``: mean pairwise cosine distance between the item vectors of a list (categories where
  the data set has them, otherwise the frozen SPT item embeddings; ``ItemContext.features``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

BEYOND_NAMES = ("coverage", "novelty", "popularity", "gini", "ild")


def self_information(popularity: Tensor) -> Tensor:
    """-log2 of each item's smoothed training share, [N+1] (row 0, the padding, included)."""
    counts = popularity.double()
    total = counts[1:].sum() + (len(counts) - 1)
    return (-torch.log2((counts + 1.0) / total)).float()


def intra_list_distance(features: Tensor) -> Tensor:
    """Mean pairwise cosine distance inside each list: features [B, K, F] -> [B].

    An all-zero vector (an item without categories) has distance 1 to everything. A list of one
    item has no pairs and scores 0."""
    batch, k = features.shape[:2]
    if k < 2:
        return torch.zeros(batch, dtype=torch.float32, device=features.device)
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    similarity = unit @ unit.transpose(1, 2)
    off_diagonal = similarity.sum(dim=(1, 2)) - similarity.diagonal(dim1=1, dim2=2).sum(dim=1)
    return 1.0 - off_diagonal / (k * (k - 1))


def gini(counts: Tensor) -> Tensor:
    """Gini coefficient of non-negative counts (one per item)."""
    values = counts.double().sort().values
    n = len(values)
    if n == 0 or values.sum() == 0:
        return torch.tensor(0.0)
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return ((2 * ranks - n - 1) * values).sum() / (n * values.sum())


class BeyondAccuracy:
    """Accumulates the top-max(K) lists of evaluation batches, then reports every measure @K.

    Fed with the same (history-masked) full-catalog scores the accuracy metrics rank, one
    ``observe`` per batch; memory is users x max(K) item ids.
    """

    def __init__(self, popularity: Tensor, features: Tensor | None, ks: Sequence[int]) -> None:
        self.popularity = popularity.float().cpu()
        self.information = self_information(self.popularity)
        self.features = None if features is None else features.float().cpu()  # None: no ild@K
        self.ks = sorted(set(int(k) for k in ks))
        self.lists: list[Tensor] = []

    def observe(self, scores: Tensor) -> None:
        """Record the top-max(K) item ids of each row of ``scores`` [b, N+1] (padding column ignored)."""
        top = scores[:, 1:].topk(min(self.ks[-1], scores.shape[1] - 1), dim=1).indices + 1
        self.lists.append(top.cpu())

    def exposure(self, k: int) -> Tensor:
        """[N+1] how many of the observed top-``k`` lists hold each item id (row 0, padding, is 0)."""
        return torch.bincount(torch.cat(self.lists)[:, :k].reshape(-1), minlength=len(self.popularity))

    def result(self) -> dict[str, float]:
        lists = torch.cat(self.lists)
        out = {}
        for k in self.ks:
            top = lists[:, :k]
            exposure = self.exposure(k)[1:]
            out[f"coverage@{k}"] = (exposure > 0).float().mean().item()
            out[f"novelty@{k}"] = self.information[top].mean().item()
            out[f"popularity@{k}"] = self.popularity[top].mean().item()
            out[f"gini@{k}"] = gini(exposure).item()
            if self.features is not None:
                out[f"ild@{k}"] = intra_list_distance(self.features[top]).mean().item()
        return out
