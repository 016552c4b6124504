"""Predicted against measured metric values, with the y = x line."""

from __future__ import annotations

from matplotlib.figure import Figure

from simtune.report.data.accuracy import PredictedVsMeasured
from simtune.report.plots.style import new_figure, style_axes

LABELLED_POINTS = 30


def draw_accuracy(data: PredictedVsMeasured) -> Figure:
    figure = new_figure(6.0, 5.4)
    axes = figure.subplots()
    measured = [p.measured for p in data.points]
    predicted = [p.predicted for p in data.points]
    low = min(measured + predicted) * 0.9
    high = max(measured + predicted) * 1.1
    axes.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="grey", alpha=0.12,
                      label="within 10%")
    axes.plot([low, high], [low, high], color="black", linewidth=1, label="predicted = measured")
    axes.scatter(measured, predicted, color="#4C72B0", zorder=3, label="experiment")
    if len(data.points) <= LABELLED_POINTS:  # numbered as in the report's table
        for number, p in enumerate(data.points, 1):
            axes.annotate(str(number), (p.measured, p.predicted), textcoords="offset points", xytext=(4, 3),
                          fontsize=8)
    if high / low > 20:
        axes.set_xscale("log")
        axes.set_yscale("log")
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_aspect("equal", adjustable="box")
    unit = f" ({data.unit})" if data.unit else ""
    axes.set_xlabel(f"measured {data.metric}{unit}")
    axes.set_ylabel(f"predicted {data.metric}{unit}")
    mae = data.mean_absolute_error
    axes.set_title(f"Predicted vs measured, {len(data.points)} experiments"
                   + (f", mean |error| {100 * mae:.1f}%" if mae is not None else ""), fontsize=10)
    figure.legend(fontsize=8, frameon=False, loc="outside lower center", ncols=3)
    style_axes(axes)
    return figure
