"""Write a report: every figure drawn once to a PNG beside ``report.md``, and ``report.html`` with
the same PNGs embedded, so the HTML stands alone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from simtune.atomic import write_atomically
from simtune.errors import InputError
from simtune.report.document import Document
from simtune.report.html import document_html
from simtune.report.markdown import document_markdown
from simtune.report.plots.style import png_bytes

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"


@dataclass(frozen=True)
class WrittenReport:
    folder: Path
    markdown_path: Path
    html_path: Path
    image_paths: tuple[Path, ...]


def _write(path: Path, content: bytes) -> None:
    """Atomically: a reader never sees half a file."""
    write_atomically(path, content)


def render_images(document: Document) -> dict[str, bytes]:
    names = [f.name for f in document.figures]
    if len(names) != len(set(names)):
        raise ValueError(f"figure names repeat: {names}")
    return {f.name: png_bytes(f.draw(f.data)) for f in document.figures}


def write_report(document: Document, out_dir: str | os.PathLike) -> WrittenReport:
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create the report folder {folder} ({exc.strerror}).") from None
    images = render_images(document)
    paths = []
    for name, png in images.items():
        path = folder / f"{name}.png"
        _write(path, png)
        paths.append(path)
    markdown_path, html_path = folder / MARKDOWN_FILE, folder / HTML_FILE
    _write(markdown_path, document_markdown(document).encode("utf-8"))
    _write(html_path, document_html(document, images).encode("utf-8"))
    return WrittenReport(folder, markdown_path, html_path, tuple(paths))
