"""Crash safety end to end: SIGKILL mid-training, resume, and bit-identical results; Ctrl-C saves.
The child-process runs are marked slow; the Ctrl-C and resume messages are also checked in this process."""

import json
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lares_rl.commands.session import _comparable
from lares_rl.spt.train import with_later_options
from tests.cli_process import finish, run_in_process, start, wait_for_epoch
from tests.synthetic import write_sequential_csv
from tests.test_spt import _interrupt_at_step


def _args(tmp_path: Path) -> list[str]:
    path = write_sequential_csv(tmp_path / "log.csv", users=40, length=12)
    return [
        "spt",
        "dataset=custom",
        f"dataset.path={path}",
        "dataset.user_col=uid",
        "dataset.item_col=sku",
        "dataset.time_col=ts",
        "dataset.max_len=8",
        "progress=false",
        "spt.epochs=5",  # the kill comes after epoch 2: 3 epochs left for the poll to beat, even on a fast machine
        "spt.patience=100",
        "spt.batch_size=16",
        "policy.d_model=16",
        "policy.inner_size=32",
        f"cache_dir={tmp_path / 'cache'}",
    ]


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return start(tmp_path, *args)


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    return finish(process, timeout=400)


def _wait_for_epoch(state: Path, epoch: int, process: subprocess.Popen) -> None:
    wait_for_epoch(state, epoch, process, deadline_s=300, poll_s=0.05)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run_and_is_deterministic(tmp_path):
    args = _args(tmp_path)
    code, _, err = _finish(_start(tmp_path, *args, "hydra.run.dir=full"))
    assert code == 0, err
    code, _, err = _finish(_start(tmp_path, *args, "hydra.run.dir=again"))
    assert code == 0, err
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert full["test"] == again["test"] and full["spt"]["valid"] == again["spt"]["valid"]  # bit-identical

    killed = _start(tmp_path, *args, "hydra.run.dir=killed")
    _wait_for_epoch(tmp_path / "killed" / "checkpoints" / "spt_last.pt", 2, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "metrics.json").exists()
    code, out, err = _finish(_start(tmp_path, *args, f"resume={tmp_path / 'killed'}", "hydra.run.dir=resumed"))
    assert code == 0, err
    assert "resuming" in out
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert resumed["test"] == full["test"] and resumed["spt"]["best_epoch"] == full["spt"]["best_epoch"]
    for tag in ("spt/losses/rec", "spt/eval/ndcg@10"):  # what the killed process logged past its saved state was purged
        assert _logged_steps(tmp_path / "killed", tag) == _logged_steps(tmp_path / "full", tag), tag


def _logged_steps(run_dir: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(run_dir / "tb" / "spt"), size_guidance={"scalars": 0})
    return [event.step for event in events.Reload().Scalars(tag)]


@pytest.mark.slow
def test_ctrl_c_saves_state_and_says_how_to_resume(tmp_path):
    args = _args(tmp_path)
    process = _start(tmp_path, *args, "spt.epochs=200", "hydra.run.dir=interrupted")
    _wait_for_epoch(tmp_path / "interrupted" / "checkpoints" / "spt_last.pt", 1, process)
    process.send_signal(signal.SIGINT)
    code, _, err = _finish(process)
    assert code == 130, err
    assert f"lares-rl spt resume={tmp_path / 'interrupted'} " in err and "Traceback" not in err
    assert "spt.epochs=200" in err and "dataset.max_len=8" in err and "<the same overrides>" not in err and "hydra.run.dir" not in err
    state = torch.load(tmp_path / "interrupted" / "checkpoints" / "spt_last.pt", weights_only=False)
    assert state["progress"]["epoch"] >= 1 and not state["progress"]["finished"]  # saved where it stopped, far from the 200-epoch cap
    # the printed command, with the epoch cap changed (the one setting a resume may change), finishes the run
    printed = shlex.split(err.split("Resume with: ", 1)[1].strip())[1:]
    done = state["progress"]["epoch"] + 1
    code, out, err = _finish(
        _start(tmp_path, *[f"spt.epochs={done}" if a == "spt.epochs=200" else a for a in printed], "hydra.run.dir=finish")
    )
    assert code == 0 and "resuming" in out, err
    assert json.loads((tmp_path / "interrupted" / "metrics.json").read_text())["spt"]["epochs_run"] == done


def test_ctrl_c_in_this_process_says_how_to_resume_and_the_printed_command_finishes(tmp_path, monkeypatch, capsys):
    """The CLI's side of a Ctrl-C (the trainer's is in tests/test_spt.py): exit 130 with the resume
    command, the run's overrides spelled out, which finishes the run with a raised epoch cap."""
    _interrupt_at_step(monkeypatch, 5)
    code, _, err = run_in_process(monkeypatch, capsys, tmp_path, *_args(tmp_path), "spt.epochs=200", "hydra.run.dir=interrupted")
    assert code == 130, err
    assert f"lares-rl spt resume={tmp_path / 'interrupted'} " in err and "Traceback" not in err
    assert "spt.epochs=200" in err and "dataset.max_len=8" in err and "<the same overrides>" not in err and "hydra.run.dir" not in err
    progress = torch.load(tmp_path / "interrupted" / "checkpoints" / "spt_last.pt", weights_only=False)["progress"]
    assert not progress["finished"]
    monkeypatch.undo()
    printed = shlex.split(err.split("Resume with: ", 1)[1].strip())[1:]
    done = progress["epoch"] + 1
    code, out, err = run_in_process(
        monkeypatch, capsys, tmp_path, *[f"spt.epochs={done}" if a == "spt.epochs=200" else a for a in printed], "hydra.run.dir=finish"
    )
    assert code == 0 and "resuming" in out, err
    assert json.loads((tmp_path / "interrupted" / "metrics.json").read_text())["spt"]["epochs_run"] == done


def test_resume_from_a_directory_without_state_is_a_clear_error(tmp_path, monkeypatch, capsys):
    code, _, err = run_in_process(monkeypatch, capsys, tmp_path, *_args(tmp_path), f"resume={tmp_path / 'nowhere'}")
    assert code == 2 and "cannot resume" in err and "Traceback" not in err


def test_a_run_saved_before_the_policy_options_existed_resumes_at_their_defaults():
    """Runs saved before policy.layer_norm / score_similarity / score_temperature ran with post-LN
    dot-product scoring at tau 1: resuming them with those values is the same run, any other is not."""
    current = {"d_model": 16, "layer_norm": "post", "score_similarity": "dot", "score_temperature": 1.0}
    assert with_later_options({"d_model": 16}, current) == current
    assert with_later_options({"d_model": 16}, {**current, "layer_norm": "pre"}) != {**current, "layer_norm": "pre"}
    saved, now = OmegaConf.create({"policy": {"d_model": 16}}), OmegaConf.create({"policy": current})
    assert _comparable(saved, "policy") == _comparable(now, "policy")
    assert _comparable(saved, "policy") != _comparable(OmegaConf.create({"policy": {**current, "score_similarity": "cosine"}}), "policy")
