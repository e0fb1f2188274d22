"""Result rows are labelled by model, the same in every command's table and in metrics.json:
``lares-rl spt policy=sasrec`` prints a ``sasrec`` row, not ``spt`` (the label LARES got too)."""

import json

from lares_rl.commands.spt import spt_test_metrics
from lares_rl.eval.report import checkpoint_label, model_label
from tests.cli_process import TINY_SPT, run_in_process


def test_labels_name_the_model_and_whether_rpt_trained_it():
    assert [model_label("sasrec"), model_label("lares"), model_label("lares", rpt=True), model_label("mostpop")] == [
        "sasrec",
        "lares",
        "lares+rpt",
        "mostpop",
    ]
    assert checkpoint_label({"phase": "rpt", "policy_config": {"name": "lares"}}) == "lares+rpt"
    assert checkpoint_label({"phase": "spt", "policy_config": {"name": "sasrec"}}) == "sasrec"


def test_results_saved_before_the_labels_are_still_read():
    """A `run` resumed now reads the spt_results.json an older version saved under ``spt``."""
    assert spt_test_metrics({"test": {"spt": {"ndcg@10": 0.1}}}, "lares") == {"ndcg@10": 0.1}
    assert spt_test_metrics({"test": {"lares": {"ndcg@10": 0.2}}}, "lares") == {"ndcg@10": 0.2}


def test_spt_of_sasrec_prints_and_writes_a_sasrec_row(tmp_path, monkeypatch, capsys, custom_data_args):
    code, out, err = run_in_process(monkeypatch, capsys, tmp_path, "spt", "policy=sasrec", *custom_data_args, *TINY_SPT, "hydra.run.dir=s")
    assert code == 0, err
    assert "| sasrec |" in out and "| spt |" not in out
    assert set(json.loads((tmp_path / "s" / "metrics.json").read_text())["test"]) == {"sasrec"}
    checkpoint = tmp_path / "s" / "checkpoints" / "spt_best.pt"
    code, out, err = run_in_process(
        monkeypatch, capsys, tmp_path, "eval", f"checkpoint={checkpoint}", "eval.split=valid", "progress=false", "hydra.run.dir=e"
    )
    assert code == 0, err
    assert "| sasrec (valid) |" in out
