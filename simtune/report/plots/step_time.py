"""Time per sample of the best configuration by term: one horizontal stacked bar per profile and GPU
count, the step's terms divided by the samples one GPU processes per step, so configurations with
different micro-batch sizes compare."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from simtune.report.data.best_config import StepTimeBars
from simtune.report.plots.style import new_figure, style_axes, suptitle

TERM_COLORS = ("#4C72B0", "#8DA0CB", "#A6D854", "#C44E52", "#DD8452", "#8172B3", "#B3B3B3")


def draw_step_time(data: StepTimeBars) -> Figure:
    figure = new_figure(10.0, 1.6 + 0.5 * max(1, len(data.labels)))
    axes = figure.subplots()
    ys = list(range(len(data.labels)))[::-1]
    lefts = [0.0] * len(ys)
    for i, label in enumerate(data.term_labels):
        widths = [terms[i] * 1e3 / n for terms, n in zip(data.terms_s, data.samples_per_gpu)]
        if not any(widths):
            continue
        axes.barh(ys, widths, left=lefts, color=TERM_COLORS[i % len(TERM_COLORS)], label=label, height=0.6)
        lefts = [a + b for a, b in zip(lefts, widths)]
    for y, step, n in zip(ys, data.steps_s, data.samples_per_gpu):
        note = f" {step * 1e3 / n:.3g} ms/sample (step {step * 1e3:.4g} ms for {n} sample{'s' if n > 1 else ''})"
        axes.text(step * 1e3 / n, y, note, va="center", ha="left", fontsize=8)
    axes.set_yticks(ys, [label.replace("\n", ", ") for label in data.labels])
    axes.set_xlabel("predicted time per sample on one GPU (ms) = step time / samples per GPU per step")
    axes.margins(x=0.45)
    style_axes(axes)
    handles = [Patch(color=TERM_COLORS[i], label=l) for i, l in enumerate(data.term_labels)
               if any(t[i] for t in data.terms_s)]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8, frameon=False)
    suptitle(figure, "Time per sample of the best configuration, by term", fontsize=11)
    return figure
