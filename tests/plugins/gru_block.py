"""The README's "bring your own backbone" example, kept runnable by tests/test_policies.py."""

import torch
from torch import nn


class GRUBlock(nn.Module):
    """A causal GRU encoder with the backbone contract (x [B, L, d], valid [B, L]) -> [B, L, d]."""

    causal = True

    def __init__(self, d_model: int, n_layers: int, dropout: float, **_: object) -> None:
        super().__init__()
        self.gru = nn.GRU(d_model, d_model, num_layers=n_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.gru(x)[0])
