"""configs/dataset/amazon2023-instruments.yaml: the paper's settings, and a required path whose
absence is one error saying which key to set and where the data comes from."""

from importlib.resources import files

import pytest
from cli_process import run_in_process
from fixtures_data import write_ordered_lines
from omegaconf import OmegaConf

from lares_rl.core.config import to_plain
from lares_rl.core.errors import LaresError
from lares_rl.data import DatasetConfig, load_dataset
from lares_rl.eval.evaluation import EvalConfig

ORIGIN_WORDS = ("Amazon Reviews 2023", "Musical Instruments 5-core", "Hou et al. 2024", "user item1 item2")


def instruments(**changes) -> dict:
    """The option's values (configs/dataset/amazon2023-instruments.yaml) with ``changes``."""
    return {**to_plain(OmegaConf.load(str(files("lares_rl.configs") / "dataset" / "amazon2023-instruments.yaml"))), **changes}


def test_the_paper_settings():
    dataset = instruments()
    assert dataset["name"] == "amazon2023-instruments" and dataset["format"] == "ordered_lines"
    assert (dataset["max_len"], dataset["user_core"], dataset["item_core"]) == (20, 5, 5)
    assert dataset["path"] == "???"  # required: a user-facing file never points outside the repository
    assert EvalConfig().exclude_history is False  # the paper ranks the whole catalog, history included


def test_a_missing_path_names_the_key_and_where_the_data_comes_from():
    with pytest.raises(LaresError) as caught:
        DatasetConfig.from_mapping(instruments())
    assert "dataset.path is required for dataset=amazon2023-instruments" in str(caught.value)
    assert all(word in str(caught.value) for word in ORIGIN_WORDS)


def test_a_missing_file_names_the_file_the_key_and_where_the_data_comes_from(tmp_path):
    missing = tmp_path / "amazon2023-instruments-5core.txt"
    with pytest.raises(LaresError) as caught:
        load_dataset(DatasetConfig.from_mapping(instruments(path=str(missing))), tmp_path / "cache")
    message = str(caught.value)
    assert str(missing) in message and "dataset.path" in message and all(word in message for word in ORIGIN_WORDS)


def test_the_cli_error_is_one_line(tmp_path, monkeypatch, capsys):
    returncode, _, stderr = run_in_process(monkeypatch, capsys, tmp_path, "stats", "dataset=amazon2023-instruments", "hydra.run.dir=run")
    assert returncode != 0
    assert "dataset.path" in stderr and "Hou et al. 2024" in stderr and "Traceback" not in stderr


def test_an_ordered_lines_file_loads(tmp_path):
    path = write_ordered_lines(tmp_path / "lines.txt")
    data = load_dataset(DatasetConfig.from_mapping(instruments(path=str(path), user_core=1, item_core=1)), tmp_path / "cache")
    assert (data.num_users, data.num_items) == (3, 4)


def test_other_dataset_configs_keep_their_errors():
    """``origin`` is optional: a config without it keeps the message it had."""
    with pytest.raises(LaresError, match=r"pass dataset.path=<your interactions file>$"):
        DatasetConfig.from_mapping({"name": "custom", "path": "???"})
    assert DatasetConfig().origin is None
