"""Time and GPU-hours (and cost) to train the budget, bars grouped by GPU count, one colour per profile."""

from __future__ import annotations

from matplotlib.figure import Figure

from simtune.report.data.training_cost import TrainingCost
from simtune.report.plots.style import count_label, new_figure, series_color, style_axes, suptitle


def _bar_label(value: float, money: bool) -> str:
    text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    return f"${text}" if money else text


def _time_unit(values_s: list[float]) -> tuple[str, float]:
    longest = max(values_s, default=0.0)
    if longest >= 3 * 86400:
        return "days", 86400.0
    if longest >= 2 * 3600:
        return "hours", 3600.0
    return "minutes", 60.0


def draw_training_cost(data: TrainingCost) -> Figure:
    profiles = list(dict.fromkeys(r.profile for r in data.runs))
    counts = sorted({r.gpus for r in data.runs})
    priced = data.price_usd_per_gpu_hour is not None
    panels = 3 if priced else 2
    figure = new_figure(3.6 * panels + 1.0, 4.2)
    axes_list = figure.subplots(1, panels)
    unit, scale = _time_unit([r.time_s for r in data.runs if r.time_s])
    width = 0.8 / max(1, len(profiles))
    quantities = [("time to train", unit, lambda r: r.time_s / scale if r.time_s else None),
                  ("GPU-hours", "GPU-hours", lambda r: r.gpu_hours)]
    if priced:
        quantities.append(("cost", "US dollars", lambda r: r.cost_usd))
    for k, (axes, (title, label, value)) in enumerate(zip(axes_list, quantities)):
        for i, profile in enumerate(profiles):
            runs = {r.gpus: r for r in data.runs if r.profile == profile}
            xs, heights = [], []
            for j, n in enumerate(counts):
                v = value(runs[n]) if n in runs else None
                if v is not None:
                    xs.append(j + (i - (len(profiles) - 1) / 2) * width)
                    heights.append(v)
            axes.bar(xs, heights, width=width * 0.95, color=series_color(i), label=profile)
            for x, h in zip(xs, heights):
                axes.text(x, h, _bar_label(h, k == 2), ha="center", va="bottom", fontsize=7)
        axes.set_xticks(range(len(counts)), [str(n) for n in counts])
        axes.set_xlabel("GPUs")
        axes.set_ylabel(label)
        axes.set_title(title, fontsize=10)
        axes.margins(y=0.12)
        style_axes(axes)
    axes_list[0].legend(fontsize=8, frameon=False)
    price = f", ${data.price_usd_per_gpu_hour:g} per GPU-hour" if priced else ""
    suptitle(figure, f"Training {count_label(data.budget.tokens)} tokens ({count_label(data.budget.samples)} samples)"
                    f"{price}",
                    fontsize=11)
    return figure
