"""Predicted against measured for every configuration a search both predicted and ran.

    error = (predicted - measured) / measured

(signed: positive when the model promised more than the run delivered, for a higher-is-better
metric). The mean absolute error is the mean of |error|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from simtune.report.search_results import SearchRecord
from simtune.runner.steadiness import UNSTEADY_STATUS



@dataclass(frozen=True)
class PredictionPoint:
    name: str
    predicted: float
    measured: float

    @property
    def error(self) -> float:
        return (self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class PredictedVsMeasured:
    metric: str
    unit: str
    points: tuple[PredictionPoint, ...]
    failed_predicted: tuple[str, ...]
    """Predicted configurations whose run failed (no measurement to compare)."""

    @property
    def mean_absolute_error(self) -> Optional[float]:
        if not self.points:
            return None
        return sum(abs(p.error) for p in self.points) / len(self.points)


def predicted_vs_measured(record: SearchRecord) -> PredictedVsMeasured:
    points = tuple(PredictionPoint(e.name, e.predicted, e.measured) for e in record.experiments
                   if e.predicted is not None and e.measured is not None and e.measured != 0)
    failed = tuple(e.name for e in record.experiments
                   if e.predicted is not None and e.measured is None and e.status != UNSTEADY_STATUS)
    return PredictedVsMeasured(record.metric, record.spec.unit, points, failed)
