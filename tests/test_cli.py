"""End-to-end: the console entry on a tiny synthetic data set. What a command checks, prints and
writes runs in this process (run_in_process, on a checkpoint trained here in seconds); whole `run`s
and the installed script run in child processes and are marked slow, `--help` is the quick one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lares_rl.commands.checkpoint import checkpoint_dataset_choice
from lares_rl.core.checkpoint import load_checkpoint
from lares_rl.core.config import to_plain
from lares_rl.core.errors import LaresError
from tests.cli_process import checkpoint_run as build_checkpoint_run
from tests.cli_process import run_in_process
from tests.synthetic import write_sequential_csv

CLI = [sys.executable, "-c", "from lares_rl.cli import main; main()"]


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # the repository root on the path, as a user's own module would be: tests.plugins rewards/backbones resolve from any cwd
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([*CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def tiny_data_args(tmp_path: Path) -> list[str]:
    path = write_sequential_csv(tmp_path / "log.csv")
    return [
        "dataset=custom",
        f"dataset.path={path}",
        "dataset.user_col=uid",
        "dataset.item_col=sku",
        "dataset.time_col=ts",
        "dataset.max_len=8",
        "progress=false",
    ]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cli")
    args = tiny_data_args(tmp_path)
    result = run_cli(
        tmp_path,
        "run",
        *args,
        "spt.epochs=3",
        "spt.batch_size=64",
        "policy.d_model=16",
        "policy.inner_size=32",
        "rpt.epochs=1",
        "rpt.histories_per_batch=64",
        "hydra.run.dir=run1",
    )
    assert result.returncode == 0, result.stderr
    return tmp_path, args, result


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory):
    """(folder, data overrides, a tiny SPT checkpoint trained in this process on that data)."""
    return build_checkpoint_run(tmp_path_factory, "cli_checkpoint", tiny_data_args)


@pytest.mark.slow
def test_run_writes_metrics_checkpoint_and_tensorboard(trained_run):
    tmp_path, _, result = trained_run
    run_dir = tmp_path / "run1"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["lares"]["ndcg@10"] <= 1.0 and "recall@20" in metrics["test"]["lares"]
    assert 0.0 <= metrics["test"]["lares+rpt"]["ndcg@10"] <= 1.0 and (run_dir / "checkpoints" / "rpt_best.pt").is_file()
    assert (run_dir / "checkpoints" / "spt_best.pt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    events = EventAccumulator(str(run_dir / "tb" / "spt"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in (
        "spt/losses/rec",
        "spt/losses/tla",
        "spt/eval/ndcg@10",
        "spt/charts/learning_rate",
        "spt/charts/samples_per_sec",
        "spt/diag/k",
    ):
        assert tag in tags, tag
    assert "| lares |" in result.stdout and "| sasrec |" in result.stdout
    assert (
        set(metrics["baseline"]["test"]) == set(metrics["test"]["lares"])
        and (run_dir / "baseline" / "checkpoints" / "spt_best.pt").is_file()
    )


def test_eval_and_sweep_k_on_checkpoint(checkpoint_run, monkeypatch, capsys):
    tmp_path, args, checkpoint = checkpoint_run
    code, _, err = run_in_process(
        monkeypatch, capsys, tmp_path, "eval", *args, f"checkpoint={checkpoint}", "eval.split=valid", "hydra.run.dir=eval1"
    )
    assert code == 0, err
    assert json.loads((tmp_path / "eval1" / "metrics.json").read_text())["split"] == "valid"
    code, _, err = run_in_process(
        monkeypatch, capsys, tmp_path, "sweep-k", *args, f"checkpoint={checkpoint}", "eval.sweep_ks=[1,2,4]", "hydra.run.dir=sweep1"
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "sweep1" / "sweep_k.json").read_text())
    assert [r["k"] for r in rows] == [1, 2, 4]
    assert (tmp_path / "sweep1" / "sweep_k.png").stat().st_size > 1000


def test_eval_and_sweep_k_with_adaptive_depth(checkpoint_run, monkeypatch, capsys):
    tmp_path, args, checkpoint = checkpoint_run
    code, out, err = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        "eval",
        *args,
        f"checkpoint={checkpoint}",
        "eval.halt_tol=0.3",
        "eval.halt_k_max=5",
        "hydra.run.dir=halt1",
    )
    assert code == 0, err
    record = json.loads((tmp_path / "halt1" / "metrics.json").read_text())
    histogram = {int(k): n for k, n in record["steps_histogram"].items()}
    assert sum(histogram.values()) > 0 and set(histogram) <= {2, 3, 4, 5} and "steps taken:" in out
    assert record["metrics"]["mean_steps"] == sum(k * n for k, n in histogram.items()) / sum(histogram.values())
    events = EventAccumulator(str(tmp_path / "halt1" / "tb" / "eval"))
    events.Reload()
    assert "eval/test/steps" in events.Tags()["histograms"]
    code, out, err = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        "sweep-k",
        *args,
        f"checkpoint={checkpoint}",
        "eval.sweep_ks=[2,4]",
        "eval.halt_tol=0.3",
        "hydra.run.dir=halt2",
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "halt2" / "sweep_k.json").read_text())
    assert [r["k"] for r in rows] == [2, 4] and rows[0]["mean_steps"] == 2.0 and 2.0 <= rows[1]["mean_steps"] <= 4.0
    assert "| k_max (adaptive halting) |" in out
    code, _, err = run_in_process(
        monkeypatch, capsys, tmp_path, "eval", *args, f"checkpoint={checkpoint}", "eval.halt_tol=nan", "hydra.run.dir=halt3"
    )
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: eval.halt_tol=nan is invalid")


def test_rpt_rollouts_with_adaptive_depth_log_the_steps_taken(checkpoint_run, monkeypatch, capsys):
    tmp_path, args, checkpoint = checkpoint_run
    code, _, err = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        "rpt",
        *args,
        f"checkpoint={checkpoint}",
        "rpt.epochs=1",
        "rpt.histories_per_batch=64",
        "rpt.halt_tol=0.3",
        "rpt.halt_k_max=6",
        "hydra.run.dir=halt_rpt",
    )
    assert code == 0, err
    events = EventAccumulator(str(tmp_path / "halt_rpt" / "tb" / "rpt"))
    events.Reload()
    k_means = [s.value for s in events.Scalars("rpt/charts/k_mean")]
    assert k_means and all(2.0 <= k <= 6.0 for k in k_means) and "rpt/charts/k" in events.Tags()["histograms"]
    code, _, err = run_in_process(
        monkeypatch, capsys, tmp_path, "rpt", *args, f"checkpoint={checkpoint}", "rpt=grpo", "rpt.halt_tol=0.3", "hydra.run.dir=halt_rpt2"
    )
    assert code == 2 and "rpt.halt_tol: halts evaluation-mode rollouts" in err


def test_bad_inputs_fail_with_one_clear_line(tmp_path, monkeypatch, capsys):
    base, args = tmp_path, tiny_data_args(tmp_path)
    cases = [
        (["stats", "dataset=custom", "dataset.path=missing.csv"], "missing.csv"),
        (["stats", *args, "dataset.user_col=nope"], "nope"),
        (["stats", *args, "dataset.max_len=0"], "dataset.max_len"),
        (["eval", *args, "checkpoint=nothing.pt"], "nothing.pt"),
        (["run", *args, "spt.lrr=1"], "spt.lrr"),
        (["run", *args, "policy=doesnotexist"], "policy"),
        (
            ["run", *args, "baseline=nope"],
            "baseline=nope names no file configs/policy/nope.yaml; use one of lares, mostpop, sasrec, or baseline=null",
        ),
        (["eval", "--checkpoint", "x.pt"], "write it as a Hydra override, checkpoint=<value>"),
    ]
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    cases.append((["eval", *args, f"checkpoint={tmp_path / 'corrupt.pt'}"], "corrupt"))
    for argv, needle in cases:
        code, _, err = run_in_process(monkeypatch, capsys, base, *argv)
        assert code != 0, argv
        assert needle in err, (argv, err)
        assert "Traceback" not in err, (argv, err)


def test_a_misspelled_key_gets_the_nearest_valid_key_instead_of_hydras_message(tmp_path, monkeypatch, capsys):
    """Hydra's own message suggests +spt.lrr=1, a key nothing reads: the project's line comes
    alone, before anything is composed or written, for a typed section and for policy.* alike."""
    code, _, err = run_in_process(monkeypatch, capsys, tmp_path, "spt", "spt.lrr=1", "progress=false", "hydra.run.dir=typo")
    assert code == 2 and err.startswith("error: spt.lrr is not a config key; did you mean spt.lr?"), err
    assert "not in" not in err and "Traceback" not in err and not (tmp_path / "typo").exists()
    code, _, err = run_in_process(
        monkeypatch, capsys, tmp_path, "spt", "policy=sasrec", "policy.dmodel=16", "reward.kk=3", "progress=false"
    )
    assert code == 2 and err.splitlines() == [
        "error: policy.dmodel is not a config key; did you mean policy.d_model? (a +policy.dmodel=... would add a key that nothing reads)",
        "error: reward.kk is not a config key; did you mean reward.k? (a +reward.kk=... would add a key that nothing reads)",
    ], err
    code, _, err = run_in_process(
        monkeypatch, capsys, tmp_path, "spt", "spt.epochs=abc", "progress=false"
    )  # a typed section: Hydra names the key and the type
    assert code == 1 and "spt.epochs" in err and "Integer" in err, err


def test_policy_overrides_that_would_be_ignored_by_a_checkpoint_are_refused(checkpoint_run, monkeypatch, capsys):
    """``eval`` rebuilds the policy from the checkpoint: restating its training overrides is fine
    (``args`` carry none here, the fixture's policy.d_model=16 is restated), changing one is an error."""
    base, args, checkpoint = checkpoint_run
    code, _, err = run_in_process(
        monkeypatch, capsys, base, "eval", *args, f"checkpoint={checkpoint}", "policy.d_model=16", "hydra.run.dir=eval_same"
    )
    assert code == 0, err
    code, _, err = run_in_process(
        monkeypatch, capsys, base, "eval", *args, f"checkpoint={checkpoint}", "policy.mean_recurrence=8", "hydra.run.dir=eval_changed"
    )
    assert code == 2 and "policy.mean_recurrence=8 cannot change checkpoint" in err and "eval.k=N" in err, err


def test_checkpoint_from_other_data_is_refused(checkpoint_run, tmp_path, monkeypatch, capsys):
    base, args, checkpoint = checkpoint_run
    other = write_sequential_csv(tmp_path / "other.csv", users=50, items=30, seed=3)
    other_args = [a if not a.startswith("dataset.path=") else f"dataset.path={other}" for a in args]
    code, _, err = run_in_process(
        monkeypatch, capsys, base, "eval", *other_args, f"checkpoint={checkpoint}", f"hydra.run.dir={tmp_path / 'eval'}"
    )
    assert code == 2 and "trained on data set" in err


def test_ablation_multirun_from_the_command_line(tmp_path, monkeypatch, capsys):
    """`-m` sweeps the ablation switches; each job gets its own directory with its own metrics."""
    args = tiny_data_args(tmp_path)
    code, _, err = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        "spt",
        "-m",
        *args,
        "spt.alpha=0,0.1",
        "policy.t0_init=zero",
        "spt.epochs=1",
        "spt.batch_size=64",
        "policy.d_model=16",
        "policy.inner_size=32",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert code == 0, err
    metrics = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(metrics) == 2
    configs = [(m.parent / ".hydra" / "overrides.yaml").read_text() for m in metrics]
    assert any("spt.alpha=0" in c and "spt.alpha=0.1" not in c for c in configs) and any("spt.alpha=0.1" in c for c in configs)


@pytest.mark.paper
def test_paper_preset_spt_on_the_embedded_data(tmp_path):
    """Long: one reference-setting SPT epoch on the real ML-100K, over 5 minutes on a 2-core CPU
    (run with `make test ARGS="-m paper"`)."""
    result = run_cli(tmp_path, "spt", "preset=paper", "spt.epochs=1", "progress=false", "hydra.run.dir=paper")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "paper" / "metrics.json").read_text())
    assert metrics["test"]["lares"]["ndcg@10"] > 0.0


