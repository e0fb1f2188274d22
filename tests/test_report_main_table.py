"""The report's table on the paper's data: every run and RPT setting as a row with the paper's
columns, the published rows beside, and each target judged with its margin, only at 3 seeds."""

import sys

from tests.cli_process import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their helpers as top-level modules

from report_compatibility import compatibility_section  # noqa: E402
from report_main_table import METRICS, main_table_section  # noqa: E402

DATASET = "amazon2023-instruments"
CHECKPOINT = "benchmarks/runs/{name}/seed{seed}/checkpoints/spt_best.pt"


def metrics(ndcg10: float, recall10: float) -> dict:
    return {metric: recall10 if metric == "recall@10" else ndcg10 if metric == "ndcg@10" else 0.01 for metric in METRICS}


def spt_run(policy: str, tag: str, ndcg: list[float], similarity: str = "dot", positive_gradient: bool = True) -> dict:
    name = f"{DATASET}__{policy}{tag}__dense-bucketed__L20"
    spt = {"similarity": similarity, "temperature": 1.0 if similarity == "dot" else 0.07, "alpha": 0.1, "gamma": 0.5}
    seeds = [
        {
            "seed": seed,
            "test": metrics(value, 2 * value),
            "valid": metrics(value + 0.001, 2 * value),
            "core_hours": 2.0,
            "core_hours_clock": "cpu",
            "cpu_seconds_per_epoch": 360.0,
            "seconds_per_epoch": 400.0,
            "peak_rss_mb": 900.0,
            "epochs_run": 20,
            "best_epoch": 9,
        }
        for seed, value in enumerate(ndcg)
    ]
    spt |= {"positive_gradient": positive_gradient, "bucket_by_length": True, "patience": 10}
    return {"name": name, "dataset": DATASET, "policy": policy, "mode": "dense", "max_len": 20, "spt": spt, "seeds": seeds}


def rpt_record(algorithm: str, reward: str, start: str, before: list[float], after: list[float]) -> dict:
    seeds = [
        {
            "seed": seed,
            "spt_checkpoint": CHECKPOINT.format(name=start, seed=seed),
            "before": {"test": metrics(b, 2 * b), "valid": metrics(b, 2 * b)},
            "after": {"test": metrics(a, 2 * a), "valid": metrics(a, 2 * a)},
            "rpt": {"seconds": 3600.0, "epochs_run": 12, "best_epoch": 1},
        }
        for seed, (b, a) in enumerate(zip(before, after))
    ]
    return {"dataset": DATASET, "rpt": {"algorithm": algorithm}, "reward": reward, "seeds": seeds}


def section(runs, records) -> str:
    return "\n".join(main_table_section(runs, [(ROOT / f"docs/results/rpt_{i}.json", record) for i, record in enumerate(records)]))


