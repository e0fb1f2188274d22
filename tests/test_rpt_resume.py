"""RPT crash safety: rpt_last.pt after every epoch and on Ctrl-C, exact resume (in process and
through the CLI after SIGKILL / Ctrl-C), phase-aware `run resume=`, and a NaN loss that stops
training with the last good state intact."""

import json
import os
import shlex
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchrl.collectors import Collector

from lares_rl.commands.schemas import compose_config
from lares_rl.commands.session import resume_dir
from lares_rl.core.checkpoint import load_checkpoint
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import TrainingInterrupted, load_training_state, save_training_state, weights_digest
from lares_rl.core.runtime import seed_everything
from lares_rl.data.sequences import SequenceData
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.policies.actor import make_slate_actor
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.rewards import make_reward
from lares_rl.rpt import loop as rpt
from lares_rl.rpt import setup as rpt_setup
from lares_rl.rpt.algorithms import grpo
from lares_rl.rpt.config import RPTConfig
from lares_rl.rpt.loop import train_rpt, train_rpt_with_test
from tests.cli_process import finish, start, wait_for_epoch
from tests.synthetic import write_sequential_csv
from tests.test_rpt import make_env, tiny_data, tiny_policy

N, L = 25, 6
TIMING = (
    "collect_frames_per_sec",
    "loop_frames_per_sec",
    "seconds_per_epoch",
    "cpu_seconds_per_epoch",
    "samples_per_sec",
    "seconds_per_batch",
    "filter_seconds",
)
GRPO = RPTConfig(histories_per_batch=7, batches_per_epoch=3, epochs=2, patience=10, slate_size=5)
PPO = RPTConfig(
    algorithm="ppo",
    exploration="plackett_luce",
    advantage="value",
    value_hidden=8,
    histories_per_batch=7,
    batches_per_epoch=3,
    epochs=2,
    patience=10,
    slate_size=5,
)
EXPECTED_EMA = RPTConfig(
    algorithm="expected_pg",
    exploration="categorical",
    latent_noise=False,
    group_size=1,
    beta=0.1,
    ema_decay=0.5,
    histories_per_batch=7,
    batches_per_epoch=3,
    epochs=2,
    patience=10,
    slate_size=5,
)
LATENT_H2 = RPTConfig(
    algorithm="latent_pg",
    exploration="gaussian",
    latent_noise=False,
    antithetic=True,
    horizon=2,
    histories_per_batch=7,
    batches_per_epoch=3,
    epochs=2,
    patience=10,
    slate_size=5,
)


def without_timing(value, drop=("checkpoint",)):
    """A summary without wall-clock throughput (never reproducible) and run-dir paths."""
    if isinstance(value, dict):
        return {k: without_timing(v, drop) for k, v in value.items() if k not in TIMING and k not in drop}
    return value


# ----------------------------------------------------------------------------- in process


def rpt_data() -> SequenceData:
    rng = np.random.default_rng(0)
    return SequenceData.from_sequences([list(rng.integers(1, N + 1, size=int(rng.integers(6, 10)))) for _ in range(24)], num_items=N)


def spt_policy(seed: int = 0) -> LaresReasoner:
    torch.manual_seed(seed)
    return LaresReasoner(N, max_len=L, d_model=16, n_heads=2, inner_size=32, dropout=0.2)


