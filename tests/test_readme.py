"""The README stays a user's guide that tells the truth: its example of `make run`'s table has the
columns the real table has, it stays short, and it points at nothing outside the repository."""

import re
from pathlib import Path

from lares_rl.eval.report import comparison_table

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_table_header() -> str:
    """The header line of the table under the README's make-run marker."""
    text = README.read_text()
    after = text[text.index("<!-- make-run-table") :]
    return next(line for line in after.splitlines() if line.startswith("| model"))


def test_the_readmes_make_run_table_has_the_real_tables_columns():
    metrics = {"ndcg@10": 0.1, "recall@10": 0.2, "coverage@10": 0.3, "novelty@10": 4.0}  # make run measures all four
    rows = {"sasrec": (metrics, "early stopping"), "lares": (metrics, "early stopping")}
    real = comparison_table(rows, {"lares": "+1.0% (95%: -1.0% .. +3.0%)"})  # make run adds the paired change
    assert readme_table_header() == real.splitlines()[0]


def test_the_readme_is_a_short_guide_inside_the_repository():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert not re.search(r"\.\./", text), "the README points outside the repository"
    assert "MAKE_RUN" not in text