@pytest.mark.slow
def test_run_with_sasrec_explores_by_sampling_slates(tmp_path, monkeypatch, capsys):
    """The README's ``run policy=sasrec``: the default RPT (expected_pg) trains the item softmax,
    which SASRec has too, and ``rpt=latent_pg`` perturbs its final state (its 100-wide slate is
    capped to the 40-item catalog); the reference's latent exploration has nothing to vary without
    a reasoning core, so ``rpt=grpo`` samples slates instead, and asking for latent explicitly is an error."""
    args = [
        *tiny_data_args(tmp_path),
        "policy=sasrec",
        "policy.d_model=16",
        "policy.inner_size=32",
        "spt.epochs=1",
        "spt.batch_size=64",
        "rpt.epochs=1",
        "rpt.histories_per_batch=64",
    ]
    result = run_cli(tmp_path, "run", *args, "hydra.run.dir=sasrec")
    assert result.returncode == 0 and "samples slates instead" not in result.stdout, result.stderr
    assert json.loads((tmp_path / "sasrec" / "metrics.json").read_text())["test"]["sasrec+rpt"]["ndcg@10"] >= 0.0
    result = run_cli(tmp_path, "run", *args, "rpt=latent_pg", "baseline=null", "hydra.run.dir=sasrec_latent_pg")
    assert result.returncode == 0 and "rpt.slate_size=100 -> 40: wider than the catalog (40 items)" in result.stdout, result.stderr
    result = run_cli(tmp_path, "run", *args, "rpt=grpo", "baseline=null", "hydra.run.dir=sasrec_grpo")
    assert result.returncode == 0 and "rpt.exploration=latent -> plackett_luce: this policy has no reasoning core" in result.stdout, (
        result.stderr
    )
    # the RPT checkpoint records the values RPT ran with; the run's .hydra/config.yaml what the user composed
    assert load_checkpoint(tmp_path / "sasrec_grpo" / "checkpoints" / "rpt_best.pt")["config"]["rpt"]["exploration"] == "plackett_luce"
    assert OmegaConf.load(tmp_path / "sasrec_grpo" / ".hydra" / "config.yaml").rpt.exploration == "latent"
    code, _, err = run_in_process(
        monkeypatch, capsys, tmp_path, "run", *args, "rpt=grpo", "rpt.exploration=latent", "hydra.run.dir=sasrec_latent"
    )
    assert code == 2 and "rpt.exploration: latent exploration needs a recurrent LARES policy" in err, err


