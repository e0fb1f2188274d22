"""The two real data sets the benchmarks run on, loaded the same way by every script."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from lares_rl.data import DatasetConfig, SequenceData, load_dataset

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK_DATASETS = ("ml-100k", "amazon-beauty")
DEFAULT_BEAUTY_PATH = ROOT.parent / "shared" / "data" / "amazon-beauty-5core.txt"


def load_benchmark_dataset(name: str, beauty_path: str | Path = DEFAULT_BEAUTY_PATH, max_len: int | None = None) -> tuple[SequenceData, dict]:
    """``configs/dataset/<name>.yaml`` with the Beauty file's location (it lives outside the
    project) and an optional ``max_len`` override; returns the processed data and the config
    used, which the benchmark records so that a checkpoint can be matched to its data."""
    dataset_cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "dataset" / f"{name}.yaml"))
    if name == "amazon-beauty":
        dataset_cfg["path"] = str(beauty_path)
    if max_len:
        dataset_cfg["max_len"] = max_len
    return load_dataset(DatasetConfig.from_mapping(dataset_cfg), ROOT / ".lares_cache"), dataset_cfg
