"""What speed_profile.py and speed.py share: the two data sets (Instruments read from
``--data-dir``, skipped with one line when absent), the policies and SPT settings that
``lares-rl spt preset=cpu`` builds, SPT batches cut as ``train_spt`` cuts them, and CPU timing."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from benchmark_data import ROOT, config_file, load_benchmark_dataset
from torch import nn

from lares_rl.core.checkpoint import build_policy
from lares_rl.data import SequenceData
from lares_rl.spt.batches import epoch_order, training_rows
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.losses import total_loss

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
INSTRUMENTS_FILE = "amazon2023-instruments-5core.txt"
MAX_LEN = 20  # both data sets at the window the issue measures
DATASETS = ("ml-100k", "instruments")

T = TypeVar("T")
SPTBatch = tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"folder holding {INSTRUMENTS_FILE} (default: ../shared/data beside the repo)",
    )


def load_data(name: str, data_dir: Path) -> SequenceData | None:
    """ML-100K (shipped) or Amazon 2023 Musical Instruments from ``data_dir``; None, after one
    line saying so, when the Instruments file is not there."""
    if name == "ml-100k":
        return load_benchmark_dataset("ml-100k", {"max_len": MAX_LEN})[0]
    path = data_dir / INSTRUMENTS_FILE
    if not path.is_file():
        print(f"[skip] instruments: {instruments_missing(path)}", flush=True)
        return None
    overrides = {"name": "amazon2023-instruments", "path": str(path), "format": "ordered_lines", "max_len": MAX_LEN}
    return load_benchmark_dataset("custom", overrides)[0]


def instruments_missing(path: Path) -> str:
    """What to say when the Instruments file is not at ``path``."""
    return f"{path} not found (pass --data-dir <folder holding {INSTRUMENTS_FILE}>)"


class FirstUsers:
    """``data`` seen through its first ``users`` evaluation rows: a fixed slice of work instead of
    a whole pass over 57,439 Instruments users."""

    def __init__(self, data: SequenceData, users: int) -> None:
        self.data, self.users = data, min(users, data.num_users)

    def eval_inputs(self, split: str, max_len: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[: self.users] for t in self.data.eval_inputs(split, max_len))


def spt_config(**overrides) -> SPTConfig:
    """configs/spt/default.yaml under preset=cpu (dense windows of 128), plus ``overrides``."""
    values = config_file("spt", "default") | config_file("preset", "cpu")["spt"] | overrides
    cfg = SPTConfig(**values)
    cfg.validate()
    return cfg


def build(policy_name: str, data: SequenceData, seed: int = 0) -> nn.Module:
    """configs/policy/<policy_name>.yaml for ``data``'s catalog, seeded."""
    torch.manual_seed(seed)
    return build_policy(config_file("policy", policy_name), data.num_items, MAX_LEN)


def spt_batches(policy: nn.Module, data: SequenceData, cfg: SPTConfig, seed: int = 0) -> Iterator[SPTBatch]:
    """Endless full batches ((seqs, lengths, targets), (positive seqs, lengths)) in the epoch
    order and with the positives that ``train_spt`` draws."""
    (seqs, lengths, targets), positives = training_rows(policy, data, MAX_LEN, cfg)
    generator = torch.Generator().manual_seed(seed)
    while True:
        for rows in epoch_order(lengths, cfg.batch_size, cfg.bucket_by_length, generator).split(cfg.batch_size):
            if len(rows) == cfg.batch_size:
                pos = positives.sample(rows, generator)
                yield (seqs[rows], lengths[rows], targets[rows]), (seqs[pos], lengths[pos])


def spt_update(forward: Callable[[Any, Any], dict], optimizer: torch.optim.Optimizer, batch: Any, positive: Any, index: int) -> None:
    """One whole SPT step as ``train_spt`` takes it: the loss terms of ``forward(batch, positive)``
    summed for step ``index``, backward, then the optimizer step."""
    loss = total_loss(forward(batch, positive), index)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def alternating(paths: list[T], index: int) -> list[T]:
    """``paths`` in turn order for round ``index``: reversed every other round, since whichever
    ran second was measured a few percent slower on this shared machine (identical code: 0.91x)."""
    return paths if index % 2 == 0 else paths[::-1]


def cpu_ms(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and its CPU milliseconds: with one thread that is the call's own work, which unlike
    wall time does not grow when other jobs share the cores."""
    start = time.process_time()
    out = fn()
    return out, 1000 * (time.process_time() - start)


def one_thread() -> None:
    """The measurements are of one core (OMP_NUM_THREADS=1 as every run on the shared box)."""
    torch.set_num_threads(1)
