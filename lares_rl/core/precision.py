"""How a training run computes: the precision of its products (``precision``) and whether its
reasoner blocks are compiled (``compile``), decided once per run and said in its first lines.

``precision=bf16`` runs the SPT step's transformer layers and catalog products under bf16
autocast. What stays fp32: the weights (master copies) and Adam's state, the catalog
log-sum-exp and the accumulation of its gradient (lares_rl/catalog/fused_ce.py; the unfused path
takes the log-softmax of fp32 logits), and the alignment InfoNCE (small products whose logits are
divided by a temperature of 0.07). Evaluation always scores in fp32, so that its ranks and metrics
are fp32's: its encoder dominates its time and must stay fp32 for that, and a bf16 pre-ranking
re-scored in fp32 can only equal fp32's ranks if the re-scored dot products round exactly as the
full product's BLAS kernel did, which the kernels do not promise (docs/speed_precision.md).

``precision=auto`` (the default) is bf16 only where the device has bf16 matrix units (CPU:
``amx_bf16`` or ``avx512_bf16``; CUDA: native bf16) and the accuracy check allowed it
(:data:`BF16_KEEPS_ACCURACY`); elsewhere emulated bf16 products are several times slower than
fp32. ``LARES_RL_PRECISION`` in the environment sets the key (configs/config.yaml), which the
test suite uses to run fp32 on every machine. ``compile=true`` compiles the reasoner blocks of the SPT step with TorchInductor; off by
default because it did not win on the CPU it was measured on (docs/speed_precision.md).

The choice reaches the step module (lares_rl/spt/distributed.py) the way ``torch.autocast``
reaches the ops below it: as context. A command wraps training in :func:`use_numerics`; code
that never enters it (tests, benchmarks calling ``train_spt``) runs fp32, uncompiled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

from lares_rl.core.errors import LaresError

PRECISIONS = ("auto", "bf16", "fp32")
CPU_BF16_UNITS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 products
# Whether precision=auto may pick bf16 where the units exist: validation NDCG@10 of LARES after 3 SPT
# epochs on ML-100K, seeds 0-2, was 0.0456/0.0430/0.0385 in bf16 against 0.0455/0.0427/0.0389 in fp32
# (a seed spread of 0.0066; docs/speed_precision.md).
BF16_KEEPS_ACCURACY = True


@dataclass(frozen=True)
class Numerics:
    """A training run's precision (``fp32`` | ``bf16``) and whether its reasoner blocks are compiled."""

    precision: str = "fp32"
    compile: bool = False

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


FP32_EAGER = Numerics()  # outside any use_numerics block
_CURRENT: ContextVar[Numerics] = ContextVar("lares_rl_numerics", default=FP32_EAGER)


def current_numerics() -> Numerics:
    """The numerics of the enclosing :func:`use_numerics` (fp32, uncompiled outside any)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use_numerics(numerics: Numerics) -> Iterator[Numerics]:
    """Training inside this block runs with ``numerics`` (read when the SPT step module is built)."""
    token = _CURRENT.set(numerics)
    try:
        yield numerics
    finally:
        _CURRENT.reset(token)


def bf16_autocast(numerics: Numerics, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for bf16 numerics; nothing at all for fp32 (the same ops as ever)."""
    if not numerics.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def bf16_matrix_units(device: torch.device, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The bf16 matrix hardware of ``device`` in words, or None where bf16 products are emulated."""
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name(device)} has native bf16"
        return None
    if device.type != "cpu" or not cpuinfo.is_file():
        return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), [])
    found = [flag for flag in CPU_BF16_UNITS if flag in flags]
    return f"this CPU has {' and '.join(found)}" if found else None


def resolve_numerics(precision: str, compile: bool, device: torch.device, units: str | None) -> tuple[Numerics, str]:
    """The run's numerics from the ``precision`` and ``compile`` config values, and one line saying
    which and why. ``units``: :func:`bf16_matrix_units` of ``device``."""
    if precision not in PRECISIONS:
        raise LaresError(
            f"precision={precision!r} is unknown; use {', '.join(PRECISIONS)} (auto: bf16 where the device has bf16 matrix units)"
        )
    if not isinstance(compile, bool):
        raise LaresError(f"compile={compile!r} must be true or false")
    if precision == "auto" and units is None:
        precision, why = "fp32", f"precision=auto: {device.type} has no bf16 matrix units, where bf16 products run slower than fp32"
    elif precision == "auto" and not BF16_KEEPS_ACCURACY:
        precision, why = "fp32", f"precision=auto: {units}, but bf16 lost accuracy (docs/speed_precision.md)"
    elif precision == "auto":
        precision, why = "bf16", f"precision=auto: {units}"
    elif precision == "bf16" and units is None:
        why = f"precision=bf16 as set, though {device.type} has no bf16 matrix units: expect a slower run than fp32"
    else:
        why = f"precision={precision} as set"
    numerics = Numerics(precision, compile)
    layers = "bf16 layers and catalog products, fp32 weights, log-sum-exp and evaluation" if numerics.bf16 else "fp32 throughout"
    return numerics, f"{precision} ({layers}; {why}); compile={'on' if compile else 'off'}"