def run_rpt(run_dir: Path, cfg: RPTConfig, resume: bool = False, policy_seed: int = 0, reward_fn=None) -> dict:
    seed_everything(0)  # what the CLI does before RPT; a resume must not depend on it
    return train_rpt(
        policy=spt_policy(policy_seed),
        policy_config={},
        data=rpt_data(),
        max_len=L,
        cfg=cfg,
        reward_fn=reward_fn or make_reward("ndcg", k=5),
        eval_cfg=EvalConfig(ks=[5, 10]),
        run_dir=run_dir,
        device=torch.device("cpu"),
        seed=0,
        config={},
        progress=False,
        resume=resume,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Uninterrupted in-process runs, computed once per algorithm."""
    cache = {}

    def get(cfg: RPTConfig) -> dict:
        if repr(cfg) not in cache:
            cache[repr(cfg)] = run_rpt(tmp_path_factory.mktemp(f"full_{cfg.algorithm}"), cfg)
        return cache[repr(cfg)]

    return get


def test_env_sampling_state_before_the_pending_reset_lets_a_new_collector_continue_the_walk():
    def episodes(batches: int, state=None) -> tuple[list, dict]:
        env = make_env(tiny_data(), histories=3)
        if state is not None:
            env.load_sampling_state(state)
        collector = Collector(
            env, make_slate_actor(tiny_policy(), 5, seed=0), frames_per_batch=12, total_frames=-1, auto_register_policy_transforms=False
        )
        stream = iter(collector)
        drawn = [next(stream)["group_id"][::4].tolist() for _ in range(batches)]
        state = env.sampling_state(before_last_reset=True)
        collector.shutdown()
        return drawn, state

    full, _ = episodes(8)  # 8 x 3 histories > 1 pass over the episodes: a reshuffle is crossed
    first, state = episodes(3)
    rest, _ = episodes(5, state)
    assert first + rest == full
    env = make_env(tiny_data(), histories=3)
    saved = env.state_dict()  # nn.Module round trip carries the walk too
    env._draw_episodes(7)
    env.load_state_dict(saved)
    assert env._perm_pos == 0 and env.epoch == 0
    with pytest.raises(LaresError, match="cannot be loaded"):
        make_env(SequenceData.from_sequences([[1, 2, 3, 4, 5, 6]] * 3, num_items=N)).load_sampling_state(saved["_extra_state"])


def _interrupt_at_batch_2(monkeypatch) -> list:
    """Ctrl-C while batch 2 of epoch 0 is being processed (every algorithm flattens its batch); the calls seen."""
    flatten, calls = rpt.decisions, []

    def interrupt_at_batch_2(batch):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return flatten(batch)

    monkeypatch.setattr(rpt, "decisions", interrupt_at_batch_2)
    return calls


@pytest.mark.parametrize("cfg", [GRPO, PPO, LATENT_H2, EXPECTED_EMA], ids=["grpo", "ppo_value", "latent_pg_horizon2", "expected_pg_ema"])
def test_ctrl_c_mid_epoch_saves_and_resume_is_bit_identical(cfg, tmp_path, monkeypatch, uninterrupted):
    full = uninterrupted(cfg)
    calls = _interrupt_at_batch_2(monkeypatch)
    with pytest.raises(TrainingInterrupted, match=f"epoch 0, batch 2/3.*Resume with: lares-rl rpt resume={tmp_path}"):
        run_rpt(tmp_path, cfg)
    state = load_training_state(tmp_path / "checkpoints" / "rpt_last.pt")
    assert (state["progress"]["epoch"], state["progress"]["next_batch"]) == (0, 2) and len(calls) == 2
    monkeypatch.undo()
    resumed = run_rpt(tmp_path, cfg, resume=True)
    assert without_timing(resumed) == without_timing(full)  # rewards, validation history, best metrics, greedy probes
    assert resumed["frames"] == full["frames"] == 2 * 3 * 7 * cfg.group_size * cfg.horizon


# The RPT progress as lares_rl saved it before the run-state core (core/run_state.py), after a batch of epoch 0.
PROGRESS_BEFORE_RUN_STATE_CORE = (
    "epoch", "next_batch", "epoch_rewards", "histories_seen", "step", "finished", "reward_per_epoch", "frames", "collect_seconds",
    "loop_seconds", "reward_before", "valid_start", "probe_curve", "zero_adv_fractions", "prepare_seconds", "update_seconds",
)  # fmt: skip


def test_a_state_saved_before_the_run_state_core_resumes_bit_identically(tmp_path, monkeypatch, uninterrupted):
    """A Ctrl-C state in the old layout (no lares_rl_version; the progress dict without the keys no
    batch of epoch 0 had set yet, e.g. valid_ndcg_per_epoch) continues as the uninterrupted run."""
    full = uninterrupted(GRPO)
    _interrupt_at_batch_2(monkeypatch)
    with pytest.raises(TrainingInterrupted):
        run_rpt(tmp_path, GRPO)
    monkeypatch.undo()
    path = tmp_path / "checkpoints" / "rpt_last.pt"
    state = load_training_state(path)
    old = {key: value for key, value in state.items() if key != "lares_rl_version"}
    save_training_state(path, {**old, "progress": {key: state["progress"][key] for key in PROGRESS_BEFORE_RUN_STATE_CORE}})
    assert without_timing(run_rpt(tmp_path, GRPO, resume=True)) == without_timing(full)


def test_nan_loss_names_term_and_step_and_keeps_the_last_good_state(tmp_path, monkeypatch, uninterrupted):
    full = uninterrupted(GRPO)
    forward, calls = grpo.GroupRelativeLoss.forward, []

    def nan_at_epoch_1_batch_2(self, td):
        out = forward(self, td)
        calls.append(1)
        if len(calls) == 5:  # 3 batches per epoch: epoch 1, batch 2, optimiser step 4
            out["loss_kl"] = out["loss_kl"] * float("nan")
        return out

    monkeypatch.setattr(grpo.GroupRelativeLoss, "forward", nan_at_epoch_1_batch_2)
    with pytest.raises(LaresError) as caught:
        run_rpt(tmp_path, GRPO)
    message = str(caught.value)
    assert "non-finite loss_kl (nan) at RPT epoch 1, batch 2/3, step 4" in message
    best_epoch = load_checkpoint(tmp_path / "checkpoints" / "rpt_best.pt")["epoch"]
    assert best_epoch == (0 if full["valid_ndcg_per_epoch"][0] > full["valid_start"]["ndcg@10"] else -1)
    kept_best = f"best epoch {best_epoch}" if best_epoch >= 0 else "the SPT start"
    assert f"{tmp_path / 'checkpoints' / 'rpt_last.pt'} (after epoch 0)" in message and f"rpt_best.pt ({kept_best})" in message
    state = load_training_state(tmp_path / "checkpoints" / "rpt_last.pt")
    assert (state["progress"]["epoch"], state["progress"]["next_batch"], state["progress"]["step"]) == (1, 0, 3)
    # the last good state is a complete one: resuming from it gives the uninterrupted run
    monkeypatch.setattr(grpo.GroupRelativeLoss, "forward", forward)
    assert without_timing(run_rpt(tmp_path, GRPO, resume=True)) == without_timing(full)
    # ... and only from the SPT weights it started from
    with pytest.raises(LaresError, match="SPT checkpoint's weights differ"):
        run_rpt(tmp_path, GRPO, resume=True, policy_seed=1)


def test_rpt_that_never_beats_the_spt_start_keeps_the_spt_weights(tmp_path, monkeypatch):
    """Validation that only gets worse after the start: early stopping runs out of patience and
    rpt_best.pt holds exactly the weights RPT started from, with the start's metrics."""
    scores = iter([0.5, 0.4, 0.3, 0.2])
    monkeypatch.setattr(rpt_setup, "evaluate_policy", lambda *args, **kwargs: {"ndcg@10": next(scores), "recall@10": 0.0})
    start = weights_digest(spt_policy().state_dict())
    summary = run_rpt(tmp_path, replace(GRPO, epochs=5, patience=2))
    assert summary["best_epoch"] == -1 and summary["epochs_run"] == 2 and summary["valid_ndcg_per_epoch"] == [0.4, 0.3]
    assert summary["valid"] == summary["valid_start"] == {"ndcg@10": 0.5, "recall@10": 0.0}
    best = load_checkpoint(tmp_path / "checkpoints" / "rpt_best.pt")
    assert best["epoch"] == -1 and weights_digest(best["policy_state"]) == start


def test_state_saved_before_valid_start_existed_resumes_and_evaluates_the_start(tmp_path, uninterrupted):
    """An rpt_last.pt from before the SPT start became a candidate has no ``valid_start``;
    resuming evaluates it on the SPT weights the caller passed, before restoring RPT's."""
    full = uninterrupted(GRPO)
    assert run_rpt(tmp_path, GRPO)["valid_start"] == full["valid_start"]
    path = tmp_path / "checkpoints" / "rpt_last.pt"
    state = load_training_state(path)
    del state["progress"]["valid_start"]
    save_training_state(path, state)
    assert without_timing(run_rpt(tmp_path, GRPO, resume=True)) == without_timing(full)


def test_train_rpt_with_test_takes_validation_from_the_rpt_summary(tmp_path, uninterrupted):
    """Before/after validation is the summary's (not a second pass) and equals a fresh evaluation."""
    policy, data, eval_cfg, cpu = spt_policy(), rpt_data(), EvalConfig(ks=[5, 10]), torch.device("cpu")
    start_valid = evaluate_policy(policy, data, "valid", L, eval_cfg, cpu)
    start_test = evaluate_policy(policy, data, "test", L, eval_cfg, cpu)
    seed_everything(0)
    result = train_rpt_with_test(
        policy=policy,
        policy_config={},
        data=data,
        max_len=L,
        cfg=GRPO,
        reward_fn=make_reward("ndcg", k=5),
        eval_cfg=eval_cfg,
        run_dir=tmp_path,
        device=cpu,
        seed=0,
        config={},
        progress=False,
    )
    assert result["before"] == {"valid": start_valid, "test": start_test}
    assert result["after"] == {
        "valid": evaluate_policy(policy, data, "valid", L, eval_cfg, cpu),
        "test": evaluate_policy(policy, data, "test", L, eval_cfg, cpu),
    }
    assert without_timing(result["rpt"]) == without_timing(uninterrupted(GRPO))


# ----------------------------------------------------------------------------- the console script


def _start(cwd: Path, *args: str) -> subprocess.Popen:
    return start(cwd, *args)


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    return finish(process, timeout=300)


def _wait_for_rpt_state(state: Path, process: subprocess.Popen, epoch: int) -> None:
    wait_for_epoch(state, epoch, process, deadline_s=240, poll_s=0.02)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted `run` (quick preset, 3 RPT epochs of 2 batches): the reference."""
    tmp_path = tmp_path_factory.mktemp("rpt_resume_cli")
    path = write_sequential_csv(tmp_path / "log.csv", users=40, items=30, length=10)
    args = [
        "preset=quick",
        "dataset=custom",
        f"dataset.path={path}",
        "dataset.user_col=uid",
        "dataset.item_col=sku",
        "dataset.time_col=ts",
        "dataset.max_len=8",
        "progress=false",
        "rpt.epochs=3",
        "rpt.patience=100",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    code, _, err = _finish(_start(tmp_path, "run", *args, "hydra.run.dir=full"))
    assert code == 0, err
    return tmp_path, args, json.loads((tmp_path / "full" / "metrics.json").read_text())


@pytest.mark.slow
def test_sigkill_during_rpt_then_run_resume_skips_spt_and_matches(full_run):
    tmp_path, args, full = full_run
    killed = _start(tmp_path, "run", *args, "hydra.run.dir=killed")
    _wait_for_rpt_state(tmp_path / "killed" / "checkpoints" / "rpt_last.pt", killed, epoch=1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "killed" / "metrics.json").exists()
    code, out, err = _finish(_start(tmp_path, "run", *args, f"resume={tmp_path / 'killed'}", "hydra.run.dir=resumed"))
    assert code == 0, err
    method, _, baseline = out.partition("[lares-rl] baseline sasrec")  # the killed run never reached its baseline
    assert "SPT finished" in method and "[spt] epoch" not in method and "[rpt] resuming" in method and "(saved)" in method
    assert "[spt] epoch" in baseline
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert without_timing(resumed) == without_timing(full)  # SPT results, RPT history, valid and test metrics
    assert resumed["rpt"]["epochs_run"] == 3 and len(resumed["rpt"]["reward_per_epoch"]) == 3
    # batches logged after the saved state were purged on resume: every RPT step appears once, as uninterrupted
    assert _logged_steps(tmp_path / "killed", "rpt/losses/policy") == _logged_steps(tmp_path / "full", "rpt/losses/policy")


def _logged_steps(run_dir: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(run_dir / "tb" / tag.split("/")[0]), size_guidance={"scalars": 0})
    return [event.step for event in events.Reload().Scalars(tag)]


@pytest.mark.slow
def test_ctrl_c_during_rpt_exits_130_with_the_resume_command_which_continues_exactly(full_run):
    tmp_path, args, full = full_run
    checkpoint = tmp_path / "full" / "checkpoints" / "spt_best.pt"
    process = _start(tmp_path, "rpt", *args, f"checkpoint={checkpoint}", "hydra.run.dir=stopped")
    _wait_for_rpt_state(tmp_path / "stopped" / "checkpoints" / "rpt_last.pt", process, epoch=0)  # RPT has started
    process.send_signal(signal.SIGINT)
    code, _, err = _finish(process)
    assert code == 130, err
    assert "Traceback" not in err
    printed = err.split("Resume with: ", 1)[1].strip()  # pasted as printed: the overrides are spelled out
    assert printed.startswith(f"lares-rl rpt resume={tmp_path / 'stopped'} checkpoint={checkpoint} ") and "<" not in printed, printed
    progress = load_training_state(tmp_path / "stopped" / "checkpoints" / "rpt_last.pt")["progress"]
    assert progress["next_batch"] >= 1 or progress["epoch"] >= 1
    code, out, err = _finish(_start(tmp_path, *shlex.split(printed)[1:], "hydra.run.dir=continued"))
    assert code == 0, err
    assert "[rpt] resuming" in out
    resumed = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    # `rpt` from the run's SPT checkpoint is the RPT half of that run, bit for bit
    assert without_timing(resumed["rpt"]) == without_timing(full["rpt"])
    assert resumed["after"]["test"] == full["test"]["lares+rpt"] and resumed["before"]["test"] == full["test"]["lares"]


def _assert_resume_refusals(resume_of, cfg, run_dir: Path, nowhere: Path) -> None:
    """``resume_of(cfg, command)`` finds ``run_dir`` (a `run` directory that ``cfg`` composed) and
    refuses a changed rpt or reward setting, another command, and a folder without the state."""
    cfg.resume = str(run_dir)
    assert resume_of(cfg, "run") == run_dir
    for key, value in (("rpt.lr", 0.1), ("reward._target_", "lares_rl.rewards.mrr")):
        changed = cfg.copy()
        OmegaConf.update(changed, key, value)
        with pytest.raises(LaresError, match=f"differs in {key.split('.')[0]}"):
            resume_of(changed, "run")
    with pytest.raises(LaresError, match="it is a `lares-rl run` run; use lares-rl run resume="):
        resume_of(cfg, "spt")
    cfg.resume = str(nowhere)
    with pytest.raises(LaresError, match="rpt_last.pt does not exist"):
        resume_of(cfg, "rpt")


@pytest.mark.slow
def test_resume_refuses_a_changed_rpt_config_or_another_command(full_run):
    from lares_rl.cli import _resume_dir

    tmp_path, _, _ = full_run
    run_dir = tmp_path / "full"
    _assert_resume_refusals(_resume_dir, OmegaConf.load(run_dir / ".hydra" / "config.yaml"), run_dir, tmp_path / "nowhere")


def test_resume_refuses_a_changed_config_or_another_command_in_a_run_directory_laid_out_here(tmp_path):
    """The checks above without a run to make the directory: a `run`'s composed config and its saved states."""
    run_dir = tmp_path / "full"
    cfg = compose_config(["command=run"])
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    for state in ("spt_last.pt", "rpt_last.pt"):
        save_training_state(run_dir / "checkpoints" / state, {"progress": {"epoch": 1}})
    _assert_resume_refusals(resume_dir, cfg, run_dir, tmp_path / "nowhere")
