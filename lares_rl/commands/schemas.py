"""The typed schema of every config section a command turns into a dataclass, registered with
Hydra's ConfigStore as ``schema/<section>``.

configs/config.yaml puts ``schema/<section>@<section>`` first in its defaults list, so each section
starts from its dataclass (the one place its defaults live) and a group option such as
configs/rpt/latent_pg.yaml lists only what it changes; Hydra refuses a misspelled key or a
mistyped value while composing. The group files stay plain YAML, readable on their own as "the
schema plus these changes" (:func:`option_values` gives the values one of them runs with).
"""

from __future__ import annotations

from importlib.resources import files

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from lares_rl.core.distributed import DistributedConfig
from lares_rl.data import DatasetConfig
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.rpt.config import RPTConfig
from lares_rl.spt.config import SPTConfig

SCHEMAS: dict[str, type] = {
    "dataset": DatasetConfig,
    "spt": SPTConfig,
    "rpt": RPTConfig,
    "eval": EvalConfig,
    "distributed": DistributedConfig,
}


# Keys every option of a group must set, though the dataclass has a default for code that builds it
# directly: a dataset option says where its interactions are (null: the embedded ML-100K), and the
# `???` of configs/dataset/custom.yaml stays "required" instead of falling back to that null.
REQUIRED = {"dataset": ("path",)}


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore; needed before configs/config.yaml is composed
    (registering again replaces the same entries)."""
    store = ConfigStore.instance()
    for section in SCHEMAS:
        store.store(group="schema", name=section, node=schema_node(section))


def schema_node(section: str) -> DictConfig:
    """``section``'s typed node: its dataclass's defaults (derived values, such as spt.temperature,
    stay null until the dataclass is built), with the REQUIRED keys marked ``???``."""
    node = OmegaConf.structured(SCHEMAS[section])
    for key in REQUIRED.get(section, ()):
        node[key] = MISSING
    return node


def option_values(group: str, name: str) -> dict:
    """configs/<group>/<name>.yaml as a plain dict of every value that option runs with: over its
    schema's defaults for a typed group, the file alone for the others (policy, reward)."""
    values = OmegaConf.load(str(files("lares_rl.configs") / group / f"{name}.yaml"))
    if group in SCHEMAS:
        values = OmegaConf.merge(schema_node(group), values)
    return OmegaConf.to_container(values)


def compose_config(overrides: list[str]) -> DictConfig:
    """configs/config.yaml composed with ``overrides`` outside a run (key checks, tests)."""
    register_schemas()
    with initialize_config_module("lares_rl.configs", version_base="1.3"):
        return compose("config", overrides=overrides)
