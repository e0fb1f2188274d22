"""The table the report opens with: per data set, test NDCG@10 and Recall@10 of the tuned SASRec,
LARES-SPT and LARES-SPT+RPT (the default ``rpt=expected_pg``), each row linking the section that
holds its command and the rest of its numbers.

A reader who opens the report wants the answer before the detail. Which run fills a row is a rule
applied to the JSON, never a hand pick, and test never chooses:

- LARES-SPT+RPT: the ``rpt=expected_pg`` runs of one setting (same data set, RPT settings, reward
  and SPT run) pool their seeds, so seeds written to separate files (``--out ..._seed0``) count
  together; the setting with the most seeds (up to 3) wins, then the best mean validation NDCG@10.
- LARES-SPT: the SPT run that setting started from, so the two rows differ by RPT alone (when that
  run is not among the results, the LARES run with the most seeds and best validation NDCG@10).
- SASRec: the run tagged ``tuned`` (the equal-budget search's winner) on the LARES run's max_len
  and training scheme, else the SASRec run with the most seeds and best validation NDCG@10.
- Most-popular (``policy=mostpop``), the floor any model must clear, where it was run.

The paper's own data set (Amazon 2023 Instruments) comes first, with the published numbers beside
ours and marked as published, so a reader sees at once how far the reproduction is from the paper.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from results_io import mean_std, training_scheme, variant_tag

DATA_SETS = {"amazon2023-instruments": "Amazon 2023 Instruments", "ml-100k": "ML-100K", "amazon-beauty": "Amazon Beauty"}
# Published full-ranking test numbers on the same data and protocol (leave-one-out, max length 20,
# history not masked): model -> (NDCG@10 or None where the source gives none, Recall@10, source).
PUBLISHED = {
    "amazon2023-instruments": {
        "SASRec": (None, 0.0536, "LARES paper, main table"),
        "DuoRec (the paper's best baseline)": (None, 0.0598, "LARES paper, main table"),
        "LARES (SPT+RPT)": (0.0336, 0.0636, "LARES paper, main table"),
        "LARES": (0.0318, 0.0610, "the authors' RecBole 3.0 port"),
    }
}
RPT_ALGORITHM = "expected_pg"  # the default RL post-training (configs/config.yaml)
HEADING = "## Headline: test quality per data set"


def anchor(heading: str) -> str:
    """The link fragment GitHub gives a markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.lstrip("#").strip().lower()
    return "#" + re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def quality_heading(dataset: str) -> str:
    """The heading of a data set's table in the quality section, where every SPT run's command is."""
    return f"### Test quality on {dataset}"


def rpt_heading(dataset: str, stem: str) -> str:
    """The heading of one RPT record's subsection in the RPT section."""
    return f"### {dataset}: {stem}"


def spt_run_name(seed_row: dict) -> str:
    """The SPT run an RPT seed started from: ``<runs>/<name>/seed<N>/checkpoints/spt_best.pt`` -> ``<name>``."""
    return Path(seed_row["spt_checkpoint"]).parts[-4]


def _valid_mean(rows: list[dict], split: str = "valid") -> float:
    return statistics.mean(row[split]["ndcg@10"] for row in rows)


def most_seeds_then_valid(runs: list[dict]) -> dict | None:
    """The run with the most seeds (3 is enough) and, among those, the best mean validation NDCG@10."""
    return max(runs, key=lambda run: (min(len(run["seeds"]), 3), _valid_mean(run["seeds"])), default=None)


def rpt_settings(records: list[tuple[Path, dict]]) -> list[tuple[list[Path], list[dict]]]:
    """RPT records grouped by setting (data set, RPT settings, reward, SPT run): each group's files
    and its seed rows, one per seed."""
    groups: dict[str, tuple[list[Path], dict[int, dict]]] = {}
    for path, record in records:
        sources = sorted({spt_run_name(row) for row in record["seeds"]})
        key = json.dumps([record["dataset"], record["rpt"], record["reward"], sources], sort_keys=True)
        paths, seeds = groups.setdefault(key, ([], {}))
        paths.append(path)
        for row in record["seeds"]:
            seeds.setdefault(row["seed"], row)
    return [(paths, [seeds[seed] for seed in sorted(seeds)]) for paths, seeds in groups.values()]


def _cells(rows: list[dict], side: str | None = None) -> str:
    """``seeds | NDCG@10 | Recall@10`` over the seed rows (RPT rows read their ``after`` side)."""
    test = [row[side]["test"] if side else row["test"] for row in rows]
    return f"{len(rows)} | {mean_std([t['ndcg@10'] for t in test])} | {mean_std([t['recall@10'] for t in test])}"


def chosen_rpt(rpt_records: list[tuple[Path, dict]]) -> tuple[list[Path], list[dict]] | None:
    """The ``rpt=expected_pg`` setting with the most seeds (3 is enough), then the best mean validation NDCG@10 after RPT."""
    settings = rpt_settings([(path, record) for path, record in rpt_records if record["rpt"]["algorithm"] == RPT_ALGORITHM])
    return max(settings, key=lambda setting: (min(len(setting[1]), 3), _valid_mean([row["after"] for row in setting[1]])), default=None)


