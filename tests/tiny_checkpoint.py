"""Tiny saved checkpoints for the serving tests, written the way SPT training writes them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lares_rl.core.checkpoint import save_checkpoint
from lares_rl.data import SequenceData
from lares_rl.policies.reasoner import LaresReasoner

# the ring checkpoint: twelve users walk a ring of twelve items with ids i1..i12 and titles
N, MAX_LEN = 12, 5
POLICY_KWARGS = dict(d_model=16, n_heads=2, inner_size=32, dropout=0.1, n_pre_layers=1, n_core_layers=1, mean_recurrence=2)
IDS = [f"i{i}" for i in range(1, N + 1)]


def save_spt_checkpoint(path: Path, policy: nn.Module, policy_kwargs: dict, data: SequenceData, max_len: int, dataset_name: str) -> Path:
    """``policy`` (a LaresReasoner built with ``policy_kwargs``) saved as an SPT checkpoint of ``data``."""
    save_checkpoint(
        path,
        policy=policy,
        policy_config={"_target_": "lares_rl.policies.reasoner.LaresReasoner", **policy_kwargs},
        data=data,
        max_len=max_len,
        dataset_name=dataset_name,
        phase="spt",
        epoch=0,
        metrics={},
        config={},
    )
    return path


def save_ring_checkpoint(path: Path, steps: int) -> Path:
    """The ring reasoner after ``steps`` steps of next-item CE on every user's first MAX_LEN items
    (seeded: "trained" enough for ranking to mean something), saved at ``path``."""
    torch.manual_seed(0)
    sequences = [[(u + j) % N + 1 for j in range(6)] for u in range(N)]
    data = SequenceData.from_sequences(sequences, num_items=N)
    data = dataclasses.replace(
        data, item_ids=np.array(["<pad>", *IDS]), item_titles=np.array(["", *[f"Title {i}" for i in range(1, N + 1)]]), fingerprint="tiny"
    )
    policy = LaresReasoner(num_items=N, max_len=MAX_LEN, **POLICY_KWARGS)
    optimizer = torch.optim.Adam(policy.parameters(), 1e-2)
    seq = torch.tensor([s[:MAX_LEN] for s in sequences])
    lengths = torch.full((N,), MAX_LEN)
    targets = torch.tensor([s[MAX_LEN] for s in sequences])
    for _ in range(steps):
        loss = F.cross_entropy(policy(seq, lengths), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_spt_checkpoint(path, policy, POLICY_KWARGS, data, MAX_LEN, "tiny")
