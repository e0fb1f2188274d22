"""The README's first command, `make run`, on tiny data with the quick preset (CI proves it): the
method next to its SASRec baseline in one table."""

import json
import shutil
import subprocess

import pytest

from tests.cli_process import ROOT, child_env
from tests.test_readme import readme_table_header


@pytest.mark.skipif(
    shutil.which("make") is None or not (ROOT / ".venv" / ".installed").exists(), reason="needs the venv that `make` builds"
)
def test_make_run_quick_preset_runs_the_whole_pipeline(tmp_path, custom_data_args):
    args = " ".join([*custom_data_args, f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"])
    result = subprocess.run(
        ["make", "-s", "run", "PRESET=quick", f"ARGS={args}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=child_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == readme_table_header()  # the README shows the columns this run prints
    assert [line.split(" | ")[0] for line in table] == ["| model", "| sasrec", "| lares", "| lares+rpt"], result.stdout
    assert all("hit the cap" in line or "early stopping" in line for line in table[1:]), table
    assert "PRESET=paper" in result.stdout and "docs/results/README.md" in result.stdout
    assert "Top-10 for user" in result.stdout and "TensorBoard" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"lares", "lares+rpt"} and metrics["baseline"]["name"] == "sasrec"
    assert (tmp_path / "run" / "checkpoints" / "rpt_best.pt").is_file()
    # each row against the row above: the change of test NDCG@10 and its paired-bootstrap interval
    assert set(metrics["paired"]) == {"lares vs sasrec", "lares+rpt vs lares"}
    for pair in metrics["paired"].values():
        assert pair["ci_low"] <= pair["change"] <= pair["ci_high"] and pair["users"] == metrics["paired"]["lares vs sasrec"]["users"]
    assert "(95%: " not in table[1] and all("(95%: " in line for line in table[2:]), table
