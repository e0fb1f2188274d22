"""Resumable training: exact RNG capture, crash-safe training-state files, and Ctrl-C handling.

A training loop saves its state (model, optimiser, early stopping, every RNG, position in the
epoch) atomically after each epoch and when interrupted. Restoring all RNG streams at the same
point makes a resumed CPU run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import random
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lares_rl.core.atomic import atomic_torch_save
from lares_rl.core.errors import LaresError


class TrainingInterrupted(LaresError):
    """Raised after Ctrl-C once the current step finished and the state was saved."""


def capture_rng(*generators: torch.Generator) -> dict[str, Any]:
    """python, numpy, torch (and CUDA) global streams plus the state of each private generator."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
    }
    if generators:
        state["generator"] = generators[0].get_state()  # the single-generator layout of older state files
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], *generators: torch.Generator) -> None:
    """Restore what :func:`capture_rng` captured; ``generators`` in the same order as captured."""
    saved = state.get("generators", [state["generator"]] if "generator" in state else [])
    if len(saved) != len(generators):
        raise LaresError(
            f"cannot resume: the training state holds {len(saved)} private RNG stream(s), this run has {len(generators)}; start a new run"
        )
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for generator, generator_state in zip(generators, saved):
        generator.set_state(generator_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict (names, dtypes, shapes, values): tells whether two models hold the same weights."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        digest.update(name.encode())
        if torch.is_tensor(value):
            value = value.detach().cpu().contiguous()
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


TRAINING_STATE_FORMAT = "lares_rl.training_state/1"


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    atomic_torch_save(path, {"format": TRAINING_STATE_FORMAT, **state})


def load_training_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LaresError(f"cannot resume: {path} does not exist; resume=<run dir> must point at a run that saved a training state")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise LaresError(f"cannot resume: training state {path} is corrupt ({type(err).__name__}); start a new run") from err
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise LaresError(f"cannot resume: {path} is not a lares_rl training state")
    return state


class StopRequest:
    """Set by the first SIGINT; the loop checks ``requested`` after each step. A second Ctrl-C
    aborts at once (the last saved state stays intact because every write is atomic)."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[lares-rl] Ctrl-C: finishing the current step and saving a checkpoint (Ctrl-C again to abort)", flush=True)


@contextmanager
def stop_on_sigint() -> Iterator[StopRequest]:
    request = StopRequest()
    try:
        previous = signal.signal(signal.SIGINT, request._handle)
    except ValueError:  # not in the main thread: no handler, Ctrl-C behaves as usual
        yield request
        return
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)
