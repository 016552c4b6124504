"""Render a :class:`~simtune.report.document.Document` as one standalone HTML page.

Everything is inside the file: the style sheet inline and every figure a base64 PNG data URI, so
the page opens anywhere (offline, as an e-mail attachment) and loads nothing from elsewhere.
Text in backticks becomes ``<code>``; everything else is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Mapping

from simtune.report.document import BulletList, Document, Figure, Paragraph, Preformatted, Section, Table

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #4C72B0; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .15em; margin-top: 2em; }
.table { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; vertical-align: top; white-space: nowrap; }
th { background: #f0f3f8; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .caption { color: #555; font-size: .9em; font-style: italic; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
code { background: #f6f8fa; padding: 0 .2em; }
nav ul { columns: 2; }
""".strip()

_CODE = re.compile(r"`([^`]+)`")


def inline(text: str) -> str:
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table_html(table: Table) -> str:
    aligns = table.right_aligned or tuple(False for _ in table.headers)
    head = "".join(f"<th>{inline(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{inline(c)}</td>' if right else f"<td>{inline(c)}</td>"
                                    for c, right in zip(row, aligns)) + "</tr>" for row in table.rows)
    caption = f'<p class="caption">{inline(table.caption)}</p>' if table.caption else ""
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{caption}'


def block_html(block, images: Mapping[str, bytes]) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, BulletList):
        return "<ul>" + "".join(f"<li>{inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return table_html(block)
    if isinstance(block, Figure):
        caption = html.escape(block.caption)
        return (f'<figure><img src="{data_uri(images[block.name])}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>")
    if isinstance(block, Preformatted):
        return f"<pre>{html.escape(block.text)}</pre>"
    raise TypeError(f"cannot render {type(block).__name__}")


def _anchor(index: int) -> str:
    return f"section-{index + 1}"


def section_html(section: Section, index: int, images: Mapping[str, bytes]) -> str:
    level = min(6, section.level)
    title = f'<h{level} id="{_anchor(index)}">{inline(section.title)}</h{level}>'
    return "\n".join([title, *(block_html(b, images) for b in section.blocks)])


def document_html(document: Document, images: Mapping[str, bytes]) -> str:
    """``images``: figure name -> PNG bytes."""
    contents = "".join(f'<li><a href="#{_anchor(i)}">{inline(s.title)}</a></li>'
                       for i, s in enumerate(document.sections) if s.level == 2)
    subtitle = f"<p>{inline(document.subtitle)}</p>" if document.subtitle else ""
    sections = "\n".join(section_html(s, i, images) for i, s in enumerate(document.sections))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(document.title)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
            f"<h1>{inline(document.title)}</h1>\n{subtitle}\n<nav><ul>{contents}</ul></nav>\n{sections}\n"
            f"</body>\n</html>\n")