def chosen_lares(runs: list[dict], rpt: tuple[list[Path], list[dict]] | None) -> dict | None:
    """The SPT run the chosen RPT setting started from, else the LARES run with the most seeds and best validation."""
    lares_runs = [run for run in runs if run["policy"] == "lares"]
    start = spt_run_name(rpt[1][0]) if rpt else None
    return next((run for run in lares_runs if run["name"] == start), None) or most_seeds_then_valid(lares_runs)


def chosen_sasrec(runs: list[dict], lares: dict | None) -> dict | None:
    """The SASRec run tagged ``tuned`` on the LARES run's max_len and training scheme, else the one with the most seeds and best validation."""
    same_budget = [
        run
        for run in runs
        if run["policy"] == "sasrec"
        and (lares is None or (run["max_len"], training_scheme(run)) == (lares["max_len"], training_scheme(lares)))
    ]
    return next((run for run in same_budget if variant_tag(run) == "tuned"), None) or most_seeds_then_valid(same_budget)


def data_set_rows(dataset: str, runs: list[dict], rpt_records: list[tuple[Path, dict]]) -> list[str]:
    """The rows of one data set: the most-popular floor where it was run, SASRec, LARES-SPT,
    LARES-SPT+RPT, then the published numbers (one "not run yet" row when it has no runs at all)."""
    name = DATA_SETS.get(dataset, dataset)
    if not runs and not rpt_records:
        return [f"| {name} | not run yet | 0 | - | - | - |", *published_rows(dataset)]
    rpt = chosen_rpt(rpt_records)
    lares = chosen_lares(runs, rpt)
    sasrec = chosen_sasrec(runs, lares)
    mostpop = most_seeds_then_valid([run for run in runs if run["policy"] == "mostpop"])
    rows = (
        [f"| {name} | Most-popular | {_cells(mostpop['seeds'])} | [{mostpop['name']}]({anchor(quality_heading(dataset))}) |"]
        if mostpop
        else []
    )
    for model, run in (("SASRec (tuned)" if sasrec and variant_tag(sasrec) == "tuned" else "SASRec", sasrec), ("LARES-SPT", lares)):
        if run is None:
            rows.append(f"| {name} | {model} | 0 | not run yet | - | - |")
        else:
            rows.append(f"| {name} | {model} | {_cells(run['seeds'])} | [{run['name']}]({anchor(quality_heading(dataset))}) |")
    model = f"LARES-SPT+RPT (rpt={RPT_ALGORITHM})"
    if rpt is None:
        rows.append(f"| {name} | {model} | 0 | not run yet | - | - |")
    else:
        paths, seeds = rpt
        links = ", ".join(f"[{path.stem}]({anchor(rpt_heading(dataset, path.stem))})" for path in paths)
        rows.append(f"| {name} | {model} | {_cells(seeds, 'after')} | {links} |")
    return rows + published_rows(dataset)


def published_rows(dataset: str) -> list[str]:
    """The published rows of one data set, marked as published and naming their source."""
    name = DATA_SETS.get(dataset, dataset)
    return [
        f"| {name} | {model} (published) | - | {'-' if ndcg is None else f'{ndcg:.4f}'} | {recall:.4f} | {source} |"
        for model, (ndcg, recall, source) in PUBLISHED.get(dataset, {}).items()
    ]


def headline_section(runs: list[dict], rpt_records: list[tuple[Path, dict]]) -> list[str]:
    """The opening table over the named data sets, then any other data set the results hold."""
    found = sorted({run["dataset"] for run in runs} | {record["dataset"] for _, record in rpt_records})
    lines = [
        HEADING,
        "",
        "| data set | model | seeds | test NDCG@10 | test Recall@10 | run (details) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for dataset in [*DATA_SETS, *(dataset for dataset in found if dataset not in DATA_SETS)]:
        lines += data_set_rows(
            dataset,
            [run for run in runs if run["dataset"] == dataset],
            [(path, record) for path, record in rpt_records if record["dataset"] == dataset],
        )
    return lines + [
        "",
        "Full ranking, history not masked, mean ± sample std over seeds. How each row is chosen (test never chooses): "
        f"LARES-SPT+RPT pools the `rpt={RPT_ALGORITHM}` runs of one setting (data set, RPT settings, reward, SPT run; seeds written "
        "to separate files count together) and takes the setting with the most seeds (up to 3), then the best mean validation "
        "NDCG@10; LARES-SPT is the SPT run it started from, so the two rows differ by RPT alone; SASRec is the run tagged `tuned` "
        "(the equal-budget search's winner) on the same max_len and training scheme. Where a rule finds no such run, the run of the "
        "model with the most seeds and the best mean validation NDCG@10 stands in. The linked sections give each run's command "
        "and machine. Most-popular is deterministic (its seeds agree). Rows marked published are the sources' numbers on the "
        "same data and protocol, not runs of this project.",
        "",
    ]
