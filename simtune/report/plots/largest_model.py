"""The largest model of the family that fits: bars grouped by GPU count, one colour per ZeRO stage,
one hatching per offload mode, one panel per profile; grey lines mark the published sizes."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from simtune.prediction.planning import OFFLOAD_MODES
from simtune.report.data.largest_model import LargestModels
from simtune.report.plots.style import COUNT_FORMATTER, STAGE_COLORS, new_figure, style_axes, suptitle

OFFLOAD_HATCHES = {"none": "", "optimizer": "///", "optimizer+parameters": "xxx"}


def draw_largest_model(data: LargestModels) -> Figure:
    profiles = list(dict.fromkeys(c.profile for c in data.cells))
    figure = new_figure(2.8 + 4.2 * len(profiles), 4.8)
    axes_list = figure.subplots(1, len(profiles), sharey=True, squeeze=False)[0]
    combos = sorted({(c.stage, c.offload) for c in data.cells}, key=lambda so: (so[0], OFFLOAD_MODES.index(so[1])))
    width = 0.84 / max(1, len(combos))
    floor = min(data.parameters) / 2 if data.parameters else 1.0
    for axes, profile in zip(axes_list, profiles):
        counts = sorted({c.gpus for c in data.cells if c.profile == profile})
        for j, (stage, offload) in enumerate(combos):
            xs, heights = [], []
            for i, n in enumerate(counts):
                cell = data.cell(profile, n, stage, offload)
                if cell is not None and cell.index is not None:
                    xs.append(i + (j - (len(combos) - 1) / 2) * width)
                    heights.append(data.parameters[cell.index])
            axes.bar(xs, [h - floor for h in heights], bottom=floor, width=width * 0.92,
                     color=STAGE_COLORS[stage], hatch=OFFLOAD_HATCHES[offload], edgecolor="white", linewidth=0)
        for parameters, label, extrapolated in zip(data.parameters, data.labels, data.extrapolated):
            if not extrapolated:
                axes.axhline(parameters, color="grey", linewidth=0.7, alpha=0.6, zorder=0)
                if axes is axes_list[-1]:
                    axes.text(1.0, parameters, f" {label}", transform=axes.get_yaxis_transform(), fontsize=7,
                              va="center", ha="left", color="dimgrey", clip_on=False)
        axes.set_xticks(range(len(counts)), [str(n) for n in counts])
        axes.set_xlabel("GPUs")
        axes.set_title(profile, fontsize=10)
        style_axes(axes)
        axes.grid(False, axis="x")
    axes_list[0].set_yscale("log")
    tallest = max((data.parameters[c.index] for c in data.cells if c.index is not None), default=floor * 10)
    axes_list[0].set_ylim(floor, max(tallest, max(data.parameters[:1], default=floor)) * 1.8)
    axes_list[0].yaxis.set_major_formatter(COUNT_FORMATTER)
    axes_list[0].set_ylabel("parameters of the largest model that fits")
    stages = sorted({s for s, _ in combos})
    handles = [Patch(color=STAGE_COLORS[s], label=f"ZeRO-{s}") for s in stages]
    handles += [Patch(facecolor="#999999", hatch=OFFLOAD_HATCHES[o], edgecolor="white", label=f"offload: {o}")
                for o in OFFLOAD_MODES if any(off == o for _, off in combos)]
    figure.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    suptitle(figure, f"Largest {data.family} model that fits (micro-batch size 1; grey lines: published sizes)",
                    fontsize=11)
    return figure
