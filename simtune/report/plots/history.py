"""The search history: each experiment's metric in order, failures marked, the best so far."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from simtune.report.data.history import SearchHistory
from simtune.report.plots.style import new_figure, style_axes

LABELLED_POINTS = 16


def draw_history(data: SearchHistory) -> Figure:
    figure = new_figure(8.5, 4.2)
    axes = figure.subplots()
    xs = list(range(1, len(data.values) + 1))
    ok = [(x, v) for x, v in zip(xs, data.values) if v is not None]
    failed = [x for x, v in zip(xs, data.values) if v is None]
    if ok:
        axes.scatter(*zip(*ok), color="#4C72B0", zorder=3, label="measured")
    best = [(x, b) for x, b in zip(xs, data.best_so_far) if b is not None]
    if best:
        axes.step(*zip(*best), where="post", color="#55A868", linewidth=1.6, label="best so far")
    predicted = [(x, p) for x, p in zip(xs, data.predicted) if p is not None]
    if predicted:
        axes.scatter(*zip(*predicted), facecolors="none", edgecolors="#DD8452", zorder=3, label="predicted")
    values = [v for _, v in ok] + [p for _, p in predicted]
    floor = min(values) * 0.9 if values else 0.0
    if failed:
        axes.scatter(failed, [floor] * len(failed), marker="x", color="#C44E52", zorder=3,
                     label="failed (" + ", ".join(sorted({s for s, v in zip(data.statuses, data.values)
                                                           if v is None})) + ")")
    if len(xs) <= LABELLED_POINTS:
        for x, v, name in zip(xs, data.values, data.names):
            axes.annotate(name, (x, v if v is not None else floor), textcoords="offset points", xytext=(0, 6),
                          fontsize=7, ha="center", rotation=20)
    axes.margins(x=0.08, y=0.15)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("experiment (in the order it finished)")
    unit = f" ({data.unit})" if data.unit else ""
    direction = "lower is better" if data.lower_is_better else "higher is better"
    axes.set_ylabel(f"{data.metric}{unit}")
    axes.set_title(f"Search history: {data.metric}, {direction}", fontsize=10)
    axes.legend(fontsize=8, frameon=False)
    style_axes(axes)
    return figure
