"""How every benchmark script reads its data set: a ``configs/dataset/`` file plus ``key=value``
overrides, with the Beauty file found where it lives (outside the project)."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from lares_rl.commands.schemas import option_values
from lares_rl.data import DatasetConfig, SequenceData, load_dataset

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BEAUTY_PATH = ROOT.parent / "shared" / "data" / "amazon-beauty-5core.txt"


def key_values(pairs: list[str]) -> dict:
    """``key=value`` strings -> a dict with YAML-typed values (``16`` an int, ``fmlp`` a string)."""
    return OmegaConf.to_container(OmegaConf.from_dotlist(pairs)) if pairs else {}


def rpt_reward(rpt_values: dict, reward: str, overrides: dict, num_items: int, context=None):
    """``configs/reward/<reward>.yaml`` plus ``overrides``, instantiated, bound to the item
    ``context`` (lares_rl/item_context.py) when it asks for one, and checked. The file is
    resolved inside a root holding the ``rpt`` section, because ``reward.k`` follows
    ``rpt.slate_size`` unless set."""
    from lares_rl.rewards.build import instantiate_reward

    root = OmegaConf.create({"rpt": rpt_values, "reward": OmegaConf.load(ROOT / "configs" / "reward" / f"{reward}.yaml")})
    root.reward.merge_with(overrides)
    return instantiate_reward(root.reward, num_items, context)


def config_file(group: str, name: str, overrides: dict | None = None) -> dict:
    """``configs/<group>/<name>.yaml`` with every value it runs with (over its dataclass's defaults
    for a typed group: configs/rpt/*.yaml list only what they change), updated by ``overrides``:
    the scripts build their configs from the same files as the CLI, without composing a whole Hydra run."""
    return option_values(group, name) | (overrides or {})


def dataset_names() -> list[str]:
    return sorted(path.stem for path in (ROOT / "configs" / "dataset").glob("*.yaml"))


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--dataset-set`` and ``--beauty-path``, the three flags every script that
    reads a data set takes, spelled and documented once (read them with ``load_benchmark_dataset``)."""
    parser.add_argument("--dataset", choices=dataset_names(), default="ml-100k", help="a file name in configs/dataset/")
    parser.add_argument(
        "--dataset-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="dataset config overrides, e.g. max_len=20 (the checkpoints' own); custom: path=log.csv user_col=... ",
    )
    parser.add_argument("--beauty-path", default=str(DEFAULT_BEAUTY_PATH), help="the Amazon Beauty 5-core file")


def load_benchmark_dataset(name: str, overrides: dict, beauty_path: str | Path = DEFAULT_BEAUTY_PATH) -> tuple[SequenceData, dict]:
    """``configs/dataset/<name>.yaml`` updated by ``overrides`` (``custom`` needs at least
    ``path``); returns the processed data and the config used, which the benchmark records so
    that a checkpoint can be matched to its data."""
    beauty = {"path": str(beauty_path)} if name == "amazon-beauty" else {}
    dataset_cfg = config_file("dataset", name, beauty | overrides)
    return load_dataset(DatasetConfig.from_mapping(dataset_cfg), ROOT / ".lares_cache"), dataset_cfg


def fresh_rpt_run(
    *,
    policy,
    payload: dict,
    data: SequenceData,
    max_len: int,
    cfg,
    reward_fn,
    eval_cfg,
    run_dir: Path,
    device,
    seed: int,
    dataset_cfg: dict,
    runs_dir: str | Path,
    item_context=None,
    resume: bool = False,
) -> dict:
    """RPT from ``policy`` (an SPT checkpoint's weights, ``payload``) into an emptied ``run_dir``,
    seeded as the CLI seeds it, with the test split before and after (``train_rpt_with_test``);
    the filter is cached under ``runs_dir/rpt_filter``. ``resume``: continue the training state
    saved in ``run_dir`` instead (``train_rpt`` refuses one from other settings or weights), so an
    interrupted hour-long seed is not lost.
    ``result["rpt"]["seconds"]`` is the wall time of this call, the two test passes included, and
    ``cpu_seconds`` its process CPU time, what it cost in core-seconds whatever else shared the core
    (after a resume, both cover only the resumed part: ``result["rpt"]["resumed"]`` says so)."""
    import shutil
    import time

    from lares_rl.core.runtime import seed_everything
    from lares_rl.rpt.loop import train_rpt_with_test

    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    seed_everything(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = train_rpt_with_test(
        policy=policy,
        policy_config=payload["policy_config"],
        data=data,
        max_len=max_len,
        cfg=cfg,
        reward_fn=reward_fn,
        eval_cfg=eval_cfg,
        run_dir=run_dir,
        device=device,
        seed=seed,
        config={"dataset": dataset_cfg, "rpt": vars(cfg)},
        progress=False,
        filter_cache_dir=Path(runs_dir) / "rpt_filter",
        item_context=item_context,
        resume=resume,
    )
    result["rpt"]["seconds"] = time.perf_counter() - start
    result["rpt"]["cpu_seconds"] = time.process_time() - cpu_start
    result["rpt"]["resumed"] = resume
    return result
