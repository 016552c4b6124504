"""Collective time against message size (log-log): the measured repeats (fastest, which the fit
uses, and median, with the min-max range) and the fitted curve, one panel per collective, one
colour per scope (intra- or inter-node)."""

from __future__ import annotations

from matplotlib.figure import Figure

from simtune.report.data.calibration import CollectiveFits
from simtune.report.plots.style import new_figure, style_axes, suptitle
from simtune.report.units import size_bytes

SCOPE_COLORS = {"intra-node": "#4C72B0", "inter-node": "#DD8452"}


def draw_calibration(data: CollectiveFits) -> Figure:
    ops = list(dict.fromkeys(s.op for s in data.series))
    columns = 2 if len(ops) > 1 else 1
    rows = (len(ops) + columns - 1) // columns
    figure = new_figure(5.0 * columns, 3.6 * rows + 0.4)
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    flat = [a for row in axes_grid for a in row]
    for axes, op in zip(flat, ops):
        for s in (s for s in data.series if s.op == op):
            color = SCOPE_COLORS.get(s.scope, "black")
            fit = f"{s.latency_s * 1e6:.3g} us + S/{s.bandwidth_bytes_per_s / 1e9:.3g} GB/s bus"
            axes.plot(s.curve_bytes, s.curve_s, color=color, linewidth=1.4, label=f"{s.scope} fit: {fit}")
            if s.point_bytes:
                r2 = "" if s.r2 is None else f", R^2 {s.r2:.3f}"
                axes.vlines(s.point_bytes, s.point_min_s, s.point_max_s, color=color, linewidth=1, alpha=0.6)
                axes.scatter(s.point_bytes, s.point_min_s, color=color, s=16, zorder=3,
                             label=f"{s.scope} fastest repeat (fitted; {s.ranks} ranks{r2})")
                axes.scatter(s.point_bytes, s.point_median_s, facecolors="white", edgecolors=color, s=16, zorder=3,
                             label=f"{s.scope} median (line: min-max)")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_title(op, fontsize=10)
        axes.set_xlabel("message size S (total array)")
        axes.set_ylabel("time per call (s)")
        low, high = axes.get_xlim()
        ticks = [2.0 ** k for k in range(0, 50, 2) if low <= 2.0 ** k <= high]
        ticks = ticks[::max(1, (len(ticks) + 5) // 6)]
        axes.set_xticks(ticks, [size_bytes(t) for t in ticks])
        axes.set_xlim(low, high)
        axes.legend(fontsize=7, frameon=False, loc="upper left")
        style_axes(axes)
    for axes in flat[len(ops):]:
        axes.set_visible(False)
    origin = "measured" if data.kind == "measured" else "spec: no measurements, curves only"
    backend = f", {data.backend}" if data.backend else ""
    suptitle(figure, f"{data.profile}: collective fits ({origin}{backend})", fontsize=11)
    return figure
