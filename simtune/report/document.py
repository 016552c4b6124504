"""A report as data: sections of paragraphs, tables, figures and preformatted text.

The Markdown and HTML writers render the same :class:`Document`; a :class:`Figure` holds the
small frozen data object of one plot and the function that draws it, so the data can be tested
without drawing and the drawing happens only when a report is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Union


def slug(text: str) -> str:
    """A file-name-safe form of a name: letters, digits, '-', '_' and '.' kept, runs of others as '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "figure"


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class BulletList:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right_aligned: tuple[bool, ...] = ()
    """Per column: numbers read best right-aligned; empty means all left-aligned."""
    caption: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"table row {row!r} has {len(row)} cells for {len(self.headers)} headers")


@dataclass(frozen=True)
class Figure:
    name: str
    """File stem of the PNG (letters, digits, '-' and '_')."""
    caption: str
    data: Any = field(repr=False)
    """The frozen data object the plot is a function of."""
    draw: Callable[[Any], Any] = field(repr=False)
    """data -> matplotlib Figure."""

    def __post_init__(self) -> None:
        if slug(self.name) != self.name:
            raise ValueError(f"figure name {self.name!r} is not a safe file name")


@dataclass(frozen=True)
class Preformatted:
    text: str


Block = Union[Paragraph, BulletList, Table, Figure, Preformatted]


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]
    level: int = 2


@dataclass(frozen=True)
class Document:
    title: str
    sections: tuple[Section, ...]
    subtitle: str = ""

    @property
    def figures(self) -> tuple[Figure, ...]:
        return tuple(b for s in self.sections for b in s.blocks if isinstance(b, Figure))
