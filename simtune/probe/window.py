"""Bookkeeping of the measured window: step boundaries and the forward/backward/step split.

Pure Python, no torch: the instrument feeds it times, it turns them into per-step numbers.

Optimizer step ``k`` (numbered from 1) lasts from the boundary that ends step ``k - 1`` to the
boundary that ends step ``k``; boundary 0 is the moment ``deepspeed.initialize`` returned. A step
boundary is the end of the ``engine.step()`` call that advanced ``engine.global_steps``.
For steps ``start..end`` the window keeps each step's end-to-end time
(``boundary[k] - boundary[k-1]``: data loading, the Python loop and every micro-step included)
and the time spent inside ``forward``, ``backward`` and ``step`` calls, summed over the step's
micro-steps.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

SPLIT_KINDS = ("fwd", "bwd", "step")


@dataclass
class StepWindow:
    start: int
    end: int
    boundaries_s: dict[int, float] = field(default_factory=dict)
    splits_s: dict[int, dict[str, float]] = field(default_factory=dict)

    def measures(self, step: int) -> bool:
        """Whether optimizer step ``step`` (the one in progress) lies in the window."""
        return self.start <= step <= self.end

    def needs_boundary(self, completed_step: int) -> bool:
        """Whether the boundary ending ``completed_step`` is one the window's times are built from."""
        return self.start - 1 <= completed_step <= self.end

    def add_split(self, step: int, kind: str, seconds: float) -> None:
        sums = self.splits_s.setdefault(step, dict.fromkeys(SPLIT_KINDS, 0.0))
        sums[kind] += seconds

    def mark_boundary(self, completed_step: int, time_s: float) -> None:
        self.boundaries_s[completed_step] = time_s

    @property
    def complete(self) -> bool:
        return self.end in self.boundaries_s and self.start - 1 in self.boundaries_s

    def step_times_s(self) -> list[float]:
        """End-to-end time of each step ``start..end``."""
        b = self.boundaries_s
        return [b[k] - b[k - 1] for k in range(self.start, self.end + 1)]

    def split_medians_s(self) -> dict[str, float]:
        """Median over the window's steps of each kind's per-step sum."""
        steps = range(self.start, self.end + 1)
        empty = dict.fromkeys(SPLIT_KINDS, 0.0)
        return {
            kind: statistics.median(self.splits_s.get(k, empty)[kind] for k in steps)
            for kind in SPLIT_KINDS
        }
