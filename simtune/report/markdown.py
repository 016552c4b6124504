"""Render a :class:`~simtune.report.document.Document` as Markdown; figures are PNG files beside it."""

from __future__ import annotations

from simtune.report.document import BulletList, Document, Figure, Paragraph, Preformatted, Section, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    aligns = table.right_aligned or tuple(False for _ in table.headers)
    lines = ["| " + " | ".join(_cell(h) for h in table.headers) + " |",
             "|" + "|".join("---:" if right else ":---" for right in aligns) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    text = "\n".join(lines)
    return f"{text}\n\n*{table.caption}*" if table.caption else text


def block_markdown(block, image_path: str = "{name}.png") -> str:
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, BulletList):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        return table_markdown(block)
    if isinstance(block, Figure):
        return f"![{_cell(block.caption)}]({image_path.format(name=block.name)})\n\n*{block.caption}*"
    if isinstance(block, Preformatted):
        return "```\n" + block.text.rstrip("\n") + "\n```"
    raise TypeError(f"cannot render {type(block).__name__}")


def section_markdown(section: Section) -> str:
    parts = ["#" * section.level + " " + section.title]
    parts += [block_markdown(b) for b in section.blocks]
    return "\n\n".join(parts)


def document_markdown(document: Document) -> str:
    parts = [f"# {document.title}"]
    if document.subtitle:
        parts.append(document.subtitle)
    parts += [section_markdown(s) for s in document.sections]
    return "\n\n".join(parts) + "\n"
