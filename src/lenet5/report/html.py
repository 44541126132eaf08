"""`lenet5-report --html`: the report as one self-contained HTML file a colleague can open
offline: the Markdown report's headings, lists and tables, the figures embedded as data
URIs, links into the MLflow UI, and the study's config as the sweep recorded it.

The Markdown is the report's own (render.py / render_tuned.py write it), so only what those
write is converted: headings, `- ` items, pipe tables, paragraphs, `code`, **bold** and
links. No file beside it is needed, nothing is fetched: no script, no stylesheet link.
"""

from __future__ import annotations

import base64
import html
import re

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #1b1b1b; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
code, pre { background: #f6f6f6; border-radius: 3px; }
pre { padding: 0.6rem; overflow-x: auto; }
img { max-width: 100%; border: 1px solid #ddd; }
.worse { color: #a40000; } .better { color: #006b1b; } .equivalent { color: #1f4e9c; }
"""

_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)"), r'<a href="\2">\1</a>'),
    (re.compile(r"\b(worse|better|equivalent)\b"), r'<span class="\1">\1</span>'),
]


def inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(x) for x in lines[2:]]
    rows = ["<tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body]
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def markdown_to_html(text: str) -> str:
    """The report's Markdown as HTML (the subset render.py and render_tuned.py write)."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out.append(_table(lines[i:j]))
            i = j
            continue
        if line.startswith("- "):
            j = i
            while j < len(lines) and lines[j].startswith("- "):
                j += 1
            out.append("<ul>" + "".join(f"<li>{inline(x[2:])}</li>" for x in lines[i:j]) + "</ul>")
            i = j
            continue
        heading = re.match(r"(#{1,4}) (.*)", line)
        if heading:
            n = len(heading.group(1))
            out.append(f"<h{n}>{inline(heading.group(2))}</h{n}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


def page(
    title: str,
    markdown: str,
    figures: list[bytes],
    links: list[tuple[str, str]],
    config: list[tuple[str, str]],
) -> str:
    """The whole file: `links` (label, URL) into the MLflow UI, `config` (name, text) the
    study's recorded files, shown as they are."""
    parts = [markdown_to_html(markdown)]
    if figures:
        parts.append("<h2>Figures</h2>")
    for png in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<p><img alt="a figure of the report" src="data:image/png;base64,{data}"></p>'
        )
    if links:
        items = "".join(
            f'<li><a href="{html.escape(u)}">{html.escape(t)}</a></li>' for t, u in links
        )
        parts.append(f"<h2>In the MLflow UI</h2>\n<ul>{items}</ul>")
    if config:
        parts.append("<h2>The study as the sweep recorded it</h2>")
    for name, text in config:
        parts.append(f"<h3>{html.escape(name)}</h3>\n<pre>{html.escape(text)}</pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
