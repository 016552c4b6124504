"""Least-squares fits on synthetic data with a known answer."""

import numpy as np
import pytest

from simtune.calibration import FitError, fit_collective, fit_line, r_squared
from simtune.hardware import CollectivePoint, Stats, bus_factor


def _point(elements: int, seconds: float) -> CollectivePoint:
    return CollectivePoint(elements, 4 * elements, Stats(seconds, seconds, seconds, 3))


@pytest.mark.parametrize("op", ["allreduce", "allgather", "reduce_scatter", "broadcast"])
@pytest.mark.parametrize("ranks", [2, 8])
def test_collective_fit_recovers_latency_and_bus_bandwidth(op, ranks):
    latency_s, bandwidth = 3e-4, 2.5e9
    sizes = [2**16, 2**18, 2**20, 2**22]
    points = [_point(n, latency_s + bus_factor(op, ranks) * 4 * n / bandwidth) for n in sizes]
    fit = fit_collective(op, ranks, "fp32", points)
    assert fit.latency_s == pytest.approx(latency_s, rel=1e-6)
    assert fit.bandwidth_bytes_per_s == pytest.approx(bandwidth, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0)
    assert [p.elements for p in fit.points] == sizes  # raw points kept next to the fit
    times = [fit.time_s(4 * n) for n in sizes]
    assert times == sorted(times) and times[0] < times[-1]


def test_noisy_fit_stays_physical_and_reports_r2():
    rng = np.random.default_rng(0)
    x = np.array([2.0**k for k in range(15, 23)]) * 4
    truth = 1e-4 + x / 1.5e9
    y = truth * rng.uniform(0.9, 1.1, size=x.size)
    line = fit_line(x, y)
    assert line.intercept >= 0 and line.slope > 0
    assert 1 / line.slope == pytest.approx(1.5e9, rel=0.15)
    assert 0.95 < line.r2 <= 1.0


def test_latency_is_clamped_at_zero():
    # Data whose straight line would cross below zero: the bounded fit keeps latency >= 0.
    x = np.array([1e6, 2e6, 4e6, 8e6])
    y = x / 1e9 - 5e-4
    y[0] = 1e-5
    line = fit_line(x, y)
    assert line.intercept == 0.0 and line.slope > 0


def test_flat_times_cannot_give_a_bandwidth():
    with pytest.raises(FitError, match="did not grow with size"):
        fit_line([1e3, 1e4, 1e5], [2e-3, 1e-3, 5e-4])
    with pytest.raises(FitError, match="at least two different sizes"):
        fit_line([1e3, 1e3], [1e-3, 2e-3])


def test_r_squared():
    assert r_squared([1, 2, 3], [1, 2, 3]) == 1.0
    assert r_squared([1, 2, 3], [2, 2, 2]) == pytest.approx(0.0)
    assert r_squared([1, 1], [1, 1]) == 1.0
