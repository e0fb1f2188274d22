"""What the command line said: the keys it overrides (read back from Hydra inside a run), the
overrides a resume hint repeats, and the keys no config has, refused before Hydra composes."""

from __future__ import annotations

import dataclasses
import shlex
from importlib.resources import files
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from lares_rl.commands.schemas import SCHEMAS, compose_config
from lares_rl.core.config import config_keys, settable_key, unknown_key_hints

# Hydra config groups: a misspelled key is looked up in the config composed with the same choices.
CONFIG_GROUPS = ("dataset", "policy", "spt", "rpt", "reward", "preset")


def override_keys() -> list[str]:
    """The keys set on the command line (``key=``, ``+key=``, ``++key=``, ``~key``)."""
    if not HydraConfig.initialized():
        return []
    return [override.lstrip("+~").split("=", 1)[0] for override in HydraConfig.get().overrides.task]


def overridden(key: str) -> bool:
    return key in override_keys()


def overrides_under(section: str) -> list[str]:
    """The command-line keys that set ``section`` itself (a group choice) or a key inside it."""
    return [key for key in override_keys() if key == section or key.startswith(section + ".")]


def replayed_overrides(run_dir: Path | None = None) -> str:
    """The overrides to pass again when resuming, shell-quoted: this call's, or those saved in
    ``run_dir/.hydra/overrides.yaml``. ``resume=``, ``checkpoint=`` (the hints name them),
    ``dataset=checkpoint`` (``checkpoint=`` brings it back) and ``hydra.*`` (the run directory is
    the resumed one) are left out."""

    if run_dir is not None:
        path = run_dir / ".hydra" / "overrides.yaml"
        overrides = [str(o) for o in OmegaConf.load(path)] if path.is_file() else []
    else:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("resume=", "checkpoint=", "hydra.")) and o != "dataset=checkpoint"]
    return " ".join(shlex.quote(o) for o in kept)


def unknown_key_errors(argv: list[str]) -> list[str]:
    """One line for each ``key=value`` in ``argv`` whose key no config has, naming the nearest
    valid keys: the project's message instead of Hydra's, which suggests ``+key=`` (a key that
    nothing reads). Keys of a typed section or the top level are checked at once; any other
    (``policy.*``, ``reward.*``) against the config composed with the same group choices, which
    costs a composition. A bad group choice gives no line: Hydra lists the valid options."""
    known = _keys_known_without_composing()
    unsure = [arg for arg in argv if settable_key(arg) not in (None, *known, *CONFIG_GROUPS)]
    if not unsure:
        return []
    choices = [arg for arg in argv if arg.partition("=")[0] in CONFIG_GROUPS and "," not in arg]
    try:
        cfg = compose_config(choices)
    except Exception:  # noqa: BLE001 - a group choice is what is wrong, and Hydra will say so
        return []
    return unknown_key_hints(unsure, config_keys(cfg))


def _keys_known_without_composing() -> set[str]:
    """Every key of a typed section (its dataclass's fields), of the primary config's top level and
    of the shipped policy options (all alike but for their values)."""
    configs = files("lares_rl.configs")
    primary = OmegaConf.load(str(configs / "config.yaml"))
    known = {str(key) for key in primary if key not in ("defaults", "hydra")} | set(SCHEMAS)
    for section, schema in SCHEMAS.items():
        known |= {f"{section}.{field.name}" for field in dataclasses.fields(schema)}
    for option in (configs / "policy").iterdir():
        if option.name.endswith(".yaml"):
            known |= {f"policy.{key}" for key in OmegaConf.load(str(option))}
    return known
