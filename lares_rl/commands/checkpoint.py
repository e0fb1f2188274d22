"""The commands that start from ``checkpoint=`` (``rpt``, ``eval``, ``sweep-k``): the policy comes
from the checkpoint, and so does the data set unless the command line chooses one.

Before Hydra composes, :func:`checkpoint_dataset_choice` registers the checkpoint's recorded
``dataset`` section as the option ``dataset=checkpoint`` and picks it, so the composed config is
the one the run uses: ``--cfg job`` prints it, .hydra/config.yaml records it and the run
directory carries its name. A ``dataset.*`` key on the command line still applies on top (a moved
file: ``dataset.path=...``); ``dataset=<option>`` uses that option instead. Either way the data's
fingerprint must be the checkpoint's."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lares_rl.commands.overrides import overrides_under
from lares_rl.commands.session import load_data
from lares_rl.core.checkpoint import check_same_data, load_checkpoint, policy_from_checkpoint
from lares_rl.core.config import to_plain
from lares_rl.core.errors import LaresError
from lares_rl.core.runtime import resolve_device
from lares_rl.eval.adaptive_depth import check_halting_applies
from lares_rl.eval.evaluation import check_depth_applies

CHECKPOINT_COMMANDS = ("rpt", "eval", "sweep-k")
CHECKPOINT_OPTION = "checkpoint"  # the dataset option holding the checkpoint's recorded section


def checkpoint_dataset_choice(command: str, argv: list[str]) -> list[str]:
    """``["dataset=checkpoint"]`` (the option registered first) when ``command`` starts from
    ``checkpoint=<path>`` in ``argv``, chooses no other ``dataset=`` option and the checkpoint
    recorded its data set; else nothing (``dataset=checkpoint`` already in ``argv``, as a resume
    replays it, is registered again). A sweep over checkpoints (``checkpoint=a.pt,b.pt``) needs
    them trained on one data set."""
    if command not in CHECKPOINT_COMMANDS:
        return []
    given = [_value(arg) for arg in argv if arg.lstrip("+").partition("=")[0] == "checkpoint"]
    choices = [_value(arg) for arg in argv if arg.partition("=")[0] == "dataset"]
    if not given or given[-1] in ("null", "") or "(" in given[-1] or any(choice != CHECKPOINT_OPTION for choice in choices):
        return []  # no checkpoint (the command says so), a sweep function Hydra expands, or another data set chosen
    sections = {path: (load_checkpoint(path).get("config") or {}).get("dataset") for path in given[-1].split(",")}
    recorded = [section for section in sections.values() if isinstance(section, dict)]
    if not recorded:
        return []  # written before checkpoints recorded their config: the configured data set
    if any(section != recorded[0] for section in sections.values()):
        raise LaresError(
            f"checkpoint={given[-1]}: these checkpoints were trained on different data sets; sweep each data set in its own command, or choose one with dataset=<option>"
        )
    ConfigStore.instance().store(group="dataset", name=CHECKPOINT_OPTION, node=recorded[0])
    return [] if choices else [f"dataset={CHECKPOINT_OPTION}"]


def _value(override: str) -> str:
    return override.partition("=")[2].strip("'\"")


def checkpoint_inputs(cfg: DictConfig, command: str, device=None):
    """(payload, policy, data, device, config) for the commands that start from ``checkpoint=``;
    ``config`` is the plain run config with the policy actually used (the checkpoint's), which is
    what RPT records in its checkpoint and TensorBoard hparams. ``device``: this rank's under
    torchrun (default: ``cfg.device`` resolved)."""

    if cfg.checkpoint is None:
        raise LaresError(f"checkpoint is not set; run `lares-rl {command} checkpoint=<run dir>/checkpoints/spt_best.pt`")
    device = device or resolve_device(cfg.device)
    if HydraConfig.initialized() and HydraConfig.get().runtime.choices.get("dataset") == CHECKPOINT_OPTION:
        print(
            f"[lares-rl] data set from the checkpoint's training config: {cfg.dataset.name} ({cfg.dataset.path or 'embedded'}); choose dataset=<option> to use another"
        )
    data = load_data(cfg)
    payload, policy = load_spt_checkpoint(cfg.checkpoint, data, device)
    _check_policy_overrides(cfg, payload, cfg.checkpoint)
    check_depth_applies(policy, cfg.eval.get("k"), "eval.k")
    check_halting_applies(policy, cfg.eval.get("halt_tol"), "eval.halt_tol")
    config = {**to_plain(cfg), "policy": dict(payload["policy_config"])}
    return payload, policy, data, device, config


def load_spt_checkpoint(path, data, device):
    """(payload, policy) of an SPT checkpoint trained on exactly ``data``."""

    payload = load_checkpoint(path)
    check_same_data(payload, data, path)
    return payload, policy_from_checkpoint(payload, device)


def _check_policy_overrides(cfg: DictConfig, payload, path) -> None:
    """A checkpoint's policy is rebuilt from its own config, so a ``policy.*`` override would be
    silently ignored; one that restates the checkpoint's value (the training run's overrides,
    passed again) is fine, one that differs is an error saying what to do instead."""
    saved = OmegaConf.create(payload["policy_config"])
    for key in overrides_under("policy"):
        field = key.partition(".")[2] or "name"
        wanted, trained = to_plain(OmegaConf.select(cfg.policy, field)), to_plain(OmegaConf.select(saved, field))
        if wanted != trained:
            raise LaresError(
                f"{key}={wanted!r} cannot change checkpoint {path}, whose policy has {field}={trained!r}: a checkpoint's policy comes from the checkpoint. "
                "Drop the override; set the reasoning depth with eval.k=N, or train a new model with it"
            )
