"""Distributed RPT learners under torchrun (gloo on the CPU): 2 processes, each collecting and
training on its share of every global batch, make the 1-process updates (same losses, same
parameters within float tolerance), only rank 0 writes, and the bad inputs end in one clear error.
One SPT checkpoint and one pair of runs per algorithm: on a 2-core machine each start costs seconds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lares_rl.core.distributed import DistContext
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import save_training_state
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.loop import train_rpt
from lares_rl.rpt.setup import read_rpt_state
from tests.cli_process import run_in_process
from tests.synthetic import write_sequential_csv
from tests.test_distributed_spt import kill_rank_one_after_epoch_one

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
# dropout 0 and T0 = 0: a rollout is a function of (history, k, seed, noise), all of which the
# ranks draw for the global batch, so 2 processes can follow 1 exactly
DETERMINISTIC_SPT = ["policy.dropout=0", "policy.t0_init=zero"]
RPT = ["rpt.dropout=0", "rpt.histories_per_batch=40", "rpt.epochs=2", "rpt.batches_per_epoch=2", "rpt.probe_every=2", "rpt.probe_size=50"]


def _torchrun(cwd: Path, nproc: int, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [*TORCHRUN, f"--nproc-per-node={nproc}", "-m", "lares_rl.cli", "rpt", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def spt_checkpoint(tmp_path_factory) -> tuple[Path, list[str]]:
    """A tiny deterministic SPT checkpoint (plain run, in this process) and the data overrides RPT needs."""
    tmp_path = tmp_path_factory.mktemp("rpt_ddp")
    path = write_sequential_csv(tmp_path / "log.csv", users=40, items=30, length=10, seed=0)
    data = [
        "dataset=custom",
        f"dataset.path={path}",
        "dataset.user_col=uid",
        "dataset.item_col=sku",
        "dataset.time_col=ts",
        "dataset.max_len=8",
        "progress=false",
        "device=cpu",
    ]
    spt = ["policy.d_model=16", "policy.inner_size=32", "spt.epochs=2", "spt.batch_size=64", *DETERMINISTIC_SPT]
    with pytest.MonkeyPatch.context() as monkeypatch:  # trained in this process: no interpreter start
        monkeypatch.setenv("LARES_RL_CACHE_DIR", str(tmp_path / ".lares_cache"))  # module scope: before conftest sets it
        code, _, _ = run_in_process(monkeypatch, None, tmp_path, "spt", *data, *spt, "hydra.run.dir=spt")
    assert code == 0
    checkpoint = tmp_path / "spt" / "checkpoints" / "spt_best.pt"
    return tmp_path, [*data, f"checkpoint={checkpoint}"]


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir / "tb" / "rpt"))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "rpt_last.pt", weights_only=False)["policy_state"]


@pytest.fixture(scope="module")
def latent_pg_runs(spt_checkpoint):
    """latent_pg (Gaussian latent noise, antithetic pairs), 1 and 2 processes, same global batch."""
    tmp_path, args = spt_checkpoint
    runs = {n: _torchrun(tmp_path, n, *args, *RPT, "rpt=latent_pg", f"hydra.run.dir=latent_pg_{n}") for n in (1, 2)}
    for result in runs.values():
        assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path, runs


def _assert_same_updates(one: Path, two: Path, batch_statistics: bool = True) -> None:
    """Every logged loss and validation metric (and with ``batch_statistics`` the collected batch's
    reward, k and advantage statistics), and the final weights, agree."""
    curves_one, curves_two = _scalars(one), _scalars(two)
    statistics = ("reward_mean", "reward_std", "k_mean", "advantage_std") if batch_statistics else ()
    compared = [tag for tag in curves_one if "/losses/" in tag or "/eval/" in tag or tag.endswith(statistics)]
    assert any("/losses/" in tag for tag in compared)
    for tag in compared:
        assert len(curves_one[tag]) == len(curves_two[tag]) > 0, tag
        assert torch.allclose(torch.tensor(curves_one[tag]), torch.tensor(curves_two[tag]), rtol=1e-5, atol=1e-6), tag
    start = torch.load(one.parent / "spt" / "checkpoints" / "spt_best.pt", weights_only=False)["policy_state"]
    weights_one, weights_two = _last_weights(one), _last_weights(two)
    for name, value in weights_one.items():
        update_one, update_two = value.float() - start[name].float(), weights_two[name].float() - start[name].float()
        # Adam divides each gradient by its own running scale, so an entry whose gradient is
        # rounding noise (summed in another order over 2 ranks) moves by up to a learning rate
        # either way: compare each tensor's whole update, not its entries (seen: 1.5% here, while
        # the tolerance is 5%)
        assert (update_one - update_two).norm() <= 0.05 * update_one.norm() + 1e-7, name


@pytest.mark.slow
def test_two_latent_pg_learners_make_the_one_process_updates(latent_pg_runs):
    tmp_path, runs = latent_pg_runs
    _assert_same_updates(tmp_path / "latent_pg_1", tmp_path / "latent_pg_2")
    assert "on 2 processes" in runs[2].stdout and runs[2].stdout.count("[rpt] interval") == 2  # rank 0 prints, rank 1 does not
    state = torch.load(tmp_path / "latent_pg_2" / "checkpoints" / "rpt_last.pt", weights_only=False)
    assert state["world_size"] == 2 and state["distributed"] and len(state["rank_rng"]) == 2
    assert state["progress"]["histories_seen"] == 2 * 2 * 40  # the global batch, counted once
    assert (tmp_path / "latent_pg_2" / "metrics.json").is_file()


@pytest.mark.slow
def test_two_grpo_learners_with_latent_exploration_make_the_one_process_updates(spt_checkpoint):
    """The reference objective: per-row depths k and rollout seeds drawn for the global batch."""
    tmp_path, args = spt_checkpoint
    for n in (1, 2):
        result = _torchrun(tmp_path, n, *args, *RPT, "rpt=grpo", "rpt.epochs=1", f"hydra.run.dir=grpo_{n}")
        assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_updates(tmp_path / "grpo_1", tmp_path / "grpo_2")


@pytest.mark.slow
def test_two_expected_pg_learners_make_the_one_process_updates(spt_checkpoint):
    """The default objective is exact over each rank's histories, so averaging the ranks'
    gradients is the one-process gradient; only the logged training reward (the categorical
    slates each rank samples from its own stream) may differ."""
    tmp_path, args = spt_checkpoint
    for n in (1, 2):
        result = _torchrun(tmp_path, n, *args, *RPT, "rpt=expected_pg", "rpt.epochs=1", f"hydra.run.dir=expected_pg_{n}")
        assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_updates(tmp_path / "expected_pg_1", tmp_path / "expected_pg_2", batch_statistics=False)


@pytest.mark.slow
def test_sigkill_of_one_rank_then_resume_ends_like_an_uninterrupted_run(spt_checkpoint):
    """Rank 1 is killed once epoch 1 is saved; `resume=` with the same world size ends with the
    uninterrupted run's losses and weights (every rank's RNG streams and the shared walk restored)."""
    tmp_path, args = spt_checkpoint
    # 4 intervals of 4 batches: after the kill, 3 intervals remain for the poll (0.02 s) to beat
    longer = [*args, *RPT, "rpt=grpo", "rpt.epochs=4", "rpt.batches_per_epoch=4", "rpt.patience=5"]
    assert _torchrun(tmp_path, 2, *longer, "hydra.run.dir=full").returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    kill_rank_one_after_epoch_one(
        [*TORCHRUN, "--nproc-per-node=2", "-m", "lares_rl.cli", "rpt", *longer, "hydra.run.dir=killed"],
        tmp_path,
        env,
        tmp_path / "killed" / "checkpoints" / "rpt_last.pt",
        deadline_s=120,
        poll_s=0.02,
    )
    resumed = _torchrun(tmp_path, 2, *longer, f"resume={tmp_path / 'killed'}", "hydra.run.dir=resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full, killed = _scalars(tmp_path / "full"), _scalars(tmp_path / "killed")
    assert torch.allclose(torch.tensor(full["rpt/losses/total"]), torch.tensor(killed["rpt/losses/total"]), atol=1e-7)
    weights_full, weights_killed = _last_weights(tmp_path / "full"), _last_weights(tmp_path / "killed")
    assert all(torch.allclose(value, weights_killed[name], atol=1e-6) for name, value in weights_full.items())


# ----------------------------------------------------------------------------- bad input


def test_a_world_size_that_does_not_divide_histories_per_batch_is_an_error_naming_the_key(tmp_path):
    ctx = DistContext(rank=0, world_size=3, active=True)  # the check comes before any collective
    with pytest.raises(
        LaresError,
        match=r"rpt.histories_per_batch=40 is the global batch and must be divisible by the number of processes \(3\).*rpt.histories_per_batch=39",
    ):
        train_rpt(
            policy=torch.nn.Linear(1, 1),
            policy_config={},
            data=None,
            max_len=6,
            cfg=RPTConfig(histories_per_batch=40),
            reward_fn=None,
            eval_cfg=EvalConfig(),
            run_dir=tmp_path,
            device=torch.device("cpu"),
            seed=0,
            config={},
            dist_ctx=ctx,
        )


def test_collector_workers_with_ddp_learners_is_an_error_naming_both(tmp_path):
    ctx = DistContext(rank=0, world_size=2, active=True)
    with pytest.raises(
        LaresError, match=r"rpt.collector_workers=2 cannot be combined with 2 torchrun processes.*rpt.collector_workers=1 under torchrun"
    ):
        train_rpt(
            policy=torch.nn.Linear(1, 1),
            policy_config={},
            data=None,
            max_len=6,
            cfg=RPTConfig(histories_per_batch=40, collector_workers=2),
            reward_fn=None,
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
            r"saved by torchrun with 2 process\(es\), this is torchrun with 4.*rpt_best.pt",
        ),
        ({}, DistContext(world_size=2, active=True), r"saved by a plain run \(no torchrun\).*resume it without torchrun"),
        (
            {"world_size": 2, "distributed": True},
            DistContext(),
            r"saved by torchrun with 2 process\(es\), this is a plain run \(no torchrun\)",
        ),
    ],
)
def test_an_rpt_state_from_another_world_size_is_refused(tmp_path, saved, ctx, expected):
    save_training_state(tmp_path / "rpt_last.pt", {"phase": "rpt", **saved})
    with pytest.raises(LaresError, match=expected):
        read_rpt_state(tmp_path / "rpt_last.pt", ctx, tmp_path)


@pytest.mark.slow
def test_resuming_a_two_process_run_without_torchrun_is_one_clear_error(latent_pg_runs, spt_checkpoint, monkeypatch, capsys):
    tmp_path, _ = latent_pg_runs
    _, args = spt_checkpoint
    resume = f"resume={tmp_path / 'latent_pg_2'}"
    code, _, err = run_in_process(monkeypatch, capsys, tmp_path, "rpt", *args, *RPT, "rpt=latent_pg", resume, "hydra.run.dir=resumed")
    assert code == 2
    assert "saved by torchrun with 2 process(es), this is a plain run (no torchrun)" in err and "Traceback" not in err
