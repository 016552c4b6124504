"""Predicted throughput against micro-batch size per ZeRO stage, one panel per GPU count."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from simtune.report.data.micro_batch import MicroBatchStudy
from simtune.report.plots.style import STAGE_COLORS, gpus_label, new_figure, style_axes, suptitle


STAGE_MARKERS = {0: "o", 1: "s", 2: "^", 3: "D"}


def _ticks(largest: int) -> list[int]:
    """Powers of two up to the largest size, thinned to at most eight labels."""
    ticks = [2 ** k for k in range(max(1, largest).bit_length())]
    step = max(1, (len(ticks) + 7) // 8)
    return ticks[::step]


def draw_micro_batch(data: MicroBatchStudy) -> Figure:
    panels = data.panels
    figure = new_figure(2.4 + 2.9 * len(panels), 4.2)
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel in zip(axes_list, panels):
        drawn = [c for c in panel.curves if c.micro_batch_sizes]
        for curve in sorted(drawn, key=lambda c: -c.stage):  # lower stages on top where curves coincide
            style = "--" if curve.checkpointing else "-"
            axes.plot(curve.micro_batch_sizes, curve.throughputs_samples_per_s, linestyle=style,
                      marker=STAGE_MARKERS.get(curve.stage, "o"), markersize=3.5, color=STAGE_COLORS[curve.stage],
                      linewidth=1.4, markerfacecolor="white" if curve.checkpointing else STAGE_COLORS[curve.stage])
        if not drawn:
            axes.text(0.5, 0.5, "nothing fits", transform=axes.transAxes, ha="center", va="center")
        axes.set_xscale("log", base=2)
        axes.xaxis.set_minor_locator(NullLocator())
        ticks = _ticks(max((max(c.micro_batch_sizes) for c in drawn), default=1))
        axes.set_xticks(ticks, [str(t) for t in ticks])
        axes.set_title(gpus_label(panel.gpus), fontsize=10)
        axes.set_xlabel("micro-batch size per GPU")
        axes.set_ylim(bottom=0)
        style_axes(axes)
    axes_list[0].set_ylabel("predicted throughput (samples/s, all GPUs)")
    drawn_stages = {c.stage for p in panels for c in p.curves if c.micro_batch_sizes}
    handles = [Line2D([], [], color=STAGE_COLORS[s], marker=STAGE_MARKERS.get(s, "o"), linewidth=2,
                      label=f"ZeRO-{s}" + ("" if s in drawn_stages else " (does not fit)"))
               for s in data.stages]
    handles += [Line2D([], [], color="black", linestyle="-", label="no checkpointing"),
                Line2D([], [], color="black", linestyle="--", label="activation\ncheckpointing")]
    figure.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    suptitle(figure, f"{data.profile}: throughput by micro-batch size ({data.precision}, gradient accumulation 1, "
                    f"best knobs, no offload)", fontsize=11)
    return figure
