"""The documentation keeps up with the code: every flag of every command is documented on a page, and
every link between the pages leads to a file and heading that exist."""

from __future__ import annotations

import argparse
import re

from deepfake_detector.cli.main import build_parser

from .doc_pages import DOC_PAGES, ROOT


def _flags_by_command() -> dict[str, list[str]]:
    """Every long option of every subcommand, as the CLI's parsers declare them (``--help`` aside)."""
    parser = build_parser()
    (commands,) = (action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return {
        name: [
            option
            for action in subparser._actions
            for option in action.option_strings
            if option.startswith("--") and option != "--help"
        ]
        for name, subparser in commands.choices.items()
    }


def test_every_flag_of_every_command_is_documented():
    text = "\n".join(page.read_text() for page in DOC_PAGES)
    flags = _flags_by_command()
    assert len(flags) >= 11 and "--threshold" in flags["predict"]
    missing = [
        f"{command} {flag}"
        for command, options in flags.items()
        for flag in options
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)
    ]
    assert not missing, "flags documented on no page (README.md, docs/*.md): " + ", ".join(missing)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces become hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    body = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # a "#" line in a code block is no heading
    return {_anchor(line.lstrip("#")) for line in body.splitlines() if re.match(r"#{1,6} ", line)}


def test_links_between_pages_lead_somewhere():
    broken = []
    for page in DOC_PAGES:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readmes_pictures_exist_and_are_small():
    """`make pictures` (docs/make_pictures.py) renders them; they must stay light enough to commit."""
    from PIL import Image

    readme = (ROOT / "README.md").read_text()
    for name in ("scan-report.png", "web-page.png"):
        path = ROOT / "docs" / name
        assert f"docs/{name}" in readme and path.stat().st_size < 400_000
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.width <= 1400
