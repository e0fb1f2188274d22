"""One source of defaults (issue 33): every typed config section starts from its dataclass, the
group files list only what they change, and no composed value moved when that was introduced.

composed_configs.json holds configs/config.yaml composed before the schemas existed (commit
2ef0759): the defaults in full, then what each group option and each rpt option x preset changes.
Deliberate changes since: dataset=amazon-beauty no longer points outside the repository (path ???);
cache_dir is null (the user's cache directory, not .lares_cache in the working directory).
preset=cpu trains to convergence (issue 35 item 6): SPT patience 3 under a 40-epoch cap, RPT one full pass after a one-pass filter.
"""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lares_rl.commands.schemas import SCHEMAS, compose_config, option_values, schema_node
from lares_rl.core.config import flatten_keys, to_plain

SNAPSHOT = json.loads((Path(__file__).with_name("composed_configs.json")).read_text())
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _composed_before(option: str) -> dict:
    if option == "defaults":
        return dict(SNAPSHOT["defaults"])
    change = SNAPSHOT["options"][option]
    values = {**SNAPSHOT["defaults"], **change["changed"]}
    return {key: value for key, value in values.items() if key not in change.get("absent", [])}


def _pinned_by_presets(overrides: list[str]) -> set[str]:
    """Keys a chosen preset sets itself: a key added after the snapshot may be pinned there on
    purpose (preset=paper keeps rpt.filter_order=given, the reference's batches)."""
    presets = [value for key, _, value in (o.partition("=") for o in overrides) if key == "preset"]
    return {key for name in presets for key in flatten_keys(to_plain(OmegaConf.load(CONFIGS / "preset" / f"{name}.yaml")))}


@pytest.mark.parametrize("option", ["defaults", *SNAPSHOT["options"]])
def test_every_value_composes_as_before_the_schemas(option):
    """Same value for every key composed before (1800 and 1800.0 are the same number); a key the
    old composition lacked (grpo.yaml never listed rpt.objective) is the dataclass default the
    code filled in then. Keys that later changes add to the configs are not this test's business."""
    before = _composed_before(option)
    overrides = [] if option == "defaults" else option.split()
    now = flatten_keys(to_plain(compose_config(overrides)))
    assert {key: now.get(key, "<absent>") for key in before} == before
    pinned = _pinned_by_presets(overrides)
    for key in now.keys() - before.keys() - pinned:
        section, _, field = key.partition(".")
        if section in SCHEMAS and section != "dataset":  # dataset options set every key they had
            assert now[key] == to_plain(schema_node(section))[field], key


@pytest.mark.parametrize("group", ["rpt", "spt"])
def test_group_files_list_only_what_differs_from_the_dataclass(group):
    defaults = to_plain(schema_node(group))
    for path in sorted((CONFIGS / group).glob("*.yaml")):
        values = to_plain(OmegaConf.load(path)) or {}
        assert set(values) <= set(defaults), path.name
        same = [key for key, value in values.items() if value == defaults[key]]
        assert same == [], f"{path.name} restates the defaults of {same}"


def test_the_default_rpt_option_is_expected_pg_and_the_dataclass_is_the_reference():
    assert compose_config([]).rpt.algorithm == "expected_pg"
    assert option_values("rpt", "grpo") == to_plain(schema_node("rpt")) and to_plain(schema_node("rpt"))["algorithm"] == "grpo"
    assert option_values("rpt", "latent_pg")["slate_size"] == 100 and option_values("rpt", "latent_pg")["lr"] == 0.0005


def test_a_data_set_option_must_say_where_its_file_is():
    assert OmegaConf.is_missing(compose_config(["dataset=custom"]).dataset, "path")
    assert compose_config([]).dataset.path is None  # ml-100k: the embedded file
    assert option_values("dataset", "custom")["path"] == "???"
