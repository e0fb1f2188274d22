import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# precision=auto is bf16 on machines with bf16 matrix units; the suite's numbers must not depend on the machine
os.environ.setdefault("LARES_RL_PRECISION", "fp32")
# run's baseline in this process, as the suite's run tests print and time it; tests/test_baseline_process.py runs it beside
os.environ.setdefault("LARES_RL_BASELINE_PARALLEL", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from tests.synthetic import dataset_overrides, write_sequential_csv  # noqa: E402

# the same examples on every run: a property test that fails in CI fails again locally
settings.register_profile("lares", derandomize=True, deadline=None)
settings.load_profile("lares")


@pytest.fixture(autouse=True)
def data_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Processed data go to ``tmp_path/.lares_cache``, never into the user's cache directory (the
    default, lares_rl/data/cache.py): each test starts from an empty cache, as it did when the cache
    was the working directory's, and child processes inherit the variable."""
    monkeypatch.setenv("LARES_RL_CACHE_DIR", str(tmp_path / ".lares_cache"))


@pytest.fixture
def sequential_csv(tmp_path: Path) -> Path:
    """``tmp_path/log.csv``: 60 users walking a 40-item ring (write_sequential_csv's defaults)."""
    return write_sequential_csv(tmp_path / "log.csv")


@pytest.fixture
def custom_data_args(sequential_csv: Path) -> list[str]:
    """CLI overrides that read ``sequential_csv`` as the custom data set (max_len 8), without progress bars."""
    return [*dataset_overrides(sequential_csv), "progress=false"]