@pytest.mark.slow
def test_console_script_imports_user_code_from_the_current_directory(tmp_path):
    """``lares-rl`` (the installed script, whose sys.path starts at its bin directory) resolves
    reward._target_=my_rewards.top1_bonus from the working directory, as the README shows: the
    run gets past the reward to the next check instead of failing to import the module."""
    script = Path(sys.executable).with_name("lares-rl")
    if not script.is_file():
        pytest.skip("lares-rl console script not installed in this environment")
    (tmp_path / "my_rewards.py").write_text((Path(__file__).parent / "plugins" / "my_rewards.py").read_text())
    result = subprocess.run(
        [str(script), "run", *tiny_data_args(tmp_path), "reward._target_=my_rewards.top1_bonus", "rpt.slate_size=100000"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "rpt.slate_size" in result.stderr and "my_rewards" not in result.stderr, result.stderr


def test_user_code_imports_from_the_current_directory_when_the_path_lacks_it(tmp_path, monkeypatch, capsys):
    """The same in this process: main() puts the working directory on a path that starts without it,
    as the installed script's does."""
    (tmp_path / "my_rewards.py").write_text((Path(__file__).parent / "plugins" / "my_rewards.py").read_text())
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    code, _, err = run_in_process(
        monkeypatch, capsys, tmp_path, "run", *tiny_data_args(tmp_path), "reward._target_=my_rewards.top1_bonus", "rpt.slate_size=100000"
    )
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    assert code == 2 and "rpt.slate_size" in err and "my_rewards" not in err, err


def test_custom_dataset_without_a_path_names_the_key(tmp_path, monkeypatch, capsys):
    code, _, err = run_in_process(monkeypatch, capsys, tmp_path, "stats", "dataset=custom")
    assert code == 2 and "dataset.path is required for dataset=custom" in err, err


def test_eval_takes_the_data_set_from_the_checkpoint_when_none_is_given(checkpoint_run, monkeypatch, capsys):
    """The checkpoint records its training data settings: ``eval checkpoint=...`` alone works
    (it used to fall back to ML-100K and fail the data check)."""
    base, args, checkpoint = checkpoint_run
    code, out, err = run_in_process(
        monkeypatch, capsys, base, "eval", f"checkpoint={checkpoint}", "progress=false", "hydra.run.dir=eval_alone"
    )
    assert code == 0, err
    assert "data set from the checkpoint's training config: custom" in out
    code, out, err = run_in_process(monkeypatch, capsys, base, "eval", *args, f"checkpoint={checkpoint}", "hydra.run.dir=eval_explicit")
    assert code == 0 and "from the checkpoint's training config" not in out, err
    read = lambda name: json.loads((base / name / "metrics.json").read_text())["metrics"]  # noqa: E731
    assert read("eval_alone") == read("eval_explicit")
    recorded = OmegaConf.load(base / "eval_alone" / ".hydra" / "config.yaml").dataset  # what the run used, as --cfg job prints it
    assert to_plain(recorded) == load_checkpoint(checkpoint)["config"]["dataset"]


@pytest.mark.parametrize("command", ["eval", "rpt", "sweep-k"])
def test_cfg_job_of_a_checkpoint_command_prints_the_data_set_the_run_uses(checkpoint_run, command, monkeypatch, capsys):
    """``--cfg job`` shows the checkpoint's data set (not the default ml-100k the run would replace),
    with a ``dataset.*`` key from the command line on top; ``dataset=<option>`` shows that option,
    which the run then refuses for a checkpoint trained on other data."""
    base, _, checkpoint = checkpoint_run
    trained = load_checkpoint(checkpoint)["config"]["dataset"]
    code, out, err = run_in_process(monkeypatch, capsys, base, command, "--cfg", "job", f"checkpoint={checkpoint}")
    assert code == 0, err
    assert to_plain(OmegaConf.create(out).dataset) == trained
    _, out, _ = run_in_process(monkeypatch, capsys, base, command, "--cfg", "job", f"checkpoint={checkpoint}", "dataset.path=elsewhere.csv")
    assert to_plain(OmegaConf.create(out).dataset) == {**trained, "path": "elsewhere.csv"}
    _, out, _ = run_in_process(monkeypatch, capsys, base, command, "--cfg", "job", f"checkpoint={checkpoint}", "dataset=ml-100k")
    assert OmegaConf.create(out).dataset.name == "ml-100k"


def test_a_sweep_over_checkpoints_takes_their_data_set_only_when_they_share_it(checkpoint_run, tmp_path):
    _, _, checkpoint = checkpoint_run
    payload = torch.load(checkpoint, weights_only=False)
    payload["config"]["dataset"]["max_len"] = 9
    torch.save(payload, tmp_path / "other.pt")
    assert checkpoint_dataset_choice("eval", [f"checkpoint={checkpoint},{checkpoint}"]) == ["dataset=checkpoint"]
    with pytest.raises(LaresError, match="trained on different data sets"):
        checkpoint_dataset_choice("eval", [f"checkpoint={checkpoint},{tmp_path / 'other.pt'}"])
    assert checkpoint_dataset_choice("eval", [f"checkpoint={checkpoint}", "dataset=custom"]) == []
    assert checkpoint_dataset_choice("eval", [f"checkpoint={checkpoint}", "dataset=checkpoint"]) == []  # a resume replays the choice
    assert checkpoint_dataset_choice("run", [f"checkpoint={checkpoint}"]) == []


def test_help_lists_the_commands(tmp_path):
    result = run_cli(tmp_path, "--help")
    assert result.returncode == 0 and "usage: lares-rl <command>" in result.stdout and "`sweep-k`" in result.stdout
