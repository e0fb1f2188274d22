"""Checkpoints: the model with everything needed to use it again (policy config, item-id mapping,
data fingerprint), written atomically and validated on load.

torch's zip container checks CRC-32 of every record, so a truncated or corrupted file fails to
load; we turn that, a wrong format, and a data-set mismatch into one clear LaresError each.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_object
from torch import nn

from lares_rl import __version__
from lares_rl.core.atomic import atomic_torch_save
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import TRAINING_STATE_FORMAT

FORMAT = "lares_rl.checkpoint/1"
DEFAULT_POLICY = "lares_rl.policies.reasoner.LaresReasoner"


def build_policy(policy_config: Mapping[str, Any], num_items: int, max_len: int) -> nn.Module:
    """Instantiate the policy named by ``policy._target_`` with the run-time sizes from the data."""
    options = dict(policy_config)
    options.pop("name", None)
    target = options.pop("_target_", DEFAULT_POLICY)
    try:
        policy_class = get_object(target)
    except Exception as err:
        raise LaresError(f"policy._target_={target!r} cannot be imported: {err}") from err
    try:
        return policy_class(num_items=num_items, max_len=max_len, **options)
    except TypeError as err:
        raise LaresError(f"policy config does not match {target}: {err}; check the keys under `policy`") from err
    except ValueError as err:  # building blocks (layers) do not know config keys; say where to look
        message = str(err)
        raise LaresError(message if message.startswith("policy.") else f"policy: {message}; check the keys under `policy`") from err


def save_checkpoint(
    path: str | Path,
    *,
    policy: nn.Module,
    policy_config: Mapping,
    data,
    max_len: int,
    dataset_name: str,
    phase: str,
    epoch: int,
    metrics: Mapping,
    config: Mapping,
    extra: Mapping | None = None,
) -> None:
    """Write the model and its context to ``path`` atomically."""
    payload = {
        "format": FORMAT,
        "lares_rl_version": __version__,
        "phase": phase,
        "epoch": epoch,
        "metrics": dict(metrics),
        "policy_config": dict(policy_config),
        "policy_state": policy.state_dict(),
        "dataset": {"name": dataset_name, "fingerprint": data.fingerprint, "num_items": data.num_items, "max_len": max_len},
        "item_ids": [str(x) for x in data.item_ids],
        "item_titles": None if data.item_titles is None else [str(x) for x in data.item_titles],
        "item_counts": training_item_counts(data).tolist(),  # popularity, for cold-start recommendations
        "config": dict(config),
        **(dict(extra) if extra else {}),
    }
    atomic_torch_save(path, payload)


def training_item_counts(data) -> np.ndarray:
    """Interactions per item index in the training part only (the last two items of each user are
    validation and test, so popularity never leaks them); int64 [num_items + 1], index 0 is 0."""
    in_training = np.ones(len(data.items), dtype=bool)
    in_training[data.offsets[1:] - 1] = False
    in_training[data.offsets[1:] - 2] = False
    return np.bincount(data.items[in_training], minlength=data.num_items + 1).astype(np.int64)


def load_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint file (any problem becomes one LaresError naming the file)."""
    path = Path(path)
    if path.is_dir():
        raise LaresError(f"checkpoint {path} is a directory; pass the .pt file inside it, e.g. {path / 'checkpoints' / 'spt_best.pt'}")
    if not path.is_file():
        raise LaresError(f"checkpoint {path} does not exist; pass checkpoint=<path to a .pt file written by lares-rl>")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise LaresError(
            f"checkpoint {path} is corrupt or not a lares_rl checkpoint ({type(err).__name__}); retrain or restore it"
        ) from err
    if isinstance(payload, dict) and payload.get("format") == TRAINING_STATE_FORMAT:
        raise LaresError(
            f"{path} is a training state (for resume=<run dir>), not a model checkpoint; pass {path.with_name(path.name.replace('_last', '_best'))} instead"
        )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LaresError(f"checkpoint {path} is not a {FORMAT} file; it was not written by this version of lares_rl")
    return payload


def policy_from_checkpoint(payload: Mapping, device: torch.device | str = "cpu") -> nn.Module:
    dataset = payload["dataset"]
    policy = build_policy(payload["policy_config"], dataset["num_items"], dataset["max_len"])
    try:
        policy.load_state_dict(payload["policy_state"])
    except RuntimeError as err:
        raise LaresError(f"checkpoint weights do not fit its policy config: {err}") from err
    return policy.to(device)


def check_same_data(payload: Mapping, data, path: str | Path) -> None:
    """A checkpoint is only valid on the exact processed data it was trained on."""
    dataset = payload["dataset"]
    if dataset["fingerprint"] != data.fingerprint or dataset["num_items"] != data.num_items:
        raise LaresError(
            f"checkpoint {path} was trained on data set {dataset['name']!r} (fingerprint {dataset['fingerprint'][:12]}, {dataset['num_items']} items) "
            f"but the configured data is {data.fingerprint[:12]} with {data.num_items} items; use the same dataset=... settings as the training run"
        )
