"""policy=mostpop end to end through the CLI (in this process): SPT fits it without epochs, eval reads its checkpoint."""

import json

from tests.cli_process import run_in_process
from tests.synthetic import write_sequential_csv


def test_spt_fits_mostpop_without_epochs_and_eval_reads_its_checkpoint(tmp_path, monkeypatch, capsys):
    data = [f"dataset.path={write_sequential_csv(tmp_path / 'log.csv')}", "dataset=custom", "dataset.user_col=uid"]
    data += ["dataset.item_col=sku", "dataset.time_col=ts", "dataset.max_len=8", "progress=false"]
    code, out, err = run_in_process(monkeypatch, capsys, tmp_path, "spt", "policy=mostpop", *data, "hydra.run.dir=run")
    assert code == 0, err
    assert "[spt] MostPopular has no trainable parameters" in out and "| mostpop |" in out  # its row labelled by model
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["spt"]["epochs_run"] == 0 and 0 < metrics["test"]["mostpop"]["recall@10"] <= 1
    checkpoint = tmp_path / "run" / "checkpoints" / "spt_best.pt"
    code, _, err = run_in_process(monkeypatch, capsys, tmp_path, "eval", f"checkpoint={checkpoint}", *data, "hydra.run.dir=eval")
    assert code == 0, err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]["ndcg@10"] == metrics["test"]["mostpop"]["ndcg@10"]
