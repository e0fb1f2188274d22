"""Every relative link in README.md and the docs points at a file that exists.

Generated pages move (docs/results/), guides link them, and a reader who follows a dead link
stops reading; this catches the move that forgot a link, offline and in milliseconds.
"""

import re
from pathlib import Path

import pytest

from tests.cli_process import ROOT

INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*\b(?:href|src)=\"([^\"]+)\"")
FENCED_CODE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """The link targets of a markdown page that name a file of the repository: no URL, no
    ``mailto:``, no bare ``#section``; links shown as code (fenced or inline) are not links."""
    text = INLINE_CODE.sub("", FENCED_CODE.sub("", text))
    targets = [next(filter(None, m.groups())) for pattern in (INLINE_LINK, REFERENCE_LINK, HTML_LINK) for m in pattern.finditer(text)]
    return [target for target in targets if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target) and not target.startswith("#")]


def test_relative_links_are_found_and_urls_skipped():
    page = (
        '[a](docs/DESIGN.md) ![plot](results/x.png) [b](<with space.md> "title") [web](https://x.org/a.md) '
        "[mail](mailto:a@b.c) [here](#section) `[code](not/a/link.md)`\n```\n[fenced](nor/this.md)\n```\n"
        '[ref]: ../guide.md#part\n<img src="pic.png">'
    )
    assert relative_links(page) == ["docs/DESIGN.md", "results/x.png", "with space.md", "../guide.md#part", "pic.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file(page: Path):
    dead = [target for target in relative_links(page.read_text()) if not (page.parent / target.split("#", 1)[0]).exists()]
    assert not dead, f"{page.relative_to(ROOT)} links files that do not exist: {dead}"
