"""Whether one run each can tell the two best verified configurations apart.

Verification decides from one run per configuration. Each run's measurement window carries its own
spread: the relative standard error of its median step time,

    se = 1.2533 * (1.4826 * MAD) / median / sqrt(n)

over its ``n`` step times (1.2533 sigma / sqrt(n) is the large-sample standard error of the median
of normal samples; 1.4826 MAD estimates sigma without the step-time spikes a CPU shows). The
metric is the global batch over the median step time, so its relative error is the same. For the
two best runs, measured a relative ``d`` apart, the chance that the second is in truth the better
is ``P = Phi(-d / sqrt(se_a**2 + se_b**2))`` (normal errors, no prior preference); at
``P >= CLOSE_CALL_CHANCE`` the choice is a close call. Runs of one configuration also differ from
launch to launch by more than their windows show (``benchmarks/results/measurement_noise.txt``),
so ``P`` is a lower bound. The measured best is still what the search returns; the note says how
sure that choice is. With ``confirm_close_calls`` N (``--confirm-close-calls``) verification then
runs each of the two N more times, alternating, and returns the one with the better mean
(:mod:`simtune.search.verify`).

A window of fewer than :data:`MIN_STEPS` steps (DeepSpeed's default, 3..5, gives 3) has no
usable spread. When either of the two best runs has such a window and they are measured closer
than its step times vary (slowest less fastest over the median: steps still warming up vary a
lot), the window is too short to compare them (:func:`find_short_window`); the note gives a
window of :data:`LONGER_WINDOW_STEPS` steps after it, which settling then measures.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from simtune.metrics import Metric

MIN_STEPS = 5
"""Fewer step times give no usable spread."""
LONGER_WINDOW_STEPS = 8
"""The window suggested (and used to settle) when a window was too short to compare the two best."""
CLOSE_CALL_CHANCE = 0.10
"""From this chance that the runner-up is the better, the choice is reported as a close call."""


def median_step_error(metrics: Mapping[str, Any] | None) -> float | None:
    """Relative standard error of the run's median step time (see the module docstring); None
    without at least :data:`MIN_STEPS` positive step times."""
    times = (metrics or {}).get("step_times_s")
    if not isinstance(times, (list, tuple)):
        return None
    values = [float(t) for t in times if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0]
    if len(values) < MIN_STEPS:
        return None
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    return 1.2533 * 1.4826 * mad / median / math.sqrt(len(values))


def chance_reversed(lead: float, errors: Sequence[float]) -> float:
    """``Phi(-lead / sqrt(sum of squared errors))``: the chance that two runs measured ``lead``
    apart (relative) are in truth the other way round."""
    spread = math.sqrt(sum(e * e for e in errors))
    if spread <= 0:
        return 0.0
    return 0.5 * math.erfc(lead / spread / math.sqrt(2))


@dataclass(frozen=True)
class CloseCall:
    """The two best successful verifications, when one run each cannot tell them apart."""

    first: Any
    second: Any
    lead: float
    """Relative lead of ``first``'s measurement over ``second``'s."""
    chance: float
    """The chance that ``second`` is in truth the better (:func:`chance_reversed`)."""


def find_close_call(verifications: Sequence[Any], *, metric: Metric) -> CloseCall | None:
    """The two best of the successful ``verifications`` when the chance that the runner-up is in
    truth the better reaches :data:`CLOSE_CALL_CHANCE`; None otherwise or when either run's spread
    is unknown. ``verifications``: objects with ``measurement`` (``name``, ``value``, ``metrics``,
    ``ok``) and ``forecast`` (``value``)."""
    done = [v for v in verifications if v.measurement.ok]
    if len(done) < 2:
        return None
    done.sort(key=lambda v: metric.best_first(v.measurement.value))
    first, second = done[0], done[1]
    spread = [median_step_error(v.measurement.metrics) for v in (first, second)]
    errors = [e for e in spread if e is not None]
    if len(errors) < 2:
        return None
    a, b = first.measurement.value, second.measurement.value
    if not a or not b:
        return None
    lead = abs(a / b - 1)
    chance = chance_reversed(lead, errors)
    return CloseCall(first, second, lead, chance) if chance >= CLOSE_CALL_CHANCE else None


def _step_times(metrics: Mapping[str, Any] | None) -> list[float]:
    times = (metrics or {}).get("step_times_s")
    if not isinstance(times, (list, tuple)):
        return []
    return [float(t) for t in times if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0]


def _variation(times: Sequence[float]) -> float:
    """(slowest - fastest) / median of a window's step times; infinite below two steps (no
    variation can be seen)."""
    if len(times) < 2:
        return math.inf
    return (max(times) - min(times)) / statistics.median(times)


@dataclass(frozen=True)
class ShortWindow:
    """The two best successful verifications, measured over windows too short to compare them:
    fewer than :data:`MIN_STEPS` steps whose times vary by more than the lead between the two."""

    first: Any
    second: Any
    lead: float
    variation: float
    """The larger of the two windows' (slowest - fastest) / median step time."""
    varying: Any
    """The verification whose window varies most."""
    window: tuple[int, int]
    """The measured (start_profile_step, end_profile_step)."""

    @property
    def longer_window(self) -> tuple[int, int]:
        """A window of :data:`LONGER_WINDOW_STEPS` steps after the steps measured."""
        start = self.window[1] + 1
        return start, start + LONGER_WINDOW_STEPS - 1


