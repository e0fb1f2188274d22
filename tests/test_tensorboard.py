"""TensorBoard of a whole `run` (issue 35 item 7): one printed --logdir holds every phase (spt, rpt
and the SASRec baseline), each phase's test metrics are scalars at its last x value, and every
phase says what its x-axis counts. One tiny run in this process feeds all checks."""

import contextlib
import io
import re
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lares_rl.commands.session import baseline_tb_dir, print_outputs
from lares_rl.core.tracking import X_AXIS, axes_line
from tests.cli_process import run_in_process
from tests.synthetic import dataset_overrides, tiny_run_overrides, write_sequential_csv

TINY_RUN = tiny_run_overrides()
TEST_TAGS = [f"{metric}@{k}" for metric in ("recall", "ndcg") for k in (5, 10, 20)]
RUNS = {"spt": "spt", "rpt": "rpt", "baseline": "spt"}  # TensorBoard run -> the phase its tags name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, str]:
    """(run folder, stdout) of `lares-rl run` with its SASRec baseline on a 30-item ring."""
    tmp_path = tmp_path_factory.mktemp("tb")
    data = dataset_overrides(write_sequential_csv(tmp_path / "log.csv", users=40, items=30, length=10))
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(stdout):
        code, _, _ = run_in_process(monkeypatch, None, tmp_path, "run", *data, *TINY_RUN, "hydra.run.dir=run1")
    assert code == 0, stdout.getvalue()[-2000:]
    return tmp_path / "run1", stdout.getvalue()


def events(folder: Path) -> EventAccumulator:
    return EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0}).Reload()


def test_the_printed_logdir_holds_every_phase_with_its_x_axis(tiny_run):
    run_dir, stdout = tiny_run
    line = next(line for line in stdout.splitlines() if "tensorboard --logdir" in line)
    logdir = Path(re.search(r"--logdir (\S+)", line).group(1))
    assert logdir == run_dir / "tb" and not (run_dir / "baseline" / "tb").exists()
    assert {path.name for path in logdir.iterdir()} == set(RUNS)
    assert "(x = training samples seen in spt and baseline, histories collected in rpt)" in line


def test_each_phase_logs_its_test_metrics_at_its_last_x_value(tiny_run):
    run_dir, _ = tiny_run
    for run, phase in RUNS.items():
        accumulator = events(run_dir / "tb" / run)
        last_x = max(event.step for event in accumulator.Scalars(f"{phase}/eval/ndcg@10"))
        assert last_x > 0, run
        for name in TEST_TAGS:
            (point,) = accumulator.Scalars(f"{phase}/test/{name}")
            assert point.step == last_x and 0.0 <= point.value <= 1.0, (run, name, point)


def test_each_phase_says_what_its_x_axis_counts(tiny_run):
    run_dir, _ = tiny_run
    for run, phase in RUNS.items():
        accumulator = events(run_dir / "tb" / run)
        (text,) = accumulator.Tensors(f"{phase}/x_axis/text_summary")
        assert f"x = {X_AXIS[run]}" in text.tensor_proto.string_val[0].decode(), run
        assert "custom_scalars__config__" in accumulator.Tags()["tensors"], run


def test_an_older_run_folder_keeps_its_baseline_events_and_the_logdir_covers_them(tmp_path, capsys):
    """A run started before tb/baseline wrote its baseline to baseline/tb/spt: resumed, it goes on
    there, and the printed logdir is the run folder, which holds both places."""
    for folder in ("tb/spt", "tb/rpt", "baseline/tb/spt"):
        (tmp_path / folder).mkdir(parents=True)
    assert baseline_tb_dir(tmp_path) == tmp_path / "baseline" / "tb" / "spt"
    print_outputs("checkpoints", tmp_path)
    assert f"tensorboard --logdir {tmp_path}  ({axes_line(RUNS)})" in capsys.readouterr().out
    assert baseline_tb_dir(tmp_path / "new") == tmp_path / "new" / "tb" / "baseline"
