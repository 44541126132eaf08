"""The README and docs/ as a reader meets them: every relative link and image names a file that
exists, every #anchor names a heading of its page, and the README stays short enough to read
top to bottom."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 300

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+\1")
# [text](target) and ![alt](target), the target optionally in <...> and followed by a "title"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s)>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * len(opened.group(1))
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
        else:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lowercased, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in a page; a repeated one gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose(page.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """What is wrong with a page's relative links, one line each, with its line number."""
    problems = []
    for number, line in prose(page.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if target.lower().startswith(EXTERNAL):
                continue
            if not target:
                problems.append(f"{page.name}:{number}: an empty link target")
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                problems.append(f"{page.name}:{number}: {target}: no file {file}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                problems.append(
                    f"{page.name}:{number}: {target}: no heading #{anchor} in {file.name}"
                )
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_the_readme_reads_in_minutes():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for _, line in prose(README.read_text(encoding="utf-8"))
        for target in LINK.findall(INLINE_CODE.sub("", line))
    }
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_the_checker_finds_a_broken_link_image_and_anchor(tmp_path):
    (tmp_path / "there.md").write_text("# A page\n\n## Its `second` heading, again\n")
    (tmp_path / "figure.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n## Top\n\n"
        "[fine](there.md#its-second-heading-again) ![fine](figure.png) [fine](#top-1)\n"
        "[web](https://example.org/missing) `[code](missing.md)`\n"
        "```\n[in a fence](missing.md)\n```\n"
        "[gone](missing.md) ![gone](missing.png) [bad anchor](there.md#nowhere) [bad](#top-2)\n"
    )
    problems = broken_links(page)
    assert len(problems) == 4, problems
    assert [p.split(": ")[1] for p in problems] == [
        "missing.md",
        "missing.png",
        "there.md#nowhere",
        "#top-2",
    ]
    assert all(p.startswith("page.md:10:") for p in problems)
