import math

import pytest

from simtune.prediction.largest_fit import largest_that_fits


class Counted:
    """fits(m) for a boundary, counting the calls."""

    def __init__(self, boundary):
        self.boundary, self.calls = boundary, 0

    def __call__(self, m):
        self.calls += 1
        return m <= self.boundary


@pytest.mark.parametrize("low,high", [(1, 1), (1, 2), (1, 7), (1, 100), (3, 64), (5, 4096)])
def test_finds_every_boundary_the_range_can_hold(low, high):
    for boundary in range(low - 1, high + 2):
        fits = Counted(boundary)
        expected = None if boundary < low else min(boundary, high)
        assert largest_that_fits(fits, low, high) == expected, (low, high, boundary)
        assert fits.calls <= 2 * math.ceil(math.log2(high - low + 2)) + 3


def test_an_empty_range_fits_nothing():
    assert largest_that_fits(Counted(10), 5, 4) is None


def test_a_small_answer_costs_few_evaluations_under_a_large_limit():
    fits = Counted(3)
    assert largest_that_fits(fits, 1, 4096) == 3
    assert fits.calls <= 5  # 1, 2, 4 (no), then 3: not a bisection of the whole range
