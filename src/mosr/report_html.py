"""Self-contained HTML reports from a small subset of Markdown, with PNGs embedded as base64.

Write the report once as Markdown (``report.md`` next to its PNGs), then call
:func:`markdown_to_html` to get one HTML file that can be mailed or archived on its own.

Every piece of text is HTML-escaped (quotes included), and links and images accept only http(s) URLs and
relative paths, so strings from a run folder, a config or the command line cannot inject markup.

Supported Markdown: ``#``-``####`` headings, paragraphs, ``-``/``*`` bullet lists, fenced code
blocks, pipe tables (header + ``---`` separator row), images ``![alt](file.png)`` (embedded when the
file exists), inline ``code``, ``**bold**``, ``*italic*`` and ``[links](url)``.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from mosr.runs import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
line-height:1.45;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}pre{background:#f4f4f4;padding:.8em;overflow-x:auto}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}figure{margin:1em 0}figcaption{font-size:.9em;color:#555}
h1,h2,h3{line-height:1.2}
"""


def data_uri(path: str | os.PathLike[str]) -> str:
    """``data:`` URI of a file (PNG, SVG, JPEG...)."""
    p = Path(path)
    mime = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode('ascii')}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A pipe table; cells are converted with ``str`` and pipes escaped."""

    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def safe_url(url: str) -> bool:
    """Only http(s) links and relative paths (anchors included); ``javascript:``, ``data:`` and the rest stay text.

    Control characters are refused too: browsers drop them, so ``\x01javascript:`` would become a live link.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return False
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return False
    return scheme in ("", "http", "https")


def _inline(text: str, base_dir: Path | None) -> str:
    """Escape everything, then turn the supported Markdown marks back into tags (attribute values quoted and escaped)."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part, quote=True)

        def image(m: re.Match[str]) -> str:
            alt, src = html.unescape(m.group(1)), html.unescape(m.group(2))
            path = (base_dir / src) if base_dir is not None and safe_url(src) and not src.startswith(("http://", "https://", "#")) else None
            if path is not None and path.is_file():
                url = data_uri(path)
            elif safe_url(src):
                url = src
            else:
                return m.group(0)
            return f'<img alt="{html.escape(alt)}" src="{html.escape(url)}">'

        def link(m: re.Match[str]) -> str:
            label, url = m.group(1), html.unescape(m.group(2))
            if not safe_url(url):
                return m.group(0)
            return f'<a href="{html.escape(url)}">{label}</a>'

        s = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", image, s)
        s = re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", link, s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", s)
        out.append(s)
    return "".join(out)


def _split_row(line: str) -> list[str]:
    body = line.strip().strip("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def markdown_to_html(markdown: str, *, title: str = "report", base_dir: str | os.PathLike[str] | None = None) -> str:
    """Render the supported Markdown subset to one self-contained HTML page."""
    base = Path(base_dir) if base_dir is not None else None
    lines = markdown.splitlines()
    out: list[str] = []
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para), base) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1 : j])) + "</code></pre>")
            i = j + 1
            continue
        if not stripped:
            flush()
            i += 1
            continue
        m = re.match(r"^(#{1,4})\s+(.*)$", stripped)
        if m:
            flush()
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2), base)}</h{level}>")
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-{3,}", lines[i + 1].strip()):
            flush()
            head = _split_row(stripped)
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                rows.append(_split_row(lines[j]))
                j += 1
            table = ["<table><thead><tr>" + "".join(f"<th>{_inline(h, base)}</th>" for h in head) + "</tr></thead><tbody>"]
            table += ["<tr>" + "".join(f"<td>{_inline(c, base)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("".join(table) + "</tbody></table>")
            i = j
            continue
        if re.match(r"^[-*]\s+", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append("<li>" + _inline(re.sub(r"^\s*[-*]\s+", "", lines[i]), base) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        para.append(stripped)
        i += 1
    flush()
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
    )


def write_html_report(markdown: str, path: str | os.PathLike[str], *, title: str = "report", base_dir: str | os.PathLike[str] | None = None) -> Path:
    """Render ``markdown`` (images relative to ``base_dir``, default the output folder) into ``path``."""
    path = Path(path)
    atomic_write_text(path, markdown_to_html(markdown, title=title, base_dir=base_dir if base_dir is not None else path.parent))
    return path