def test_every_run_and_rpt_setting_is_a_row_with_the_papers_columns_and_the_published_rows():
    lares = spt_run("lares", "", [0.030, 0.031, 0.032])
    runs = [
        spt_run("sasrec", "", [0.026, 0.026, 0.026]),
        lares,
        spt_run("lares", "_defaults", [0.029], similarity="cosine", positive_gradient=False),
        spt_run("mostpop", "", [0.013, 0.013, 0.013]),
    ]
    records = [
        rpt_record("expected_pg", "ndcg@10", lares["name"], [0.030, 0.031, 0.032], [0.031, 0.032, 0.033]),
        rpt_record("grpo", "recall@10", lares["name"], [0.030], [0.0305]),
    ]
    text = section(runs, records)
    test_table = text.split("### Amazon 2023 Instruments: validation")[0]
    rows = [line for line in test_table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | seeds | Recall@5 | Recall@10 | Recall@20 | NDCG@5 | NDCG@10 | NDCG@20 | cost per seed")
    names = [row.split(" | ")[0].lstrip("| ") for row in rows[1:]]
    assert names[:2] == ["Most-popular", "SASRec"], "the floor first, then the baseline"
    assert "LARES-SPT, reference alignment (dot, tau 1, alpha 0.1, gamma 0.5)" in names
    assert "LARES-SPT, project alignment (cosine, tau 0.07, alpha 0.1, gamma 0.5)" in names
    assert any(name.startswith("LARES-SPT+RPT, rpt=expected_pg, reward ndcg@10") for name in names)
    assert any(name.startswith("LARES-SPT+RPT, rpt=grpo, reward recall@10") for name in names)
    assert (
        "- LARES-SPT, project alignment (cosine, tau 0.07, alpha 0.1, gamma 0.5): spt.similarity cosine (dot), "
        "spt.bucket_by_length True (False), spt.positive_gradient False (True)." in text
    ), "each LARES row names where it departs from preset=paper"
    port = next(row for row in rows if row.startswith("| LARES (published: the authors' RecBole 3.0 port)"))
    assert port.split(" | ")[2:6] == ["0.0388", "0.0610", "-", "0.0246"]
    assert "2.00 core-h, 360 s/epoch CPU, 900 MB peak, best epoch 10 of 20" in test_table
    assert "1.00 core-h (wall), best validation interval 2 of 12" in test_table  # recorded before the RPT CPU clock
    records[0]["seeds"][0]["rpt"] |= {"cpu_seconds": 1800.0, "resumed": True}
    for row in records[0]["seeds"][1:]:
        row["rpt"]["cpu_seconds"] = 1800.0
    assert "0.50 core-h, resumed part, best validation interval 2 of 12" in section(runs, records)


def test_targets_are_judged_with_their_margin_at_three_seeds_and_not_before():
    lares = spt_run("lares", "", [0.030, 0.030, 0.030])
    runs = [spt_run("sasrec", "", [0.025, 0.025, 0.025]), lares]
    text = section(runs, [rpt_record("expected_pg", "ndcg@10", lares["name"], [0.030] * 3, [0.0306] * 3)])
    assert "LARES-SPT+RPT NDCG@10 0.0306 against the paper's 0.0336: -0.0030 (-8.9%), misses the target" in text
    assert "LARES-SPT+RPT Recall@10 0.0612 against the paper's 0.0636" in text
    assert "RPT over its SPT start (same seeds), test NDCG@10: +2.0%, misses the +3% target by 1.0 points" in text
    assert "LARES-SPT over SASRec, test NDCG@10: +20.0%, meets the +5% target" in text
    one_seed = section([spt_run("sasrec", "", [0.025]), spt_run("lares", "", [0.030])], [])
    assert "LARES-SPT over SASRec, test NDCG@10: +20.0% on 1 seed(s), not judged before 3" in one_seed
    assert "No LARES run on this data set yet" in section([spt_run("sasrec", "", [0.025])], [])


def test_the_compatibility_study_pairs_each_backbone_plain_with_lares_on_it():
    def beauty(policy: str, backbone: str, ndcg: list[float], tag: str) -> dict:
        run = spt_run(policy, tag, ndcg) | {"dataset": "amazon-beauty", "max_len": 50, "policy_config": {"backbone": backbone}}
        run["name"] = run["name"].replace(DATASET, "amazon-beauty").replace("L20", "L50")
        for seed in run["seeds"]:
            seed["test_masked"] = metrics(2 * seed["test"]["ndcg@10"], 0.1)
        return run

    runs = [
        beauty("sasrec", "bsarec", [0.030, 0.030, 0.030], "_bsarec"),
        beauty("lares", "bsarec", [0.033, 0.033, 0.033], "_bsarec"),
        beauty("lares", "bsarec", [0.020, 0.020, 0.020], "_bsarec_bad"),  # worse on validation: not the chosen side
        beauty("sasrec", "fmlp", [0.025], "_fmlp"),
        beauty("sasrec", "sasrec", [0.030, 0.030, 0.030], ""),  # the plain SASRec setting is the main table's, not a pair here
    ]
    rows = [line for line in compatibility_section(runs) if line.startswith("| amazon-beauty")]
    assert [row.split(" | ")[3:5] for row in rows] == [
        ["bsarec", "plain"],
        ["bsarec", "LARES"],
        ["bsarec", "BSARec paper, L=50, history masked (published)"],
        ["fmlp", "plain"],
        ["fmlp", "LARES"],
    ]
    assert rows[1].endswith("| 3 | 0.0330 ± 0.0000 | 0.0660 ± 0.0000 | 0.0660 ± 0.0000 | 0.1000 ± 0.0000 | +10.0% / +10.0% |")
    assert "| 0.0611 | 0.1008 |" in rows[2] and rows[4].endswith("| 0 | not run yet | - | - | - | - |")
