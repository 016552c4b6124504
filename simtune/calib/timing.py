"""Timing with warm-up, device synchronisation and repeats.

Every measurement is reported as ``{"min_s", "median_s", "max_s", "repeats", "inner"}``: the
seconds of ONE call of the timed function, from ``repeats`` timed repeats of ``inner`` calls
each, after ``warmup`` untimed calls. ``inner`` is raised for very short calls so that a repeat
lasts at least ``min_repeat_s`` (timer resolution and Python overhead then stay small).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable


def stats(samples_s: list[float], inner: int = 1) -> dict:
    """Summarise per-call times in seconds as min/median/max."""
    return {
        "min_s": min(samples_s),
        "median_s": statistics.median(samples_s),
        "max_s": max(samples_s),
        "repeats": len(samples_s),
        "inner": inner,
    }


def measure(
    fn: Callable[[], object],
    sync: Callable[[], None],
    warmup: int,
    repeats: int,
    min_repeat_s: float = 0.0,
    max_inner: int = 1000,
) -> dict:
    """Time ``fn``: ``warmup`` calls, then ``repeats`` synchronised repeats of ``inner`` calls."""
    for _ in range(max(1, warmup)):
        fn()
    sync()
    inner = 1
    if min_repeat_s > 0:
        start = time.perf_counter()
        fn()
        sync()
        once_s = max(time.perf_counter() - start, 1e-9)
        inner = max(1, min(max_inner, math.ceil(min_repeat_s / once_s)))
    samples = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - start) / inner)
    return stats(samples, inner)


def samples_in_turn(fns: list[Callable[[], object]], sync: Callable[[], None], warmup: int, repeats: int,
                    before: Callable[[], object] = lambda: None) -> list[list[float]]:
    """Seconds of each of ``fns`` per repeat, taking them in turn within each round (``warmup``
    untimed rounds first; ``before`` runs untimed ahead of each timed call, e.g. a barrier): a
    burst of interference from other processes then spreads over all of them instead of spoiling
    every repeat of one, so a fit over sizes still sees time grow with size."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, series in zip(fns, samples):
            before()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            series.append(time.perf_counter() - start)
    return samples


def measure_in_turn(fns: list[Callable[[], object]], sync: Callable[[], None], warmup: int,
                    repeats: int) -> list[dict]:
    """:func:`samples_in_turn` summarised per function as :func:`measure` reports one."""
    return [stats(series) for series in samples_in_turn(fns, sync, warmup, repeats)]
