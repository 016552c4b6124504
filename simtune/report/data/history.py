"""The search history: the metric of each experiment in the order it finished, and the best so far
(the highest, or the lowest for latency); failed experiments have no value and keep the best."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from simtune.metrics import Metric
from simtune.report.search_results import SearchRecord


@dataclass(frozen=True)
class SearchHistory:
    metric: str
    unit: str
    lower_is_better: bool
    names: tuple[str, ...]
    values: tuple[Optional[float], ...]
    best_so_far: tuple[Optional[float], ...]
    statuses: tuple[str, ...]
    predicted: tuple[Optional[float], ...]


def best_so_far(values: tuple[Optional[float], ...], metric: Metric) -> tuple[Optional[float], ...]:
    best: Optional[float] = None
    out = []
    for v in values:
        if v is not None and metric.better(v, best):
            best = v
        out.append(best)
    return tuple(out)


def search_history(record: SearchRecord) -> SearchHistory:
    values = tuple(e.measured for e in record.experiments)
    return SearchHistory(record.metric, record.spec.unit, record.lower_is_better,
                         tuple(e.name for e in record.experiments), values,
                         best_so_far(values, record.spec), tuple(e.status for e in record.experiments),
                         tuple(e.predicted for e in record.experiments))
