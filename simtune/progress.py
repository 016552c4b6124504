"""Progress lines while a search runs: one line per event, on stderr, standard library only.

Each experiment gives a start line and an end line::

    simtune: [2/3] z1_gas1_tmbspg8 running
    simtune: [3/3] z1_gas1_tmbspg8 ok  throughput 812.3 samples/s  (best so far: z1_gas1_tmbspg8 812.3)
    simtune: [3/4] z1_gas1_tmbspg16 running
    simtune: [4/4] z1_gas1_tmbspg16 oom  out of memory: 1.6 GB > budget 1.5 GB

``[done/known]``: experiments finished, of those the search has planned so far. ``known`` grows as
the search discovers more to run (the micro-batch search cannot know its length in advance).
"""

from __future__ import annotations

import sys
from typing import TextIO

from simtune.metrics import METRICS

METRIC_UNITS = {row.name: row.short_unit for row in METRICS}


def format_value(value: float | None) -> str:
    """4 significant digits below 1000, one decimal below 1e6, scientific from 1e6 on; "-" for None."""
    if value is None:
        return "-"
    if abs(value) >= 1e6:
        return f"{value:.3e}"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


class Progress:
    """Prints search events to ``stream`` (stderr by default) unless ``quiet``."""

    def __init__(self, metric: str = "throughput", quiet: bool = False, stream: TextIO | None = None):
        self.metric = metric
        self.quiet = quiet
        self.stream = stream
        self.done = 0
        self.known = 0

    def _print(self, line: str) -> None:
        if self.quiet:
            return
        stream = self.stream if self.stream is not None else sys.stderr
        print(f"simtune: {line}", file=stream, flush=True)

    def note(self, message: str) -> None:
        """A free-form event: a stage starts, is skipped, the search stops early."""
        self._print(message)

    def started(self, names: list[str]) -> None:
        """Experiments about to run (together when there are several)."""
        for name in names:
            self.known += 1
            self._print(f"[{self.done}/{self.known}] {name} running")

    def finished(self, name: str, status: str, reason: str, value: float | None,
                 best: tuple[str, float] | None) -> None:
        """An experiment ended: its outcome, its metric value (None when it failed), the best so far."""
        self.done += 1
        self.known = max(self.known, self.done)
        line = f"[{self.done}/{self.known}] {name} {status}"
        if value is not None:
            line += f"  {self.metric} {format_value(value)} {METRIC_UNITS.get(self.metric, '')}".rstrip()
        elif reason:
            line += f"  {reason}"
        if best is not None:
            line += f"  (best so far: {best[0]} {format_value(best[1])})"
        self._print(line)
