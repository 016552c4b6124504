"""Stacked memory per GPU by term, one bar per ZeRO stage, one panel per GPU count."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from simtune.report.data.memory import MemoryBreakdown
from simtune.report.plots.style import gpus_label, new_figure, style_axes, suptitle

GIB = 2**30
TERM_COLORS = ("#4C72B0", "#8DA0CB", "#DD8452", "#F2B880", "#55A868", "#A6D854", "#C44E52", "#E78AC3",
               "#8172B3", "#B3B3B3", "#666666")


def draw_memory(data: MemoryBreakdown) -> Figure:
    panels = data.panels
    figure = new_figure(2.6 + 2.3 * len(panels), 4.6)
    axes_list = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    used = [i for i in range(len(data.term_labels)) if any(bars[i] for p in panels for bars in p.terms_bytes)]
    top = max(max(p.totals_bytes) for p in panels) / GIB
    ceiling = max(top, data.device_bytes / GIB) * 1.12
    headroom = data.limit_bytes < data.device_bytes  # the profile keeps memory back: draw the device memory too
    for axes, panel in zip(axes_list, panels):
        x = list(range(len(panel.stages)))
        bottoms = [0.0] * len(x)
        for i in used:
            heights = [terms[i] / GIB for terms in panel.terms_bytes]
            axes.bar(x, heights, bottom=bottoms, color=TERM_COLORS[i % len(TERM_COLORS)], width=0.7,
                     edgecolor="white", linewidth=0.4)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        axes.axhline(data.limit_bytes / GIB, color="#C00000", linewidth=1.4)
        if headroom:
            axes.axhline(data.device_bytes / GIB, color="#C00000", linewidth=1.0, linestyle="--")
        for xi, total, fits in zip(x, panel.totals_bytes, panel.fits):
            label = f"{total / GIB:.1f}" + ("" if fits else "\ntoo big")
            axes.text(xi, min(total / GIB, ceiling * 0.97) + ceiling * 0.012, label, ha="center", va="bottom",
                      fontsize=8, color="black" if fits else "#C00000",
                      bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
        axes.set_xticks(x, [f"ZeRO-{s}" for s in panel.stages])
        axes.set_title(gpus_label(panel.gpus), fontsize=10)
        axes.set_ylim(0, ceiling * 1.08)
        style_axes(axes)
    axes_list[0].set_ylabel("memory per GPU (GiB)")
    handles = [Patch(color=TERM_COLORS[i % len(TERM_COLORS)], label=data.term_labels[i]) for i in reversed(used)]
    if headroom:
        handles += [Line2D([], [], color="#C00000", linewidth=1.4,
                           label=f"the limit: usable + fixed overhead ({data.limit_bytes / GIB:.1f} GiB)"),
                    Line2D([], [], color="#C00000", linestyle="--",
                           label=f"device memory ({data.device_bytes / GIB:.0f} GiB)")]
    else:
        handles.append(Line2D([], [], color="#C00000", linewidth=1.4,
                              label=f"the limit: device memory ({data.device_bytes / GIB:.0f} GiB)"))
    figure.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    suptitle(figure, f"{data.profile}: memory per GPU at micro-batch size {data.micro_batch_size} "
                    f"({data.precision}, DeepSpeed default knobs)", fontsize=11)
    return figure
