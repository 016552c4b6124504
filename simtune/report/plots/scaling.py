"""Throughput and scaling efficiency against GPU count, one line per profile."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullLocator

from simtune.report.data.scaling import Scaling
from simtune.report.plots.style import COUNT_FORMATTER, new_figure, series_color, style_axes, suptitle


def draw_scaling(data: Scaling) -> Figure:
    figure = new_figure(10.5, 4.2)
    throughput_axes, efficiency_axes = figure.subplots(1, 2)
    counts = sorted({n for s in data.series for n in s.gpus})
    for i, series in enumerate(data.series):
        color = series_color(i)
        points = [(n, t) for n, t in zip(series.gpus, series.throughputs_samples_per_s) if t]
        if points:
            throughput_axes.plot(*zip(*points), marker="o", color=color, label=series.profile)
            for n, t in points:
                nodes = -(-n // series.per_node)
                throughput_axes.annotate(f"{nodes} node{'s' if nodes > 1 else ''}", (n, t), textcoords="offset points",
                                         xytext=(5, -11), fontsize=7, color=color)
            n0, t0 = points[0]
            throughput_axes.plot([n0, counts[-1]], [t0, t0 * counts[-1] / n0], linestyle=":", color=color,
                                 linewidth=1)
        effs = [(n, e) for n, e in zip(series.gpus, series.efficiencies) if e is not None]
        if effs:
            efficiency_axes.plot(*zip(*effs), marker="o", color=color, label=series.profile)
    throughput_axes.plot([], [], linestyle=":", color="grey", label="linear from the smallest count")
    for axes in (throughput_axes, efficiency_axes):
        axes.set_xscale("log", base=2)
        axes.xaxis.set_minor_locator(NullLocator())
        axes.set_xticks(counts, [str(n) for n in counts])
        axes.set_xlabel("GPUs")
        style_axes(axes)
    throughput_axes.set_yscale("log")
    throughput_axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    throughput_axes.yaxis.set_minor_locator(NullLocator())
    throughput_axes.yaxis.set_major_formatter(COUNT_FORMATTER)
    throughput_axes.set_ylabel("predicted throughput (samples/s)")
    throughput_axes.set_title("throughput of the best configuration", fontsize=10)
    throughput_axes.legend(fontsize=8, frameon=False)
    efficiency_axes.set_ylabel("scaling efficiency")
    efficiency_axes.set_ylim(0, 1.15)
    efficiency_axes.axhline(1.0, color="grey", linewidth=0.8)
    efficiency_axes.set_title("throughput(N) / (N/N0 x throughput(N0))", fontsize=10)
    efficiency_axes.legend(fontsize=8, frameon=False, loc="lower left")
    kind = "fixed global batch (strong scaling)" if data.fixed_global_batch else \
        "gradient accumulation 1, the global batch grows with N (weak scaling)"
    suptitle(figure, f"Scaling with GPU count: {kind}", fontsize=11)
    return figure
