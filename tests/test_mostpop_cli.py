"""policy=mostpop end to end through the CLI: SPT fits it without epochs, eval reads its checkpoint."""

import json

from tests.cli_process import run_cli
from tests.synthetic import write_sequential_csv


def test_spt_fits_mostpop_without_epochs_and_eval_reads_its_checkpoint(tmp_path):
    data = [f"dataset.path={write_sequential_csv(tmp_path / 'log.csv')}", "dataset=custom", "dataset.user_col=uid"]
    data += ["dataset.item_col=sku", "dataset.time_col=ts", "dataset.max_len=8", "progress=false"]
    trained = run_cli(tmp_path, "spt", "policy=mostpop", *data, "hydra.run.dir=run")
    assert trained.returncode == 0, trained.stderr
    assert "[spt] MostPopular has no trainable parameters" in trained.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["spt"]["epochs_run"] == 0 and 0 < metrics["test"]["spt"]["recall@10"] <= 1
    evaluated = run_cli(tmp_path, "eval", f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'spt_best.pt'}", *data, "hydra.run.dir=eval")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]["ndcg@10"] == metrics["test"]["spt"]["ndcg@10"]