def find_short_window(verifications: Sequence[Any], *, metric: Metric) -> ShortWindow | None:
    """The two best of the successful ``verifications`` (as :func:`find_close_call` takes them)
    when either window has fewer than :data:`MIN_STEPS` step times and the two are measured closer
    than the step times of a window vary; None otherwise."""
    done = sorted((v for v in verifications if v.measurement.ok), key=lambda v: metric.best_first(v.measurement.value))
    if len(done) < 2:
        return None
    first, second = done[0], done[1]
    steps = {id(v): _step_times(v.measurement.metrics) for v in (first, second)}
    if all(len(times) >= MIN_STEPS for times in steps.values()):
        return None
    a, b = first.measurement.value, second.measurement.value
    if not a or not b:
        return None
    lead = abs(a / b - 1)
    varying = max((first, second), key=lambda v: _variation(steps[id(v)]))
    variation = _variation(steps[id(varying)])
    if lead >= variation:
        return None
    metrics = varying.measurement.metrics or {}
    window = (int(metrics.get("start_profile_step", 0) or 0), int(metrics.get("end_profile_step", 0) or 0))
    return ShortWindow(first, second, lead, variation, varying, window)


def short_window_note(call: ShortWindow, *, metric: Metric, confirm: int) -> str:
    """The sentence of a window too short to compare the two best, with the window to set."""
    first, second = call.first.measurement, call.second.measurement
    times = _step_times(call.varying.measurement.metrics)
    shown = " -> ".join(f"{t:.3g}" for t in times)
    falling = ", still falling" if len(times) > 1 and all(b < a for a, b in zip(times, times[1:])) else ""
    start, end = call.window
    new_start, new_end = call.longer_window
    seen = (f"{call.varying.measurement.name}'s step times vary by {call.variation:.0%} ({shown} s{falling}), "
            f"more than the lead" if math.isfinite(call.variation) else "a single step shows no spread to judge it by")
    then = (f"the two run {confirm} more time(s) each with that window to settle it" if confirm else
            "the choice between the two is not reliable (--confirm-close-calls N runs them again with that "
            "window)")
    return (f"window too short to compare: {first.name} ({metric.name} {first.value:.4g}) measured {call.lead:.1%} "
            f"better than {second.name} ({second.value:.4g}) over {end - start + 1} step(s) (start_profile_step "
            f"{start} .. end_profile_step {end}), but {seen}; set "
            f"\"start_profile_step\": {new_start}, \"end_profile_step\": {new_end} in the \"autotuning\" section; "
            f"{then}")


def close_call(verifications: Sequence[Any], *, metric: Metric) -> str | None:
    """:func:`close_call_note` of :func:`find_close_call`'s pair; None when there is no close call."""
    call = find_close_call(verifications, metric=metric)
    return None if call is None else close_call_note(call, metric=metric)


def close_call_note(call: CloseCall, *, metric: Metric) -> str:
    """The sentence of a close call, with what the model predicted for the two."""
    first, second, lead, chance = call.first, call.second, call.lead, call.chance
    a, b = first.measurement.value, second.measurement.value
    pa, pb = first.forecast.value, second.forecast.value
    model_prefers_second = metric.better(pb, pa)
    if model_prefers_second and pa:
        view = (f"the model predicted {second.measurement.name} {abs(pb / pa - 1):.1%} better, so it may be "
                f"the better one")
    else:
        view = f"the model also ranks {first.measurement.name} first"
    return (f"close call: {first.measurement.name} ({metric.name} {a:.4g}) measured {lead:.1%} better than "
            f"{second.measurement.name} ({b:.4g}), but from the spread of the two runs' step times alone "
            f"the chance that {second.measurement.name} is the better is {chance:.0%} (more with the "
            f"variation from launch to launch); {view}")
