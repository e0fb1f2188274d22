"""Run-time plumbing shared by the trainers: seeding, device choice, early stopping."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from lares_rl.core.errors import LaresError


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) so that a CPU run is bit-reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LaresError("device=cuda but no CUDA device is available; use device=auto or device=cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise LaresError(f"device={name!r} is unknown; use auto, cpu or cuda")
    return torch.device(name)


@dataclass
class EarlyStopping:
    """Tracks the best validation score; ``step`` returns True when patience is exhausted."""

    patience: int
    best: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[float] = field(default_factory=list)

    def step(self, score: float, epoch: int) -> bool:
        self.history.append(score)
        if score > self.best:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    @property
    def improved(self) -> bool:
        return self.bad_epochs == 0

    def state_dict(self) -> dict:
        return {
            "patience": self.patience,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.patience, self.best, self.best_epoch = state["patience"], state["best"], state["best_epoch"]
        self.bad_epochs, self.history = state["bad_epochs"], list(state["history"])
