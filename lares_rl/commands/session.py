"""What every command shares: its run directory, the resumed one, the data set, the ``eval``
section, training's numerics, the item context and the closing lines that say where everything went."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lares_rl.commands.overrides import replayed_overrides
from lares_rl.commands.schemas import SCHEMAS, schema_node
from lares_rl.core.config import section_from_mapping, to_plain
from lares_rl.core.errors import LaresError
from lares_rl.core.precision import Numerics, bf16_matrix_units, resolve_numerics
from lares_rl.core.resume import load_training_state
from lares_rl.core.tracking import TB_FOLDER, axes_line, tensorboard_dir
from lares_rl.data import DatasetConfig, load_dataset
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.eval.exposure import build_item_context
from lares_rl.policies.reasoner import OPTIONS_ADDED_LATER

# Sections that must match between an interrupted run and its resumption, per command, and the
# training state a resumable run has saved (``run`` saves spt_last.pt first, rpt_last.pt later).
RESUME_KEYS = {
    "spt": ("dataset", "policy", "spt", "seed", "eval"),
    "rpt": ("dataset", "rpt", "reward", "seed", "eval"),
    "run": ("dataset", "policy", "spt", "rpt", "reward", "seed", "eval", "baseline"),
}
RESUME_STATE = {"spt": "spt_last.pt", "rpt": "rpt_last.pt", "run": "spt_last.pt"}


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def resume_dir(cfg: DictConfig, command: str = "spt") -> Path | None:
    """``resume=<run dir>``: continue that run in place, refusing a changed configuration or a run
    of another command. ``command`` picks the state that must exist and the sections compared.
    (For ``rpt`` the SPT checkpoint itself is compared by weights when RPT resumes.)"""
    if not cfg.get("resume"):
        return None

    resumed = Path(str(cfg.resume))
    load_training_state(resumed / "checkpoints" / RESUME_STATE[command])
    saved_path = resumed / ".hydra" / "config.yaml"
    if saved_path.is_file():
        saved = OmegaConf.load(saved_path)
        saved_command = saved.get("command")
        if saved_command is not None and saved_command != command:
            raise LaresError(
                f"cannot resume {resumed} with `lares-rl {command}`: it is a `lares-rl {saved_command}` run; use lares-rl {saved_command} resume={resumed} {replayed_overrides(resumed)}"
            )
        changed = [key for key in RESUME_KEYS[command] if _comparable(saved, key) != _comparable(cfg, key)]
        if changed:
            raise LaresError(
                f"cannot resume {resumed}: the configuration differs in {', '.join(changed)}; pass the same overrides as the original run: {replayed_overrides(resumed)}"
            )
    return resumed


def _comparable(node, key: str):
    """Section ``key`` as resume compares it: a typed section over its schema's defaults (a run
    saved before its option listed a key ran with the default), and without spt.epochs, which may
    grow (extending a run that hit its cap is a resume)."""
    plain = to_plain(node.get(key))
    if key in SCHEMAS and isinstance(plain, dict):
        plain = {**to_plain(schema_node(key)), **plain}
    if key == "policy" and isinstance(plain, dict):  # options a run saved before them ran with their defaults
        plain = {**OPTIONS_ADDED_LATER, **plain}
    return {k: v for k, v in plain.items() if k != "epochs"} if key == "spt" and isinstance(plain, dict) else plain


def load_data(cfg: DictConfig):
    """The configured data set (for the commands that start from a checkpoint: the checkpoint's,
    unless the command line chose another; see lares_rl/commands/checkpoint.py)."""
    return load_dataset(DatasetConfig.from_mapping(to_plain(cfg.dataset)), cfg.cache_dir)


def training_numerics(cfg: DictConfig, device: torch.device) -> tuple[Numerics, str]:
    """The run's ``precision`` and ``compile`` on ``device``, and the line that says which and why."""
    return resolve_numerics(str(cfg.precision), cfg.compile, device, bf16_matrix_units(device))


def eval_config(cfg: DictConfig) -> EvalConfig:
    return section_from_mapping(EvalConfig, cfg.eval, "eval")


def item_context(data, dataset: dict, policy, quiet: bool = False):
    """The run's item context (training popularity, categories, ``policy``'s item table): what
    beyond-accuracy rewards are bound to and what the beyond-accuracy columns are measured with."""

    context = build_item_context(data, dataset, policy)
    if not quiet:
        print(f"[lares-rl] beyond-accuracy measures: ild@K from {context.features()[1]}, novelty@K and popularity@K from training counts")
    return context


def baseline_tb_dir(out: Path) -> Path:
    """Where run's baseline writes TensorBoard events: ``<out>/tb/baseline``, beside spt and rpt, so
    one ``--logdir`` shows every phase. A run folder started before that layout keeps its
    ``baseline/tb/spt``, so a resumed baseline purges and continues its own events."""
    before = out / "baseline" / "tb" / "spt"
    return before if before.is_dir() else tensorboard_dir(out, "baseline")


def print_outputs(checkpoints: str, out: Path) -> None:
    """Where a finished command left its checkpoint(s), metrics and TensorBoard logs: one
    ``--logdir`` for every phase (the run folder itself when its baseline's events sit in the
    layout before ``tb/baseline``), and what each TensorBoard run's x-axis counts."""
    logdir = out / TB_FOLDER
    runs = {path.name for path in logdir.iterdir() if path.is_dir()} if logdir.is_dir() else set()
    if baseline_tb_dir(out).parent != logdir:  # the baseline's events in the layout before tb/baseline
        logdir, runs = out, runs | {"baseline"}
    axes = axes_line(runs)
    print(
        f"[lares-rl] {checkpoints}\n[lares-rl] metrics {out / 'metrics.json'}\n"
        f"[lares-rl] TensorBoard: tensorboard --logdir {logdir}" + (f"  ({axes})" if axes else "")
    )
