"""The code blocks of the README and the docs/ pages, found by page and heading, for the tests that run
them (so a command that moves between pages stays run)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(page: str, heading: str) -> str:
    """The text of ``page`` (``"README.md"`` or ``"docs/usage.md"``) under ``heading`` (``"## Usage"``,
    matched as a whole line), up to the next heading of the same or a higher level; a ``#`` line
    inside a code block is not a heading."""
    level = len(heading) - len(heading.lstrip("#"))
    lines, inside, fenced = [], False, False
    for line in (ROOT / page).read_text().splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            if inside and len(line) - len(line.lstrip("#")) <= level:
                break
            if line.rstrip() == heading:
                inside = True
                continue
        if inside:
            lines.append(line)
    assert inside, f"{page} has no heading {heading!r}"
    return "".join(lines)


def code_blocks(page: str, heading: str, language: str) -> list[str]:
    """The fenced ``language`` blocks (``console``, ``python``) of one section of a page."""
    return re.findall(rf"^```{language}\n(.*?)^```", section(page, heading), flags=re.S | re.M)
