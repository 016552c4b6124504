"""Shared look of every plot: figures made without pyplot (no global state, the Agg canvas),
one colour per ZeRO stage and per profile, PNG output."""

from __future__ import annotations

import io
import textwrap

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

STAGE_COLORS = {0: "#4C72B0", 1: "#DD8452", 2: "#55A868", 3: "#C44E52"}
SERIES_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
DPI = 110


def new_figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def series_color(index: int) -> str:
    return SERIES_COLORS[index % len(SERIES_COLORS)]


def count_label(value: float) -> str:
    """1.5B, 350M, 3T for tick labels."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


COUNT_FORMATTER = FuncFormatter(lambda value, _pos: count_label(value))


def style_axes(axes) -> None:
    axes.grid(True, which="major", alpha=0.3)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def gpus_label(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


def suptitle(figure: Figure, text: str, fontsize: float = 11) -> None:
    """The figure's title, wrapped to the figure's width (about 11 characters per inch at 11 pt)."""
    width_in = figure.get_figwidth()
    figure.suptitle(textwrap.fill(text, max(30, int(width_in * 120 / fontsize))), fontsize=fontsize)
