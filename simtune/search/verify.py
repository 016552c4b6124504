"""Verification: the chosen predictions run for real, failures replaced, the model told.

Candidates come from :func:`simtune.search.doubt.choose_candidates`, as many at a time as the
runner has slot sets (side by side when the resources allow). Each result is a
:class:`~simtune.search.outcome.Measurement`. Until ``k`` experiments have succeeded:

- a success adds a step-time sample to the residual model (measured / predicted) and, with
  the measured peak, a memory sample;
- a candidate predicted to fit that runs out of memory adds a memory sample: the memory
  correction of its stage rises to at least ``limit / predicted`` (:mod:`simtune.prediction.residual`), the
  remaining candidates are predicted again with it (some become infeasible), and the next
  candidate is verified in its place;
- a crash or time-out is recorded and replaced by the next candidate (the model is not blamed);
  the failed run counts as covered, so the replacement tries another stage before a neighbour;
- a stage whose runs crash twice for the same reason (numbers aside: a failure that does not
  depend on the size, such as a script that rejects ZeRO-3) is ruled out, with a note;
- a success whose measured value is off its prediction by more than the model's error
  contradicts the model: the error becomes that run's error at once, and the next candidates are
  micro-batch sizes away from the contradicted ones (:mod:`simtune.search.doubt`), with a note.

A success whose step time moved within its measured window (:mod:`simtune.runner.steadiness`: a
transient such as steps still warming up) runs once more at once, as ``<name>_rerun``; the steadier
of the two stands for the configuration (it teaches the model and competes for the best) and the
other is kept with status "unsteady" and its figure set aside. One more experiment, only then.

At most ``k + max_replacements`` configurations run (``max_replacements`` defaults to ``k``;
a configuration run once more counts once). Each
experiment name runs at most once; with overwrite false the runner reuses an experiment already
recorded in results_dir, so a resumed search runs nothing twice. When one run each cannot tell the
two best apart (:mod:`simtune.search.close_call`), a note says so and what the model predicted.

With ``confirm`` N > 0 such a close call is then settled: each of the two runs N more times
(``<name>_r2``, ``<name>_r3``, ...; the two alternate, the runner-up first, so that a drift of the
machine's speed falls on both), every run teaches the residual model as a verification does, and
the one with the better mean of its successful runs is the answer (:class:`Settlement`): 2N more
experiments, only when there is a close call.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from simtune.probe.protocol import SHARED_RSS_KIND
from simtune.progress import Progress, format_value
from simtune.prediction.residual import MemorySample, ResidualModel, TimeSample
from simtune.runner.steadiness import RERUN_PHASE, rerun_notes
from simtune.space import Trial, TuningSpace
from simtune.search.close_call import (CloseCall, ShortWindow, close_call_note, find_close_call, find_short_window,
                                       short_window_note)
from simtune.search.doubt import Candidate, choose_candidates, sizes_text
from simtune.search.forecast import Forecast, Forecaster
from simtune.search.outcome import (Measurement, RunnerLike, best_measurement, default_experiment,
                                    rerun_verdict)


@dataclass(frozen=True)
class Verification:
    """One verified prediction: what was predicted when it was chosen, and what was measured."""

    forecast: Forecast
    measurement: Measurement
    reason: str
    """Why it was chosen."""
    replaces: str | None = None
    """The failed candidate it stands in for."""

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured of the metric; None when the run failed."""
        measured = self.measurement.value
        if measured is None or measured == 0:
            return None
        return (self.forecast.value - measured) / measured


def keep_latest(kept: list[Verification], v: Verification) -> None:
    """Append ``v`` to ``kept``, or put it in place of the earlier record of the same experiment (a
    run set aside after it was kept)."""
    names = [k.measurement.name for k in kept]
    if v.measurement.name in names:
        kept[names.index(v.measurement.name)] = v
    else:
        kept.append(v)


@dataclass(frozen=True)
class Settlement:
    """A close call settled by more runs of the two: every successful run's value, by name."""

    runs: tuple[tuple[str, tuple[float, ...]], ...]
    """(configuration name, its measured values), the winner first."""
    winner: str

    @property
    def means(self) -> dict[str, float]:
        """Configuration name -> the mean of its successful runs."""
        return {name: sum(values) / len(values) for name, values in self.runs}


