"""A profile's collective fits: the measured times against message size and the fitted curve

    t(S) = latency_s + bus_factor(op, n) * S / bandwidth_bytes_per_s

(S the total array in bytes, n the ranks it was fitted on; nccl-tests doc/PERFORMANCE.md). Spec
profiles have no measurements: only their curve, over 1 KiB to 1 GiB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from simtune.hardware.profile import COLLECTIVE_OPS, CollectiveFit, HardwareProfile

CURVE_POINTS = 60
SPEC_RANGE_BYTES = (2.0**10, 2.0**30)


@dataclass(frozen=True)
class CollectiveSeries:
    op: str
    scope: str
    """"intra-node" or "inter-node"."""
    ranks: int
    latency_s: float
    bandwidth_bytes_per_s: float
    r2: Optional[float]
    point_bytes: tuple[float, ...]
    point_median_s: tuple[float, ...]
    point_min_s: tuple[float, ...]
    point_max_s: tuple[float, ...]
    curve_bytes: tuple[float, ...]
    curve_s: tuple[float, ...]


@dataclass(frozen=True)
class CollectiveFits:
    profile: str
    kind: str
    backend: Optional[str]
    series: tuple[CollectiveSeries, ...]
    note: str


def _log_grid(low: float, high: float, n: int = CURVE_POINTS) -> tuple[float, ...]:
    a, b = math.log10(low), math.log10(high)
    return tuple(10 ** (a + (b - a) * i / (n - 1)) for i in range(n))


def collective_series(fit: CollectiveFit, scope: str) -> CollectiveSeries:
    points = sorted(fit.points, key=lambda p: p.bytes)
    if points:
        low, high = points[0].bytes / 2, points[-1].bytes * 2
    else:
        low, high = SPEC_RANGE_BYTES
    grid = _log_grid(max(low, 1.0), max(high, 2.0))
    return CollectiveSeries(
        op=fit.op, scope=scope, ranks=fit.ranks, latency_s=fit.latency_s,
        bandwidth_bytes_per_s=fit.bandwidth_bytes_per_s, r2=fit.r2,
        point_bytes=tuple(float(p.bytes) for p in points), point_median_s=tuple(p.stats.median_s for p in points),
        point_min_s=tuple(p.stats.min_s for p in points), point_max_s=tuple(p.stats.max_s for p in points),
        curve_bytes=grid, curve_s=tuple(fit.time_s(b) for b in grid))


def collective_fits(profile: HardwareProfile) -> CollectiveFits:
    c = profile.collectives
    series = []
    if c.applicable:
        for scope, table in (("intra-node", c.intra_node), ("inter-node", c.inter_node)):
            for op in COLLECTIVE_OPS:
                if op in table:
                    series.append(collective_series(table[op], scope))
    return CollectiveFits(profile.name, profile.kind, c.backend, tuple(series), c.note)
