"""Distributed SPT under torchrun (gloo on the CPU): the 2-process loss curve equals the 1-process
one with the same global batch, only rank 0 writes, and the bad inputs end in one clear error
(never a hang). Process-spawning tests are few: on a 2-core machine each start costs seconds."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lares_rl.core.distributed import DistContext, DistributedConfig
from lares_rl.core.errors import LaresError
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.train import check_world_size, train_spt
from tests.cli_process import wait_for_epoch
from tests.synthetic import write_sequential_csv

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# dropout 0 and T0 = 0: the model is deterministic given k, so the only randomness is the data
# order, the positives and the depth draws, which every world size shares by construction
DETERMINISTIC = ["policy.dropout=0", "policy.t0_init=zero"]


def _torchrun(tmp_path: Path, nproc: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", "-m", "lares_rl.cli", "spt", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def _data_args(tmp_path: Path, users: int = 60) -> list[str]:
    path = write_sequential_csv(tmp_path / "log.csv", users=users)
    return [
        "dataset=custom",
        f"dataset.path={path}",
        "dataset.user_col=uid",
        "dataset.item_col=sku",
        "dataset.time_col=ts",
        "dataset.max_len=8",
        "progress=false",
        "device=cpu",
        "policy.d_model=16",
        "policy.inner_size=32",
        "spt.batch_size=64",
        *DETERMINISTIC,
    ]


def _losses(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir / "tb" / "spt"))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"] if "/losses/" in tag}


@pytest.mark.slow
def test_two_processes_follow_the_one_process_loss_curve(tmp_path):
    """Same global batch (64 rows, 32 per rank), gathered negatives: every logged loss term of
    every step agrees within float tolerance, and so do the validation metrics."""
    args = [*_data_args(tmp_path), "spt.epochs=1"]
    one = _torchrun(tmp_path, 1, *args, "hydra.run.dir=one")
    two = _torchrun(tmp_path, 2, *args, "hydra.run.dir=two")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    curves_one, curves_two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert set(curves_one) == {"spt/losses/rec", "spt/losses/tla", "spt/losses/sla", "spt/losses/total"} == set(curves_two)
    for tag, values in curves_one.items():
        assert len(values) == len(curves_two[tag]) > 5
        assert torch.allclose(torch.tensor(values), torch.tensor(curves_two[tag]), rtol=1e-5, atol=1e-5), tag
    valid = [line for line in two.stdout.splitlines() if line.startswith("[spt] epoch")]
    assert [line.split("s  ", 1)[1] for line in valid] == [
        line.split("s  ", 1)[1] for line in one.stdout.splitlines() if line.startswith("[spt] epoch")
    ]
    assert "on 2 processes" in two.stdout and two.stdout.count("[spt] epoch") == 1  # rank 0 prints, rank 1 does not
    # rank 1 wrote nothing: no run directory of its own, and the one run directory is rank 0's
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["one", "two"]
    assert (tmp_path / "two" / "metrics.json").is_file() and (tmp_path / "two" / "checkpoints" / "spt_best.pt").is_file()


@pytest.mark.slow
def test_sigkill_of_one_rank_then_resume_finishes_like_an_uninterrupted_run(tmp_path):
    """Rank 1 is killed after epoch 1 was saved: the run ends (torchrun stops rank 0; the collective
    timeout is the backstop), and `resume=` with the same world size ends where an uninterrupted run ends."""
    # 5 short epochs (30 users, batches of 32): after the kill, 4 epochs remain for the poll (0.05 s) to beat,
    # a margin a fast machine keeps (each epoch is one step, so the extra epochs cost little beside the starts)
    args = [*_data_args(tmp_path, users=30), "spt.epochs=5", "spt.batch_size=32"]
    assert _torchrun(tmp_path, 2, *args, "hydra.run.dir=full").returncode == 0
    kill_rank_one_after_epoch_one(
        [*TORCHRUN, "--standalone", "--nproc-per-node=2", "-m", "lares_rl.cli", "spt", *args, "hydra.run.dir=killed"],
        tmp_path,
        {**os.environ, "OMP_NUM_THREADS": "1"},
        tmp_path / "killed" / "checkpoints" / "spt_last.pt",
        deadline_s=180,
        poll_s=0.05,
    )
    resumed = _torchrun(tmp_path, 2, *args, f"resume={tmp_path / 'killed'}", "hydra.run.dir=resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full, killed = _losses(tmp_path / "full"), _losses(tmp_path / "killed")
    assert torch.allclose(torch.tensor(full["spt/losses/total"]), torch.tensor(killed["spt/losses/total"]), atol=1e-6)


def kill_rank_one_after_epoch_one(argv: list[str], cwd: Path, env: dict, state_path: Path, *, deadline_s: float, poll_s: float) -> None:
    """Start ``argv`` (a 2-process torchrun), SIGKILL rank 1 once ``state_path`` holds epoch 1, and
    check that the whole run then ends in failure within 120 s instead of hanging."""
    launcher = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_epoch(state_path, 1, launcher, deadline_s=deadline_s, poll_s=poll_s)
    os.kill(_rank_pid(launcher.pid, 1), signal.SIGKILL)
    started = time.time()
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and time.time() - started < 120


def _rank_pid(launcher_pid: int, rank: int) -> int:
    """The worker of ``rank`` among the processes below torchrun (found by its environment)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
            try:
                is_rank = f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if is_rank and launcher_pid in _ancestors(pid):
                    return pid
            except OSError:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank} under torchrun {launcher_pid}")


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        chain.append(pid)
    return chain


