"""The largest micro-batch size that fits: one search for every place that needs it (the
Predictor, the model's search space, capacity planning).

Memory grows with the micro-batch size (activations and logits are linear in it, nothing else
shrinks), so "fits" is monotone: true up to a boundary and false above it. A doubling search from
the smallest size finds a bracket in about log2(answer / low) evaluations, then a bisection finds
the boundary in about as many again: cheap when the answer is small, and never more than about
2 log2(high / low) + 2 evaluations.
"""

from __future__ import annotations

from typing import Callable, Optional

MAX_MICRO_BATCH_SIZE = 4096
"""The largest micro-batch size per device any search considers when nothing else bounds it."""


def largest_that_fits(fits: Callable[[int], bool], low: int, high: int) -> Optional[int]:
    """The largest ``m`` in ``[low, high]`` with ``fits(m)``, ``fits`` being monotone (true up to a
    boundary, false above it); None when ``low`` does not fit or the range is empty."""
    if high < low or not fits(low):
        return None
    ok, probe = low, max(2 * low, low + 1)
    while probe < high and fits(probe):
        ok, probe = probe, 2 * probe
    if probe >= high:
        if fits(high):
            return high
        probe = high
    bad = probe  # does not fit; ok does
    while bad - ok > 1:
        middle = (ok + bad) // 2
        if fits(middle):
            ok = middle
        else:
            bad = middle
    return ok
