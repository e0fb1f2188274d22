"""Most-popular: the floor of every recommender results table.

Every user gets the same list, the items consumed most often in the training part, most popular
first. Popularity counts the training part only (:func:`lares_rl.core.checkpoint.training_item_counts`:
each user's validation and test items never count), so the floor sees nothing a trained model
could not. The policy has no trainable parameters: :meth:`MostPopular.fit` sets it from the data
in closed form, and it keeps the policy contract (``encode``, ``scores``, ``item_scores``,
``score_operands``) so that evaluation, chunked ranking, checkpoints and serving treat it like
any other policy.
"""

from __future__ import annotations

import torch
from torch import nn

from lares_rl.core.checkpoint import training_item_counts


class MostPopular(nn.Module):
    """Training popularity as a one-column item table, scored against a constant user state.

    An item's score is its place in the popularity order (N for the most popular, 1 for the
    least), ties broken by the lower item index. The list is then a strict order, as a
    most-popular list is in other toolkits (a top-K cut picks one of the tied items): raw counts
    would tie most of the catalog's tail, and the metrics' pessimistic tie rule would rank a tied
    target below every item it ties with.

    Args:
        num_items: N; item ids are 1..N and 0 is padding.
        max_len: the history window (kept for the policy contract: the list ignores histories).
    """

    recurrent = False

    def __init__(self, num_items: int, max_len: int = 20) -> None:
        super().__init__()
        if num_items < 1 or max_len < 1:
            raise ValueError(f"num_items ({num_items}) and max_len ({max_len}) must be >= 1")
        self.num_items, self.max_len, self.d_model = num_items, max_len, 1
        # a frozen parameter (not a buffer): saved in checkpoints, moved by .to(), and what
        # next(policy.parameters()) finds, with nothing for an optimiser to train
        self.item_table = nn.Parameter(torch.zeros(num_items + 1, 1), requires_grad=False)

    @torch.no_grad()
    def fit(self, data) -> None:
        """Set the scores from ``data``'s training part (the data set this policy was built for)."""
        counts = torch.from_numpy(training_item_counts(data))
        if len(counts) != self.num_items + 1:
            raise ValueError(f"the data has {len(counts) - 1} items but this policy was built for {self.num_items}")
        order = torch.argsort(-counts[1:], stable=True)  # most popular first, ties by lower index
        places = torch.empty(self.num_items)
        places[order] = torch.arange(self.num_items, 0, -1, dtype=places.dtype)
        self.item_table[1:, 0] = places.to(self.item_table.device)

    def sample_steps(self, generator: torch.Generator | None = None) -> int:
        """0: there is no reasoning depth (as for SASRec)."""
        return 0

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor, k: int | None = None, **_: object) -> torch.Tensor:
        """[B, 1, 1] ones: every user has the same state, hence the same list."""
        return self.item_table.new_ones(len(lengths), 1, 1)

    def score_operands(self, states: torch.Tensor, items: slice | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, item table rows) whose product is the scores (the reasoner's contract)."""
        return states, self.item_table if items is None else self.item_table[items]

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """[..., 1] -> [..., N + 1] popularity places; padding at -inf."""
        queries, table = self.score_operands(states)
        logits = queries @ table.T
        logits[..., 0] = float("-inf")
        return logits

    def item_scores(self, states: torch.Tensor, items: slice | torch.Tensor) -> torch.Tensor:
        """[..., 1] -> [..., n]: the places of the given items only (ids >= 1), for chunked ranking."""
        queries, table = self.score_operands(states, items)
        return queries @ table.T

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Full-catalog scores, [B, N + 1]."""
        return self.scores(self.encode(seq, lengths, k)[:, -1])

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, fitted={bool(self.item_table[1:].any())}, trainable_params=0"