# ----------------------------------------------------------------------------- bad input


def test_a_world_size_that_does_not_divide_the_batch_is_an_error_naming_the_key(tmp_path):
    ctx = DistContext(rank=0, world_size=3, active=True)  # the check comes before any collective
    with pytest.raises(
        LaresError, match=r"spt.batch_size=64 is the global batch and must be divisible by the number of processes \(3\).*spt.batch_size=63"
    ):
        train_spt(
            policy=torch.nn.Linear(1, 1),
            policy_config={},
            data=None,
            max_len=6,
            cfg=SPTConfig(batch_size=64),
            eval_cfg=EvalConfig(),
            run_dir=tmp_path,
            device=torch.device("cpu"),
            seed=0,
            config={},
            dist_ctx=ctx,
        )


@pytest.mark.parametrize(
    "saved, ctx, expected",
    [
        (
            {"world_size": 2, "distributed": True},
            DistContext(world_size=4, active=True),
            "saved by torchrun with 2 process\\(es\\), this is torchrun with 4",
        ),
        ({}, DistContext(world_size=2, active=True), "saved by a plain run \\(no torchrun\\).*resume it without torchrun"),
        ({"world_size": 2, "distributed": True}, DistContext(), "this is a plain run.*under torchrun with a world size of 2"),
    ],
)
def test_a_training_state_from_another_world_size_is_refused(tmp_path, saved, ctx, expected):
    with pytest.raises(LaresError, match=expected):
        check_world_size(saved, ctx, tmp_path)
    check_world_size({"world_size": ctx.world_size, "distributed": ctx.active}, ctx, tmp_path)  # the same layout resumes


def _rank_main(rank: int, init_file: str, scenario: str, results) -> None:
    """One rank of a 2-process gloo group started without torchrun (cheaper), for the collectives."""
    import datetime

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=10))
    ctx = DistContext(rank=rank, world_size=2, active=True)
    try:
        if scenario == "configs":
            ctx.check_same("configuration", {"spt": {"lr": 0.001 if rank == 0 else 0.01, "epochs": 3}, "seed": 0})
        elif scenario == "main_error":
            ctx.on_main(lambda: (_ for _ in ()).throw(LaresError("cannot resume: state is corrupt")))
        elif scenario == "dead_rank":
            # Both ranks finish connecting first: a rank that exits while rank 0 is still inside
            # init_process_group makes init fail there ("connection closed by peer"), which is not
            # the case under test. The pause lets rank 0 leave the barrier before the socket closes.
            dist.barrier()
            if rank == 1:
                time.sleep(0.5)
                os._exit(0)  # dies without a word, as after a SIGKILL
            started = time.time()
            try:
                ctx.mean(torch.ones(3))
            finally:
                results.put((rank, "seconds", time.time() - started))
        results.put((rank, "ok", ""))
    except Exception as err:  # noqa: BLE001 - the test inspects what each rank raised
        results.put((rank, type(err).__name__, str(err)))
    finally:
        # The results are written (SimpleQueue.put is synchronous); skip interpreter teardown, where
        # the gloo threads of a group a collective failed on can abort the process (SIGABRT).
        os._exit(0)


def _spawn(tmp_path: Path, scenario: str) -> dict[int, list[tuple[str, str]]]:
    tmp_path.mkdir()
    results = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(_rank_main, args=(str(tmp_path / "init"), scenario, results), nprocs=2, start_method="spawn", join=False)
    deadline = time.time() + 180  # generous for a loaded machine; join returns after each process that ends
    while not context.join(timeout=5) and time.time() < deadline:
        pass
    out: dict[int, list[tuple[str, str]]] = {}
    while not results.empty():
        rank, kind, message = results.get()
        out.setdefault(rank, []).append((kind, message))
    return out


def test_collectives_mismatched_configs_rank0_errors_and_a_dead_rank_end_every_rank(tmp_path):
    """Mismatched configs: both ranks raise naming the key. A user error on rank 0 (while the
    others wait): raised on every rank. A rank that dies: the survivor's collective fails within
    the group timeout (10 s here), it does not hang."""
    configs = _spawn(tmp_path / "a", "configs")
    assert [kind for kind, _ in configs[0]] == [kind for kind, _ in configs[1]] == ["LaresError"]
    assert "rank 1 was started with another configuration than rank 0 (differs in spt.lr)" in configs[1][0][1]
    errors = _spawn(tmp_path / "b", "main_error")
    assert errors[0] == errors[1] == [("LaresError", "cannot resume: state is corrupt")]
    dead = _spawn(tmp_path / "c", "dead_rank")
    kinds = dict(dead[0])
    assert 1 not in dead and "ok" not in kinds and kinds["seconds"] < 15
    assert len(kinds) == 2, dead  # the time, and the error the failed collective raised


def test_distributed_config_is_checked():
    for values, key in (({"backend": "mpi"}, "distributed.backend"), ({"timeout_s": 0}, "distributed.timeout_s")):
        with pytest.raises(LaresError, match=key):
            DistributedConfig(**values).validate()
