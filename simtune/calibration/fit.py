"""Least-squares fits of the calibration measurements (numpy/scipy, no torch).

Every fit is a straight line ``y = intercept + slope * x`` with ``intercept >= 0`` and
``slope >= 0``, solved by bounded linear least squares (``scipy.optimize.lsq_linear``),
unweighted, so the large sizes that dominate training time are fitted best. R^2 is
``1 - SS_res / SS_tot`` on the fitted times. Measurements are fitted on the fastest repeat of each
size: on a shared or oversubscribed machine a blocked rank can wait a scheduler tick (~4 ms)
before it runs again, which lands in medians at random sizes and is not the hardware's cost
(see docs/calibration.md for the study).

Collectives (nccl-tests ``doc/PERFORMANCE.md``): ``t = latency_s + w / bandwidth_bytes_per_s`` with
``w = bus_factor(op, n) * S`` the bytes on the busiest link for a total array of ``S`` bytes
(allreduce 2(n-1)/n, allgather and reduce-scatter (n-1)/n, broadcast 1), so the fitted bandwidth
is the bus bandwidth, comparable across rank counts and with the link's per-direction speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import lsq_linear

from simtune.errors import SimtuneError
from simtune.hardware.profile import CollectiveFit, CollectivePoint, Stats, bus_factor


class FitError(SimtuneError):
    """Measurements that no straight line with non-negative intercept and positive slope fits."""


@dataclass(frozen=True)
class LineFit:
    intercept: float
    slope: float
    r2: float


def r_squared(y: Sequence[float], predicted: Sequence[float]) -> float:
    """Coefficient of determination; 1.0 when the data have no spread and are matched exactly."""
    y = np.asarray(y, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    ss_res = float(np.sum((y - predicted) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def fit_line(x: Sequence[float], y: Sequence[float], what: str = "measurement") -> LineFit:
    """``y = intercept + slope * x`` with intercept >= 0 and slope > 0 (bounded least squares)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.size < 2 or np.unique(x).size < 2:
        raise FitError(f"The {what} fit needs at least two different sizes, got {x.size} point(s).")
    # Scale both axes to order one so the solver's tolerances mean the same for bytes and seconds.
    x_scale = float(np.max(np.abs(x))) or 1.0
    y_scale = float(np.max(np.abs(y))) or 1.0
    design = np.column_stack([np.ones_like(x), x / x_scale])
    solution = lsq_linear(design, y / y_scale, bounds=([0.0, 0.0], [np.inf, np.inf]), method="bvls")
    intercept = float(solution.x[0]) * y_scale
    slope = float(solution.x[1]) * y_scale / x_scale
    if not slope > 0.0:
        raise FitError(f"The {what} times did not grow with size, so no bandwidth can be fitted (rerun calibration).")
    return LineFit(intercept=intercept, slope=slope, r2=r_squared(y, intercept + slope * x))


def stats_from_dict(raw: dict) -> Stats:
    return Stats(
        min_s=float(raw["min_s"]),
        median_s=float(raw["median_s"]),
        max_s=float(raw["max_s"]),
        repeats=int(raw["repeats"]),
    )


def fit_collective(op: str, ranks: int, dtype: str, points: Sequence[CollectivePoint]) -> CollectiveFit:
    """Latency and bus bandwidth of one collective from its measured points (total array sizes)."""
    points = tuple(sorted(points, key=lambda p: p.bytes))
    factor = bus_factor(op, ranks)
    line = fit_line([factor * p.bytes for p in points], [p.stats.min_s for p in points], what=f"{op} collective")
    return CollectiveFit(
        op=op,
        ranks=ranks,
        dtype=dtype,
        latency_s=line.intercept,
        bandwidth_bytes_per_s=1.0 / line.slope,
        r2=line.r2,
        points=points,
    )
