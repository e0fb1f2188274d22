"""Tiny synthetic interaction logs with learnable structure, for end-to-end tests, and tiny
reasoners with random histories, for tests of the encoder itself."""

from pathlib import Path

import numpy as np
import torch

from lares_rl.data import SequenceData
from lares_rl.data.synthetic import successor_log
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.train import train_spt


def tiny_reasoner(num_items: int, max_len: int, **kwargs) -> LaresReasoner:
    """A reasoner with seeded weights, in eval mode: 16 wide with 2 heads unless ``kwargs`` say otherwise."""
    torch.manual_seed(0)
    return LaresReasoner(num_items=num_items, max_len=max_len, **({"d_model": 16, "n_heads": 2, "inner_size": 32} | kwargs)).eval()


def random_histories(batch: int, num_items: int, max_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` left-aligned histories of random items, lengths 1..max_len: (seq [B, L], lengths [B])."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=generator)
    seq = torch.randint(1, num_items + 1, (batch, max_len), generator=generator)
    seq[torch.arange(max_len)[None] >= lengths[:, None]] = 0
    return seq, lengths


# the columns write_sequential_csv writes, as the custom data set names them
CSV_COLUMNS = {"user_col": "uid", "item_col": "sku", "time_col": "ts"}


def write_sequential_csv(path: Path, users: int = 60, items: int = 40, length: int = 14, seed: int = 0) -> Path:
    """Each user walks the item ring (i -> i+1 mostly), so next-item models can learn something."""
    rng = np.random.default_rng(seed)
    lines = ["uid,sku,ts"]
    for user in range(users):
        item = int(rng.integers(items))
        for t in range(length):
            lines.append(f"u{user},i{item},{1000 * user + t}")
            item = (item + (1 if rng.random() < 0.85 else int(rng.integers(items)))) % items
    path.write_text("\n".join(lines) + "\n")
    return path


def dataset_overrides(path: Path, max_len: int = 8) -> list[str]:
    """The command-line overrides that read the uid,sku,ts CSV at ``path`` as the ``custom`` data set."""
    return [
        "dataset=custom",
        f"dataset.path={path}",
        *(f"dataset.{key}={col}" for key, col in CSV_COLUMNS.items()),
        f"dataset.max_len={max_len}",
    ]


def tiny_run_overrides(spt_epochs: int = 1) -> list[str]:
    """A ``lares-rl run`` small enough for a test: LARES and its baseline at d 16, ``spt_epochs``
    SPT epochs in batches of 64, one RPT epoch of 64-history batches, no progress bars."""
    return [
        f"spt.epochs={spt_epochs}",
        "spt.batch_size=64",
        "policy.d_model=16",
        "policy.inner_size=32",
        "rpt.epochs=1",
        "rpt.histories_per_batch=64",
        "progress=false",
    ]


def benchmark_dataset_flags(path: Path, max_len: int = 8) -> list[str]:
    """The benchmark scripts' flags that read the uid,sku,ts CSV at ``path`` as the ``custom`` data set."""
    return [
        "--dataset",
        "custom",
        "--dataset-set",
        f"path={path}",
        *(f"{key}={col}" for key, col in CSV_COLUMNS.items()),
        f"max_len={max_len}",
    ]


def spt_trained_on_successor_log(run_dir: Path, max_len: int = 12) -> tuple[SequenceData, LaresReasoner]:
    """A small LARES (d 32, seeded 0) after 2 quick SPT epochs on a 200-user successor log: good
    enough that a ranking reward varies across rollouts, far from converged (so a working RPT
    update has room to raise it). The RPT tests' shared starting point."""
    data = successor_log(users=200, items=100, min_len=8, max_len=20, seed=0).data
    torch.manual_seed(0)
    policy = LaresReasoner(data.num_items, max_len=max_len, d_model=32, n_heads=2, inner_size=64, dropout=0.2)
    train_spt(
        policy=policy,
        policy_config={},
        data=data,
        max_len=max_len,
        cfg=SPTConfig(epochs=2, batch_size=64, mode="dense", similarity="cosine"),
        eval_cfg=EvalConfig(),
        run_dir=run_dir,
        device=torch.device("cpu"),
        seed=0,
        config={"dataset": {"name": "successor"}},
        progress=False,
    )
    return data, policy
