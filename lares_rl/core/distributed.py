"""Multi-process training with torch.distributed under ``torchrun``: the process group, rank-0-only
work, and the few collectives the trainers need.

A command started by ``torchrun`` finds ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its environment
and joins a process group: gloo when the device is the CPU, nccl on CUDA (one GPU per local
rank). Without those variables everything here is a no-op for a single process, so the trainers
call the same functions either way. Every collective runs under the group's timeout
(``distributed.timeout_s``): a rank that dies or stalls ends the others with an error instead of a
hang (torchrun's agent usually stops them sooner, when it sees the dead worker).

Only rank 0 reads and writes files (training state, checkpoints, TensorBoard, metrics.json); what
it reads is broadcast, and a user error it hits is raised on every rank (:meth:`DistContext.on_main`),
so no rank waits for a rank 0 that has already given up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from lares_rl.core.config import flatten_keys, require
from lares_rl.core.errors import LaresError
from lares_rl.core.runtime import resolve_device

T = TypeVar("T")
# Commands that run on several processes under torchrun; the others refuse a world size above 1.
DISTRIBUTED_COMMANDS = ("spt", "rpt")


@dataclass
class DistributedConfig:
    """``distributed`` section: read only when the command runs under torchrun."""

    backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    timeout_s: float = 1800.0  # every collective; a dead or stuck rank ends the run with an error after this long

    def validate(self) -> None:
        require(self.backend in ("auto", "gloo", "nccl"), "distributed.backend", f"must be auto, gloo or nccl, got {self.backend!r}")
        require(self.timeout_s > 0, "distributed.timeout_s", f"must be > 0 seconds, got {self.timeout_s}")


def launched_by_torchrun() -> bool:
    """True when torchrun (or any launcher setting WORLD_SIZE) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@dataclass
class DistContext:
    """Where this process sits in the group. ``world_size == 1`` without torchrun: a plain run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False  # a process group exists (torchrun, even with one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_object(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (a picklable object; tensors inside travel on the CPU)."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank (e.g. the RNG states rank 0 saves)."""
        if not self.active:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 only, its result broadcast. A LaresError there is raised on every
        rank with the same message, so the other ranks stop too instead of waiting for rank 0."""
        if not self.active:
            return fn()
        outcome: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except LaresError as err:
                outcome = ("error", str(err))
        kind, value = self.broadcast_object(outcome)
        if kind == "error":
            raise LaresError(value)
        return value

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise mean over ranks of a small float vector (the logged loss terms)."""
        if not self.active:
            return values
        reduced = values.detach().clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced / self.world_size

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's equal-sized ``rows`` [n, ...] stacked in rank order, [W n, ...], on every rank."""
        if not self.active:
            return rows
        out = rows.new_empty((self.world_size * rows.shape[0], *rows.shape[1:]))
        dist.all_gather_single(out, rows.contiguous())
        return out

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over ranks (two all-reduces: which parameters have a
        gradient on any rank, then all gradients in one flat buffer). A parameter without a
        gradient on some rank counts as zero there and keeps None only where no rank has one, as
        in one process over the whole batch. With equal shares and a loss that is a mean over
        rows, the result is the gradient of the global batch."""
        if not self.active or self.world_size == 1:
            return
        params = [p for p in parameters if p.requires_grad]
        device = self.collective_device()
        present = torch.tensor([float(p.grad is not None) for p in params], device=device)
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        used = [p for p, flag in zip(params, present.tolist()) if flag]
        for p in used:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if not used:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in used]).to(device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in used:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on one (a Ctrl-C seen by some ranks only)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def collective_device(self) -> torch.device:
        """Tensors passed to collectives must live where the backend works: CUDA for nccl."""
        return torch.device("cuda", self.local_rank) if self.active and dist.get_backend() == "nccl" else torch.device("cpu")

    def check_same(self, what: str, values: Mapping[str, Any]) -> None:
        """Every rank must run with the same ``values`` (the flattened config): otherwise one clear
        error on all ranks naming the keys that differ, instead of silently diverging replicas."""
        if not self.active:
            return
        gathered = self.gather_objects(flatten_keys(values))
        reference = gathered[0]
        for rank, other in enumerate(gathered[1:], start=1):
            differing = sorted(key for key in set(reference) | set(other) if reference.get(key) != other.get(key))
            if differing:
                raise LaresError(
                    f"rank {rank} was started with another {what} than rank 0 (differs in {', '.join(differing[:8])}); start every rank with the same command line and overrides"
                )

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's equal slice of a global batch; the last ``len(rows) % world_size`` rows are
        dropped (at most world_size - 1 rows, only in an epoch's last, short batch)."""
        if self.world_size == 1:
            return rows
        size = len(rows) // self.world_size
        return rows[self.rank * size : (self.rank + 1) * size]


def init_distributed(device_name: str, cfg: DistributedConfig) -> tuple[DistContext, torch.device]:
    """Join the torchrun process group when launched by torchrun; returns the context and this
    rank's device (``cuda:LOCAL_RANK`` on GPUs). Without torchrun: a plain single-process context."""

    device = resolve_device(device_name)
    if not launched_by_torchrun():
        return DistContext(), device
    rank, world_size, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise LaresError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA device(s); start at most that many processes per node (torchrun --nproc-per-node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise LaresError("distributed.backend=nccl needs CUDA devices; use distributed.backend=auto (gloo on the CPU) or device=cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=cfg.timeout_s), device_id=device if backend == "nccl" else None)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, active=True), device


def shutdown(ctx: DistContext, wait: bool = True) -> None:
    """Leave the process group; with ``wait``, once every rank got here (rank 0 may still be
    evaluating on test). After an error there is no waiting: the other ranks may be gone."""
    if ctx.active and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def launch_command(ctx: DistContext) -> str:
    """How a resume hint starts the command again: torchrun with the same world size."""
    if not ctx.active:
        return "lares-rl"
    if int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size)) == ctx.world_size:
        return f"torchrun --nproc-per-node={ctx.world_size} -m lares_rl.cli"
    return f"torchrun <the same --nnodes/--nproc-per-node/--rdzv-* options, world size {ctx.world_size}> -m lares_rl.cli"


def check_world_size(saved: Mapping, ctx: DistContext, run_dir: Path, best: str = "spt_best.pt") -> None:
    """A training state resumes only the way it was saved, plain or under torchrun with the same
    number of processes: each rank's random streams and its share of every batch are recorded for
    that number. ``best`` names the phase's best checkpoint, which loads anywhere."""
    saved_world, saved_distributed = int(saved.get("world_size", 1)), bool(saved.get("distributed", False))
    if (saved_world, saved_distributed) != (ctx.world_size, ctx.active):
        saved_how = f"torchrun with {saved_world} process(es)" if saved_distributed else "a plain run (no torchrun)"
        this_how = f"torchrun with {ctx.world_size} process(es)" if ctx.active else "a plain run (no torchrun)"
        launch = f"under torchrun with a world size of {saved_world} (nnodes x nproc-per-node)" if saved_distributed else "without torchrun"
        raise LaresError(
            f"cannot resume {run_dir}: its training state was saved by {saved_how}, this is {this_how}; resume it {launch}. Its checkpoints/{best} loads anywhere (eval, rpt, recommend)"
        )
