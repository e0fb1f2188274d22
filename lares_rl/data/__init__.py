"""Data pipeline: loaders, k-core filtering, id remapping, leave-one-out split, cached processing."""

from lares_rl.data.config import DatasetConfig
from lares_rl.data.embedded import embedded_ml100k_path
from lares_rl.data.pipeline import load_dataset
from lares_rl.data.sequences import SequenceData
from lares_rl.data.stats import format_stats

__all__ = ["DatasetConfig", "SequenceData", "load_dataset", "embedded_ml100k_path", "format_stats"]
