"""The user's pages: the README stays a page (at most 250 lines) and every link in it and in docs/ resolves."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) with a relative target; web addresses and in-page anchors are not files.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+://|#|mailto:", t)]


def test_readme_is_a_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_link_resolves(page):
    missing = [t for t in links(page) if not (page.parent / t.split("#")[0]).resolve().exists()]
    assert not missing, f"{page.relative_to(REPO)} links to files that do not exist: {missing}"


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](nowhere.md) [b](https://example.org) [c](#anchor)")
    assert links(page) == ["nowhere.md"]
