"""The results report opens with its headline table, and make_report.py writes only into its output
folder, docs/results/ by default: docs/ keeps the guides people write.

Both run make_report on the committed JSON, in-process and with plotting stubbed (its 41 plots
are most of its half minute; their pixels are not what these tests are about).
"""

import re
import shutil
import sys
from pathlib import Path

import matplotlib.figure

from tests.cli_process import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their helpers as top-level modules

import make_report  # noqa: E402
from report_headline import HEADING, anchor  # noqa: E402

REPORT = ROOT / "docs" / "results" / make_report.REPORT
MODELS = ("SASRec (tuned)", "LARES-SPT", "LARES-SPT+RPT (rpt=expected_pg)")


def headline_table(report: str) -> list[str]:
    """The headline's table lines, after checking that the headline is the report's first section
    and that no table comes before it."""
    lines = report.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("## "))
    assert lines[first] == HEADING, f"the report's first section is {lines[first]!r}, not the headline"
    assert not any(line.startswith("|") for line in lines[:first])
    end = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return [line for line in lines[first:end] if line.startswith("|")]


def cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def test_the_report_opens_with_one_table_of_three_seed_means_per_data_set():
    report = REPORT.read_text()
    table = headline_table(report)
    assert cells(table[0]) == ["data set", "model", "seeds", "test NDCG@10", "test Recall@10", "run (details)"]
    rows = {(row[0], row[1]): row for row in map(cells, table[2:])}
    for data_set in ("ML-100K", "Amazon Beauty"):
        for model in MODELS:
            _, _, seeds, ndcg, recall, link = rows[(data_set, model)]
            assert int(seeds) >= 3 and " ± " in ndcg and " ± " in recall and link.startswith("["), (data_set, model)
    if not list((ROOT / "benchmarks" / "results").glob("amazon2023-instruments__*.json")):
        assert rows[("Amazon 2023 Instruments", "not run yet")] == ["Amazon 2023 Instruments", "not run yet", "0", "-", "-", "-"]
    assert cells(table[2])[0] == "Amazon 2023 Instruments", "the paper's own data set comes first"
    published = rows[("Amazon 2023 Instruments", "LARES (SPT+RPT) (published)")]
    assert published[2:5] == ["-", "0.0336", "0.0636"] and "paper" in published[5]
    heading_anchors = [anchor(line) for line in report.splitlines() if line.startswith("#")]
    fragments = re.findall(r"\]\((#[^)]+)\)", "\n".join(table))
    assert fragments and all(heading_anchors.count(fragment) == 1 for fragment in fragments), fragments


def snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    return {path: (path.stat().st_mtime_ns, path.stat().st_size) for path in folder.rglob("*") if path.is_file()}


def touch_instead_of_drawing(figure: matplotlib.figure.Figure, path, *args, **kwargs) -> None:
    Path(path).write_bytes(b"")


def test_make_report_writes_only_into_its_output_folder_and_the_committed_report_is_current(tmp_path, monkeypatch):
    assert make_report.build_parser().get_default("docs") == ROOT / "docs" / "results"
    results, out = tmp_path / "results", tmp_path / "out"
    shutil.copytree(ROOT / "benchmarks" / "results", results, ignore=shutil.ignore_patterns("*.lock"))
    shutil.copytree(ROOT / "docs" / "results", out, ignore=shutil.ignore_patterns("*.lock"))
    before, repo_results, repo_docs = snapshot(tmp_path), snapshot(ROOT / "docs" / "results"), sorted((ROOT / "docs").iterdir())
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", touch_instead_of_drawing)
    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", lambda figure, *args, **kwargs: None)
    monkeypatch.setattr(sys, "argv", ["make_report.py", "--results", str(results), "--docs", str(out)])

    make_report.main()

    after = snapshot(tmp_path)
    written = [path for path in after if before.get(path) != after[path]]
    assert (out / make_report.REPORT) in written and all(path.is_relative_to(out) for path in written), written
    assert snapshot(ROOT / "docs" / "results") == repo_results and sorted((ROOT / "docs").iterdir()) == repo_docs
    assert headline_table((out / make_report.REPORT).read_text()) == headline_table(REPORT.read_text()), (
        "docs/results/README.md does not show what the JSON holds: run python benchmarks/make_report.py"
    )
