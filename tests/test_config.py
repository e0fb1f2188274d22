"""Config sections from Hydra nodes: every mistyped or out-of-range value is one LaresError naming
the key, including fields whose default is null or a list (they used to pass unchecked)."""

import pytest

from lares_rl.core.config import section_from_mapping
from lares_rl.core.errors import LaresError
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.rpt.config import RPTConfig
from lares_rl.spt.config import SPTConfig


@pytest.mark.parametrize(
    "cls, key, values, message",
    [
        (EvalConfig, "eval", {"k": "abc"}, "eval.k must be a number"),
        (EvalConfig, "eval", {"k": 2.5}, "eval.k must be an integer"),
        (EvalConfig, "eval", {"ks": 5}, "eval.ks must be a list"),
        (EvalConfig, "eval", {"ks": ["a", 10]}, r"eval.ks\[0\] must be a number"),
        (EvalConfig, "eval", {"ks": [5]}, "includes 10"),
        (EvalConfig, "eval", {"sweep_ks": [0, 1]}, "eval.sweep_ks"),
        (EvalConfig, "eval", {"sweep_ks": []}, "eval.sweep_ks"),
        (EvalConfig, "eval", {"split": 1}, "eval.split must be a string"),
        (EvalConfig, "eval", {"exclude_history": "yes"}, "eval.exclude_history must be true or false"),
        (RPTConfig, "rpt", {"batches_per_epoch": "abc"}, "rpt.batches_per_epoch must be a number"),
        (RPTConfig, "rpt", {"batches_per_epoch": 0}, "rpt.batches_per_epoch"),
        (SPTConfig, "spt", {"dense_stride": [1]}, "spt.dense_stride must be a number"),
        (SPTConfig, "spt", {"lrr": 1}, "unknown config key"),
    ],
)
def test_bad_values_name_their_key(cls, key, values, message):
    with pytest.raises(LaresError, match=message):
        section_from_mapping(cls, values, key)


def test_nulls_and_integral_floats_are_accepted():
    cfg = section_from_mapping(EvalConfig, {"k": None, "ks": [5, 10.0], "batch_size": 2e3}, "eval")
    assert cfg.k is None and cfg.ks == [5, 10] and cfg.batch_size == 2000 and isinstance(cfg.batch_size, int)
    assert section_from_mapping(RPTConfig, {"batches_per_epoch": 3.0}, "rpt").batches_per_epoch == 3


def test_spt_temperature_defaults_to_the_design_value_of_the_similarity():
    assert section_from_mapping(SPTConfig, {}, "spt").temperature == 1.0
    assert section_from_mapping(SPTConfig, {"similarity": "cosine"}, "spt").temperature == 0.07
    assert section_from_mapping(SPTConfig, {"similarity": "cosine", "temperature": 0.2}, "spt").temperature == 0.2


def test_a_misspelled_key_gets_the_nearest_valid_names():
    from lares_rl.core.config import unknown_key_hints

    valid = ["seed", "spt", "spt.lr", "spt.alpha", "rpt", "rpt.lr", "policy", "policy.d_model", "eval", "eval.k"]
    hints = unknown_key_hints(
        [
            "spt.lrr=1",
            "policy.dmodel=3",
            "lr=5e-4",
            "zzz=1",
            "spt.lr=1",
            "+spt.new=1",
            "hydra.run.dir=x",
            "-m",
            "hydra/job_logging=disabled",
            "--config-dir=x",
        ],
        valid,
    )
    assert hints[0].startswith("spt.lrr is not a config key; did you mean spt.lr? ")
    assert "did you mean policy.d_model?" in hints[1]
    assert "did you mean rpt.lr or spt.lr?" in hints[2]
    assert "the keys at the top level are: eval, policy, rpt, seed, spt" in hints[3]
    assert len(hints) == 4  # valid keys, deliberate +appends, hydra.*, group paths and flags pass
    with pytest.raises(LaresError, match=r"spt.lrr \(did you mean spt.lr\?\)"):
        section_from_mapping(SPTConfig, {"lrr": 1}, "spt")
