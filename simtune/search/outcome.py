"""What every search strategy returns, and the runner it needs.

A :class:`SearchOutcome` lists the experiments run (:class:`Measurement`, in the order they
finished), the best of each ZeRO stage (:class:`StageOutcome`) and the best overall; the outputs
(:mod:`simtune.search.outputs`) and the reports read only this. A strategy that runs nothing
(``--verify-top 0``) returns its predicted best as a measurement of status "predicted".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Iterable, Mapping, Protocol, Sequence

from simtune.metrics import Metric
from simtune.runner.experiment import Experiment
from simtune.runner.interference import Load, load_note
from simtune.runner.steadiness import UNSTEADY_STATUS, WindowShift, shift_note, unsteady_shift
from simtune.space import Trial

SUCCESS_STATUSES = ("ok", "skipped")
"""Outcomes whose metrics count (``skipped``: reused from an earlier run of the same name)."""


class RunnerLike(Protocol):
    """What the search needs of a runner: run experiments, return one result per experiment."""

    def run(self, experiments: Sequence[Any]) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Measurement:
    """One experiment of the search and what came of it."""

    name: str
    trial: Trial
    status: str
    reason: str
    metrics: Mapping[str, Any] | None
    value: float | None
    """The search metric; None when the run failed or wrote no value."""
    result_dir: str
    wall_s: float
    phase: str
    """Why it ran: start, upper-bound, binary-search, tuning-list, list or tuner."""
    reused: bool = False
    """Taken from an earlier search's result directory (overwrite false) instead of launched."""
    ds_config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    others_cores: float | None = None
    """Cores other processes used on average during the run (None: unknown)."""

    @property
    def load_note(self) -> str | None:
        """The warning of a run other processes disturbed; None otherwise."""
        return load_note(self.name, Load(self.others_cores))

    @cached_property
    def unsteady_shift(self) -> WindowShift | None:
        """How much the run's step time moved within its measured window, where that exceeds the
        limit of a steady run (:mod:`simtune.runner.steadiness`); None otherwise."""
        return unsteady_shift((self.metrics or {}).get("step_times_s"))

    @property
    def unsteady_note(self) -> str | None:
        """The warning of a run whose step time moved within its measured window; None otherwise."""
        shift = self.unsteady_shift
        return None if shift is None else shift_note(self.name, shift)

    @property
    def ok(self) -> bool:
        return self.value is not None

    @property
    def failed(self) -> bool:
        """Ended without the search metric (out of memory, crashed, timed out, no value); a run set
        aside as unsteady did not fail."""
        return self.value is None and self.status != UNSTEADY_STATUS

    def set_aside(self, reason: str) -> "Measurement":
        """This successful run with its figure set aside (status :data:`UNSTEADY_STATUS`, no value;
        its metrics kept) for the reason given."""
        return replace(self, status=UNSTEADY_STATUS, value=None, reason=reason)

    def shown_status(self, status: str | None = None) -> str:
        """``status`` (default the run's own) as a progress line gives it: marked "(reused)" for a
        run taken from an earlier search's results instead of launched."""
        status = status or self.status
        return f"{status} (reused)" if self.reused else status

    @classmethod
    def of_result(cls, name: str, trial: Trial, result: Any, *, phase: str, ds_config: dict[str, Any],
                  metric_key: str) -> "Measurement":
        """The measurement of a runner's result: the search metric read from its metrics.json
        (``metric_key``) when the run succeeded, and why there is none otherwise."""
        metrics = result.metrics if isinstance(result.metrics, Mapping) or hasattr(result.metrics, "get") else None
        value = None
        if result.status in SUCCESS_STATUSES and metrics is not None:
            raw = metrics.get(metric_key)
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                value = float(raw)
        reason = result.reason or ("" if value is not None else f"no {metric_key} in metrics.json")
        return cls(name=name, trial=trial, status=result.status, reason=reason, metrics=metrics, value=value,
                   result_dir=str(result.result_dir), wall_s=float(result.wall_s or 0.0), phase=phase,
                   reused=bool(getattr(result, "reused", False)), ds_config=ds_config,
                   others_cores=getattr(result, "others_cores", None))


@dataclass(frozen=True)
class RerunVerdict:
    """Which of two successful runs of one configuration stands, the first having moved within its
    window (:func:`rerun_verdict`)."""

    again_stands: bool
    """True when the run made again stands; False when the first run's figure stands."""
    aside: Measurement
    """The other run, set aside (:meth:`Measurement.set_aside`) with the reason."""
    note: str
    """How the note on the rerun ends ("which held still: ...")."""


def rerun_verdict(first: Measurement, again: Measurement) -> RerunVerdict:
    """The steadier of ``first`` (whose step time moved within its window) and ``again`` (the same
    configuration run once more, successfully): the smaller move, ``first`` on a tie."""
    shift, later = first.unsteady_shift, again.unsteady_shift
    if later is not None and shift is not None and later.relative >= shift.relative:
        why = f"set aside: its step time moved no less than {first.name}'s, whose figure stands for the configuration"
        return RerunVerdict(False, again.set_aside(why), f"which moved {later.relative:.0%}: {first.name}'s figure stands")
    steadier = "held still" if later is None else f"moved {later.relative:.0%}"
    return RerunVerdict(True, first.set_aside(f"set aside for {again.name}, a steadier run of the same configuration"),
                        f"which {steadier}: its figure stands for the configuration")


@dataclass(frozen=True)
class StageOutcome:
    """What the search did at one ZeRO stage."""

    stage: int
    names: tuple[str, ...] = ()
    """The stage's experiments, in the order they first ran."""
    best: Measurement | None = None
    max_micro_batch_size: int | None = None
    """Largest mbs that ran (None: not searched or nothing ran)."""
    note: str = ""
    """Why the stage was skipped, abandoned or cut short; empty when it ran through."""


@dataclass(frozen=True)
class SearchOutcome:
    """Everything a measured search found."""

    metric: Metric
    """What the search optimised (its name, key, unit and direction)."""
    measurements: tuple[Measurement, ...]
    """Every experiment, in the order it finished."""
    stages: tuple[StageOutcome, ...]
    best: Measurement | None
    notes: tuple[str, ...]
    """The search's decisions in words (skipped stages, plateaus, tuner stops)."""


def best_measurement(measurements: Iterable[Measurement], metric: Metric) -> Measurement | None:
    """The successful measurement with the best value for the metric (the first of equals); None
    when none succeeded."""
    best: Measurement | None = None
    for m in measurements:
        if m.value is not None and metric.better(m.value, best.value if best else None):
            best = m
    return best


def default_experiment(name: str, trial: Trial, ds_config: dict[str, Any]) -> Experiment:
    """The runner's experiment of one trial."""
    return Experiment(name=name, trial=trial, ds_config=ds_config)
