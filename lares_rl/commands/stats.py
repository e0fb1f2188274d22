"""``lares-rl stats``: the data set as loaded (size, density and what each filter removed), without a model."""

from __future__ import annotations

from omegaconf import DictConfig

from lares_rl.commands.session import load_data
from lares_rl.data import format_stats


def command_stats(cfg: DictConfig) -> None:
    print(format_stats(load_data(cfg)))