@dataclass(frozen=True)
class VerifyOutcome:
    verifications: tuple[Verification, ...]
    notes: tuple[str, ...]
    settlement: Settlement | None = None
    """Set when a close call was settled by more runs (``confirm``)."""


class Verifier:
    """Runs candidates until ``k`` succeed (see the module docstring)."""

    def __init__(self, space: TuningSpace, runner: RunnerLike, forecaster: Forecaster, *, k: int, error: float,
                 parallel: int = 1, max_replacements: int | None = None, progress: Progress | None = None,
                 on_result: Callable[[Verification], None] | None = None,
                 make_experiment: Callable[[str, Trial, dict[str, Any]], Any] = default_experiment, confirm: int = 0):
        self.space = space
        self.runner = runner
        self.forecaster = forecaster
        self.k = k
        self.error = error
        self.parallel = max(1, parallel)
        self.max_runs = k + (k if max_replacements is None else max_replacements)
        self.progress = progress or Progress(metric=space.autotuning.metric, quiet=True)
        self.on_result = on_result or (lambda verification: None)
        self.make_experiment = make_experiment
        self.confirm = max(0, confirm)
        self._ok: list[Measurement] = []
        self.doubted: list[int] = []
        """Micro-batch sizes whose runs contradicted the model."""
        self.ruled_out: set[int] = set()
        """Stages whose runs crashed twice for the same reason."""
        self._crashes: dict[tuple[int, str], str] = {}
        """(stage, crash reason without its numbers) -> the first experiment that crashed so."""

    @property
    def residual(self) -> ResidualModel:
        return self.forecaster.residual

    def run(self, pool: Sequence[Trial]) -> VerifyOutcome:
        """Verify candidates drawn from ``pool`` (the distinct points the search predicted)."""
        pool = list(dict.fromkeys(pool))
        done: list[Verification] = []
        notes: list[str] = []
        pending_replacements: list[str] = []
        while True:
            succeeded = [v for v in done if v.measurement.ok]
            tried = {v.forecast.name for v in done}  # a configuration run once more counts once
            room = min(self.k - len(succeeded), self.max_runs - len(tried))
            if room <= 0:
                if len(succeeded) < self.k and len(tried) >= self.max_runs:
                    notes.append(f"stopped after {len(done)} experiments, {len(succeeded)} of them successful: "
                                 f"at most {self.max_runs - self.k} replacement(s) are tried")
                break
            ranked = sorted(self.forecaster.forecast_many(pool), key=self.forecaster.sort_key)
            left = [f for f in ranked if f.feasible and f.name not in tried and f.trial.stage not in self.ruled_out]
            covered = [v.forecast for v in succeeded]
            failed = [v.forecast.trial for v in done if v.measurement.failed and v.measurement.status != "oom"
                      and v.measurement.phase != RERUN_PHASE]
            best_value = ranked[0].value if ranked and ranked[0].feasible else None
            batch = choose_candidates(left, min(room, self.parallel), error=self.error,
                                      metric=self.forecaster.metric, covered=covered,
                                      best_value=best_value, failed=failed, doubted=self.doubted)
            if not batch:
                if len(succeeded) < self.k:
                    notes.append(f"no other configuration is predicted to fit, so {len(succeeded)} of "
                                 f"{self.k} verification(s) succeeded")
                break
            replaces = [pending_replacements.pop(0) if pending_replacements else None for _ in batch]
            ran = self._run_batch(batch, replaces, len(succeeded))
            for first in ran:  # kept at once: an interrupted rerun loses none of them
                self._keep(done, first)
            for first in ran:
                runs, verification, steadied = self._steadied(first)
                for run in runs:
                    self._keep(done, run)
                if steadied:
                    self.progress.note(steadied)
                    notes.append(steadied)
                note = self._learn(verification)
                if note:
                    notes.append(note)
                if not verification.measurement.ok:
                    pending_replacements.append(verification.forecast.name)
        metric = self.forecaster.metric
        pair = find_close_call(done, metric=metric)
        short = None if pair is not None else find_short_window(done, metric=metric)
        settlement = None
        two: CloseCall | ShortWindow | None = None
        if pair is not None:
            two, call = pair, close_call_note(pair, metric=metric)
        elif short is not None:
            two, call = short, short_window_note(short, metric=metric, confirm=self.confirm)
        if two is not None:
            self.progress.note(call)
            notes.append(call)
            if self.confirm:
                settlement, note = self._settle(two.first, two.second, done, notes,
                                                window=short.longer_window if short else None)
                self.progress.note(note)
                notes.append(note)
        return VerifyOutcome(tuple(done), tuple(notes), settlement)

    def _keep(self, done: list[Verification], v: Verification) -> None:
        """Record ``v`` in ``done`` (:func:`keep_latest`) and through ``on_result``."""
        keep_latest(done, v)
        self.on_result(v)

    def _steadied(self, v: Verification) -> tuple[list[Verification], Verification, str]:
        """The runs of ``v``'s configuration in the order they finished, the one that stands for
        it, and what was done: ``v`` itself and no note unless it succeeded with a step time that
        moved within its window; then it runs once more and the steadier of the two successes
        stands (the first on a tie), the other set aside (:meth:`Measurement.set_aside`). A rerun
        that fails leaves ``v``. A run other processes disturbed (:attr:`Measurement.load_note`) is
        not run again: their load explains its move, and on a machine that stays busy a second run
        is disturbed too (the rule for disturbed runs, docs/experiments.md)."""
        m = v.measurement
        shift = m.unsteady_shift
        if not m.ok or shift is None or m.load_note is not None:
            return [v], v, ""
        name, starting, note = rerun_notes(m.name, shift)
        self.progress.note(starting)
        (again,) = self._launch([(v.forecast, name)], phase=RERUN_PHASE)
        rerun = Verification(v.forecast, again, f"run again: {m.name}'s step time moved within its window")
        if not again.ok:
            failure = self._failed_again(rerun).removeprefix(f"{name} ")  # an out of memory still teaches memory
            return [v, rerun], v, f"{note}, which {failure}: {m.name}'s figure stands"
        verdict = rerun_verdict(m, again)
        aside = verdict.aside
        self.progress.finished(aside.name, aside.shown_status(), aside.reason, None, self._leader())
        if not verdict.again_stands:
            return [v, dataclasses.replace(rerun, measurement=aside)], v, f"{note}, {verdict.note}"
        stands = dataclasses.replace(rerun, replaces=v.replaces)  # only the run that stands replaced a candidate
        return ([dataclasses.replace(v, measurement=aside, replaces=None), stands], stands, f"{note}, {verdict.note}")

    def _settle(self, first: Verification, second: Verification, done: list[Verification],
                notes: list[str], window: tuple[int, int] | None = None) -> tuple[Settlement | None, str]:
        """Run each of the two ``self.confirm`` more times, alternating (the runner-up first), side
        by side when the runner has two slot sets. The one with fewer failed runs, then the better
        mean of its successful runs, wins; with no successful extra run at all nothing is settled.
        Each configuration's residual sample becomes the median step time of all its runs. With a
        ``window`` (the first runs' was too short to compare them) the runs measure that window and
        the first runs are left out of the means and samples."""
        pair = (first, second)
        values: dict[str, list[float]] = {v.measurement.name: [] for v in pair}
        steps: dict[str, list[float | None]] = {v.measurement.name: [] for v in pair}
        if not window:
            for v in pair:
                values[v.measurement.name].append(v.measurement.value or 0.0)  # both succeeded
                steps[v.measurement.name].append(self._step_s(v.measurement))
        failed = {v.measurement.name: 0 for v in pair}
        for run in range(2, self.confirm + 2):
            order = (second, first) if run % 2 == 0 else (first, second)
            pending = [(v, f"{v.measurement.name}_r{run}") for v in order]
            for start in range(0, len(pending), self.parallel):
                batch = pending[start:start + self.parallel]
                for v, name in batch:
                    self.progress.note(f"settling the close call: run {run} of {v.measurement.name}")
                measured = self._launch([(v.forecast, name) for v, name in batch], phase="confirm", window=window)
                for (v, _), m in zip(batch, measured):
                    verification = Verification(v.forecast, m, f"run {run} of {v.measurement.name}, to settle "
                                                                f"the close call")
                    done.append(verification)
                    self.on_result(verification)
                    base = v.measurement.name
                    if m.value is not None:
                        self._report(verification)
                        values[base].append(m.value)
                        steps[base].append(self._step_s(m))
                    else:
                        failed[base] += 1
                        notes.append(self._failed_again(verification))
        for v in pair:  # one sample per configuration: repeated runs with the same features would
            self._time_sample(v.forecast, v.forecast.name, steps[v.measurement.name])  # read as held out
        names = [v.measurement.name for v in pair]
        if all(len(values[n]) == (0 if window else 1) for n in names):
            return None, (f"the close call could not be settled: every one of the {2 * self.confirm} more runs "
                          f"failed, so {first.measurement.name} stays the answer on its single run")
        means = {n: sum(values[n]) / len(values[n]) if values[n] else math.nan for n in names}
        metric = self.forecaster.metric
        ranked = sorted(names, key=lambda n: (failed[n], not values[n], metric.best_first(means[n]) if values[n] else 0.0))

        def runs(name: str) -> str:
            if not values[name]:
                return f"{name}, every one of its {self.confirm} runs failed"
            text = f"{name} {metric.name} {format_value(means[name])}, mean of {len(values[name])} (" + \
                ", ".join(format_value(x) for x in values[name]) + ")"
            return text + (f", {failed[name]} of its {self.confirm} more runs failed" if failed[name] else "")

        return (Settlement(tuple((n, tuple(values[n])) for n in ranked if values[n]), ranked[0]),
                f"close call settled by more runs: {runs(ranked[0])} against {runs(ranked[1])}; "
                f"{ranked[0]} is returned")

    def _failed_again(self, v: Verification) -> str:
        """The note of a run that failed when its configuration had run once already: no
        candidate to replace; an out of memory still corrects the memory predictions."""
        m = v.measurement
        self.progress.finished(m.name, m.status, m.reason, None, self._leader())
        lesson = ""
        if m.status == "oom":
            before, after = self._memory_lesson(v)
            lesson = f"; stage {v.forecast.trial.stage} memory predictions are now multiplied by {after:.2f} " \
                     f"(was {before:.2f})"
        return f"{m.name} ended {m.status} ({m.reason}){lesson}"

    @staticmethod
    def _step_s(m: Measurement) -> float | None:
        step_s = (m.metrics or {}).get("step_time_s")
        return float(step_s) if isinstance(step_s, (int, float)) and step_s > 0 else None

    def _time_sample(self, f: Forecast, name: str, steps: Sequence[float | None]) -> None:
        """The residual model's time sample of ``name``: the median of its runs' step times."""
        known = sorted(x for x in steps if x is not None)
        if known and f.features is not None:
            self.residual.add_time(TimeSample(self.forecaster.workload, name, dict(f.features), f.base_step_s,
                                              statistics.median(known)))

    # ---------------------------------------------------------------------------- running
    def _run_batch(self, batch: Sequence[Candidate], replaces: Sequence[str | None],
                   succeeded: int) -> list[Verification]:
        for i, (candidate, replaced) in enumerate(zip(batch, replaces)):
            f = candidate.forecast
            instead = f" in place of {replaced}" if replaced else ""
            self.progress.note(f"verifying {succeeded + i + 1}/{self.k}: {f.name}{instead} (predicted "
                               f"{self.forecaster.metric.name} {format_value(f.value)}; {candidate.reason})")
        measured = self._launch([(c.forecast, c.forecast.name) for c in batch])
        return [Verification(candidate.forecast, measurement, candidate.reason, replaced)
                for candidate, replaced, measurement in zip(batch, replaces, measured)]

    def _launch(self, runs: Sequence[tuple[Forecast, str]], phase: str = "verify",
                window: tuple[int, int] | None = None) -> list[Measurement]:
        """Run each (forecast, experiment name) at once through the runner (side by side when it
        can), over ``window`` (start_profile_step, end_profile_step) when given; their
        measurements, in order."""
        experiments = [self.make_experiment(name, f.trial, self.space.render(f.trial)) for f, name in runs]
        if window is not None:
            experiments = [dataclasses.replace(e, window=window) for e in experiments]
        self.progress.started([e.name for e in experiments])
        results = {r.name: r for r in self.runner.run(experiments)}
        measured = [self._measurement(f, results[e.name], e.name, e.ds_config, phase)
                    for (f, _), e in zip(runs, experiments)]
        for m in measured:
            if m.load_note:
                self.progress.note(m.load_note)
        return measured

    def _measurement(self, forecast: Forecast, result: Any, name: str, ds_config: dict[str, Any],
                     phase: str) -> Measurement:
        return Measurement.of_result(name, forecast.trial, result, phase=phase, ds_config=ds_config,
                                     metric_key=self.space.autotuning.metric_key)

    # ---------------------------------------------------------------------------- learning
    def _learn(self, v: Verification) -> str:
        """Feed the result to the residual model; a note when the model was corrected."""
        m, f = v.measurement, v.forecast
        workload = self.forecaster.workload
        predicted_bytes = int(f.estimate.memory.total_bytes)
        if m.ok:
            self._time_sample(f, f.name, [self._step_s(m)])  # by configuration: a rerun's stands for it
            peak = (m.metrics or {}).get("peak_memory_bytes")
            if (m.metrics or {}).get("memory_kind") == SHARED_RSS_KIND:
                peak = None  # it includes what earlier runs in its process left
            self.residual.add_memory(MemorySample(workload, m.name, f.trial.stage, predicted_bytes, f.limit_bytes,
                                                  "ok", int(peak) if isinstance(peak, (int, float)) else None))
            self._report(v)
            return self._contradiction(v)
        self.progress.finished(m.name, m.status, m.reason, None, self._leader())
        if m.status != "oom":
            ruled_out = self._rule_out(v)
            return f"{m.name} was predicted to fit but ended {m.status} ({m.reason}); " + \
                (ruled_out or "the next candidate is verified")
        before, after = self._memory_lesson(v)
        return (f"{m.name} was predicted to fit ({f.memory_bytes / 2**20:.0f} MiB of {f.limit_bytes / 2**20:.0f} MiB) "
                f"but ran out of memory: stage {f.trial.stage} memory predictions are now multiplied by "
                f"{after:.2f} (was {before:.2f}) and the next candidate is verified")

    def _contradiction(self, v: Verification) -> str:
        """A success off its prediction by more than the model's error: the error becomes this
        run's, the doubt moves to other micro-batch sizes, and a note says so ('' otherwise)."""
        error = v.error
        if error is None or abs(error) <= self.error:
            return ""
        before, self.error = self.error, abs(error)
        mbs = v.forecast.trial.micro_batch_size
        self.doubted.append(mbs)
        note = (f"{v.measurement.name} measured {format_value(v.measurement.value)} against "
                f"{format_value(v.forecast.value)} predicted ({error:+.0%}), more than the model's {before:.0%} "
                f"error: the error is now {self.error:.0%}, and the remaining verifications go to micro-batch "
                f"sizes away from {sizes_text(self.doubted)}")
        shift = v.measurement.unsteady_shift
        if shift is not None:
            note += (f" (its step time moved {shift.relative:.0%} within its measured window: a transient may "
                     "account for some of it)")
        self.progress.note(note)
        return note

    def _rule_out(self, v: Verification) -> str:
        """A crash whose reason (numbers aside) already ended another run of the same stage rules
        the stage out; what the note says then ('' otherwise)."""
        m, stage = v.measurement, v.forecast.trial.stage
        if m.status != "crashed" or not m.reason:
            return ""
        key = (stage, re.sub(r"\d+(\.\d+)?", "#", m.reason))
        first = self._crashes.setdefault(key, m.name)
        if first == m.name or stage in self.ruled_out:
            return ""
        self.ruled_out.add(stage)
        note = (f"ZeRO stage {stage} is ruled out: {first} and {m.name} failed for the same reason, which does "
                f"not depend on the micro-batch size")
        self.progress.note(note)
        return note

    def _memory_lesson(self, v: Verification) -> tuple[float, float]:
        """An out-of-memory run of a configuration predicted to fit: its stage's memory correction
        (before, after); the forecasts are made again with it."""
        m, f = v.measurement, v.forecast
        workload = self.forecaster.workload
        before = self.residual.memory_factor(workload, f.trial.stage)
        self.residual.add_memory(MemorySample(workload, m.name, f.trial.stage, int(f.estimate.memory.total_bytes),
                                              f.limit_bytes, "oom"))
        after = self.residual.memory_factor(workload, f.trial.stage)
        self.forecaster.forget()
        return before, after

    def _report(self, v: Verification) -> None:
        m = v.measurement
        error = v.error
        detail = f"predicted {format_value(v.forecast.value)}, error {error:+.1%}" if error is not None else ""
        status = m.shown_status()
        self._ok.append(m)
        self.progress.finished(m.name, status, detail, m.value, self._leader())
        if detail:
            self.progress.note(f"{m.name}: measured {format_value(m.value)}, {detail}")

    def _leader(self) -> tuple[str, float] | None:
        """The best verified run so far: (name, value)."""
        best = best_measurement(self._ok, self.forecaster.metric)
        return (best.name, best.value) if best is not None and best.value is not None else None
