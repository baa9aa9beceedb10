"""The README is a newcomer's page (and the Space's): short, and every link and image in it and
in docs/ leads somewhere."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)|src=\"([^\"]+)\"")


def test_the_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines: move details to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    text = page.read_text(encoding="utf-8")
    targets = [a or b for a, b in LINK.findall(text)]
    missing = [t for t in targets if not t.startswith(("http://", "https://", "mailto:"))
               and not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to {missing}"


def test_the_readme_links_every_docs_page():
    """A page no one can reach from the README is a page no newcomer finds."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {p for p in re.findall(r"\]\((docs/[^)#]+)", readme) if p.endswith(".md")}
    reachable = set(linked)
    for page in linked:  # one hop: pages the README's pages link to
        text = (REPO / page).read_text(encoding="utf-8")
        base = (REPO / page).parent
        reachable |= {str((base / t).resolve().relative_to(REPO)) for t, _ in LINK.findall(text)
                      if t.endswith(".md") and (base / t).exists() and str((base / t).resolve()).startswith(str(REPO))}
    pages = {str(p.relative_to(REPO)) for p in PAGES if p.parent.name != "screenshots" and p.name != "README.md"}
    assert pages <= reachable, f"not reachable from the README: {sorted(pages - reachable)}"
