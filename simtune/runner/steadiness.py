"""Whether a run's step time held still over its measured window.

An experiment's figure is the median step of its window (20 steps on CPU). A run whose step time
moved within that window by more than :data:`MAX_WINDOW_SHIFT` (the medians of the window's two
halves, against the faster) measured a transient rather than the configuration: its first steps
still warming up, or the machine changing speed under it. On 2 CPU processes one configuration's
throughput varies by 3% from run to run (benchmarks/results/measurement_noise.txt), so a 15% shift
is five times that; one such run, whose first 13 steps took 113-132 ms and whose last 7 took
83-99 ms with no other process busy, read 46% below its prediction where the search's two other
runs read 3% and 8%. A search runs such a run once more and keeps the steadier run's figure
(:mod:`simtune.search.verify`, :mod:`simtune.search.measured`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

MAX_WINDOW_SHIFT = 0.15
"""The largest relative change between the medians of a window's two halves of a steady run."""

UNSTEADY_STATUS = "unsteady"
"""The status of a run that succeeded but whose figure a search set aside for a steadier run of the
same configuration (:mod:`simtune.search.verify`, :mod:`simtune.search.measured`)."""

RERUN_SUFFIX = "_rerun"
"""Appended to the name of a run that is run once more because its step time moved."""

RERUN_PHASE = "rerun"
"""The phase such a run is recorded under."""

MIN_WINDOW_STEPS = 8
"""Windows shorter than this are too short to tell a shift from noise: no verdict."""


@dataclass(frozen=True)
class WindowShift:
    """The medians of the first and the second half of a run's measured steps (seconds)."""

    first_s: float
    second_s: float

    @property
    def relative(self) -> float:
        """The change between the halves over the faster half's median."""
        return abs(self.second_s - self.first_s) / min(self.first_s, self.second_s)


def window_shift(step_times_s: Sequence[float] | None) -> WindowShift | None:
    """The two halves' medians of a window of at least :data:`MIN_WINDOW_STEPS` positive step times;
    None when there are too few (or none recorded)."""
    times = [float(t) for t in step_times_s or () if isinstance(t, (int, float)) and t > 0]
    if len(times) < MIN_WINDOW_STEPS:
        return None
    half = len(times) // 2
    return WindowShift(statistics.median(times[:half]), statistics.median(times[-half:]))


def unsteady_shift(step_times_s: Sequence[float] | None) -> WindowShift | None:
    """The window's shift when it exceeds :data:`MAX_WINDOW_SHIFT`; None for a steady run or one
    with too few steps to tell."""
    shift = window_shift(step_times_s)
    return shift if shift is not None and shift.relative > MAX_WINDOW_SHIFT else None


def rerun_notes(name: str, shift: WindowShift) -> tuple[str, str, str]:
    """For run ``name`` run once more because its step time moved by ``shift``: the name of the
    run again, what the search says as it starts, and the start of what its notes keep."""
    again = name + RERUN_SUFFIX
    starting = (f"running {name} once more as {again}: its step time moved {shift.relative:.0%} within its measured "
                "window")
    kept = (f"{name}'s step time moved {shift.relative:.0%} within its measured window ({shift.first_s * 1e3:.1f} ms "
            f"a step in its first half, {shift.second_s * 1e3:.1f} ms in its second), so it ran once more as {again}")
    return again, starting, kept


def shift_note(name: str, shift: WindowShift) -> str:
    """The warning of run ``name`` whose step time moved by ``shift`` within its window."""
    return (f"{name}: its step time moved {shift.relative * 100:.0f}% within the measured window (first half "
            f"{shift.first_s * 1e3:.1f} ms, second half {shift.second_s * 1e3:.1f} ms a step), so its figure, the "
            "window's median, may not be the configuration's steady speed")
