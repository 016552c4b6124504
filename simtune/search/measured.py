"""The measured strategy: DeepSpeed's exploration order, every candidate run for real.

The order is that of DeepSpeed's ``Autotuner.tune`` / ``tune_space`` (autotuner.py), with its
defects fixed:

1. ZeRO stages in increasing order (those in the tuning space). A stage the memory estimate
   (``fits(stage, mbs)``, optional) says cannot hold the starting micro-batch size is skipped.
2. Per stage, the micro-batch size (mbs):

   - a user list: exactly those values (those the estimate does not rule out), each with
     ``gas = max(list) * gas_user // mbs`` so that the global batch stays about constant;
   - otherwise the largest runnable mbs at the user's accumulation steps. The first stage starts
     at the user's minimum (then ``min_train_micro_batch_size_per_gpu`` if that fails); a later
     stage starts at the largest mbs found so far and is abandoned if that does not run. Then the
     upper bound ``min(max_train_micro_batch_size_per_gpu, max_train_batch_size / dp, the largest
     mbs the estimate fits)`` is tried and, if it fails, a binary search runs between the last
     success and the first failure. Any outcome but ok is a failure. The search stops growing
     when a success is less than ``PLATEAU`` (5 %) better than the previous one (DeepSpeed's
     plateau rule);
   - then DeepSpeed's tuning list (:meth:`TuningSpace.tuning_micro_batch_sizes`), of which the
     ``num_tuning_micro_batch_sizes`` largest run, each with the gas that holds the per-GPU batch
     about constant (:meth:`TuningSpace.gas_for`). DeepSpeed's extra probing just below the
     largest mbs (which reads a stale metrics file) is not done.

3. The stage's other dimensions (ZeRO knobs when ``fast`` is false, and simtune's offload and
   activation-checkpointing choices when asked for) are explored by a tuner (:mod:`.tuners`),
   with the stage's best mbs and gas held fixed. Knobs that have no effect in the installed
   DeepSpeed (:func:`simtune.space.dead_knobs`) are left out unless ``prune_dead_knobs`` is off.
4. A stage whose best is worse than the best so far by more than ``WORSE_STAGE`` (5 %) ends the
   search: its knobs are not tuned and later stages are skipped (``stop_at_worse_stage``;
   DeepSpeed's README states this rule, its code does not apply it).

The metric's direction is respected everywhere (latency: lower is better; DeepSpeed maximises
it). Each experiment name runs at most once per search; a failed experiment is a recorded
result and the search goes on. A success whose step time moved within its measured window
(:mod:`simtune.runner.steadiness`) and that no other process disturbed runs once more at once, as
``<name>_rerun``; the steadier of the two stands for the configuration in every decision above,
the other is kept with status "unsteady" and no figure (as a verification is,
:mod:`simtune.search.verify`). Names follow DeepSpeed's: knobs at their default value are left
out, so the knob experiment that repeats the stage's best is not run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from simtune.progress import Progress
from simtune.runner.steadiness import RERUN_PHASE, rerun_notes
from simtune.space import Trial, TuningSpace
from simtune.search.memory_bound import MemoryBound
from simtune.search.outcome import (Measurement, RunnerLike, SearchOutcome, StageOutcome,
                                    best_measurement, default_experiment, rerun_verdict)
from simtune.search.tuners import TunerSettings, make_tuner, run_tuner

PLATEAU = 0.05
"""Relative gain below which a larger mbs counts as no better (DeepSpeed's METRIC_PERCENT_DIFF_CONST)."""

WORSE_STAGE = 0.05
"""A stage worse than the best so far by more than this fraction stops the search."""

Fits = Callable[[int, int], "bool | None"]
"""Memory estimate: ``fits(stage, mbs)`` is False when it cannot fit, None when unknown."""


@dataclass(frozen=True)
class MeasureOptions:
    """simtune's settings of the measured search (DeepSpeed's come from the space's "autotuning")."""

    stop_at_worse_stage: bool = True
    """Skip later stages once a stage's best is more than 5 % worse than the best so far."""
    prune_dead_knobs: bool = True
    """Leave out knobs the installed DeepSpeed ignores (allgather_partitions, ...)."""
    parallel: int = 1
    """Experiments that run at once (the slot sets the resources hold)."""
    seed: int = 0
    """Seed of the random and model-based tuners."""


class MeasuredSearch:
    """The exploration of the module docstring, run against a runner."""

    def __init__(
        self,
        space: TuningSpace,
        runner: RunnerLike,
        options: MeasureOptions = MeasureOptions(),
        *,
        fits: Fits | None = None,
        memory: MemoryBound | None = None,
        progress: Progress | None = None,
        make_experiment: Callable[[str, Trial, dict[str, Any]], Any] = default_experiment,
    ):
        self.space = space
        self.runner = runner
        self.options = options
        self.autotuning = space.autotuning
        self.fits = fits
        self.memory = memory
        self.progress = progress or Progress(metric=space.autotuning.metric, quiet=True)
        self.make_experiment = make_experiment
        self.metric = space.autotuning.metric_spec
        self._memo: dict[str, Measurement] = {}
        self._finished: list[Measurement] = []
        self._notes: list[str] = []
        self._stages: list[StageOutcome] = []

    # ---------------------------------------------------------------------------- the search
    def run(self) -> SearchOutcome:
        largest_so_far = 0
        stop_reason = ""
        for stage in self.space.stages:
            if stop_reason:
                self._stages.append(StageOutcome(stage, note=stop_reason))
                continue
            self.progress.note(f"stage {stage}: tuning")
            outcome = self._tune_stage(stage, largest_so_far)
            if outcome.note:
                self._note(f"stage {stage}: {outcome.note}")
            self._stages.append(outcome)
            largest_so_far = max(largest_so_far, outcome.max_micro_batch_size or 0)
            worse = self._worse_reason(outcome.best) if outcome.best is not None else ""
            if worse:
                stop_reason = f"skipped because stage {stage} {worse}"
                self._note(f"stage {stage} {worse}, so later stages are skipped")
        return self.outcome()

    def outcome(self) -> SearchOutcome:
        """What the search has found so far (all of it once :meth:`run` has returned)."""
        return SearchOutcome(
            metric=self.metric,
            measurements=tuple(self._finished),
            stages=tuple(self._stages),
            best=self._leader(),
            notes=tuple(self._notes),
        )

    def _note(self, message: str) -> None:
        self._notes.append(message)
        self.progress.note(message)

    def _worse_reason(self, best: Measurement) -> str:
        """Non-empty when ``best`` is more than WORSE_STAGE worse than the best so far."""
        leader = self._leader()
        if not self.options.stop_at_worse_stage or leader is None or leader.value is None or best.value is None:
            return ""
        gain = self.metric.gain(best.value, leader.value)
        if gain >= -WORSE_STAGE:
            return ""
        return (f"is {-gain:.0%} worse ({best.name} {best.value:.4g}) than the best so far "
                f"({leader.name} {leader.value:.4g})")

    # ---------------------------------------------------------------------------- one stage
    def _tune_stage(self, stage: int, largest_so_far: int) -> StageOutcome:
        gas = self.space.gradient_accumulation_steps
        notes: list[str] = []
        if self.space.micro_batch_sizes is not None:
            listed = self.space.micro_batch_sizes
            fitting = [m for m in listed if self._may_fit(stage, m)]
            if len(fitting) < len(listed):
                out = sorted(set(listed) - set(fitting))
                why = self._memory_note(stage, out[0])
                notes.append(f"the memory estimate rules out micro-batch sizes {out}" + (f" (at {out[0]} {why})"
                                                                                         if why else ""))
            top = max(listed)
            runs = self._run([self.space.trial(stage, m, self.space.gas_for(m, top)) for m in fitting], "list")
            ran = [r.trial.micro_batch_size for r in runs if r.ok]
            largest = max(ran) if ran else None
        else:
            found = self._largest_mbs(stage, largest_so_far, gas)
            if isinstance(found, str):
                return self._outcome(stage, None, found)
            smallest, largest = found
            sizes = self.space.tuning_micro_batch_sizes(smallest, largest)
            sizes = sizes[-self.autotuning.num_tuning_micro_batch_sizes:]
            self._run([self.space.trial(stage, m, self.space.gas_for(m, largest)) for m in sizes], "tuning-list")
        best = self._stage_best(stage)
        if best is None:
            notes.append("no experiment of this stage ran")
        elif not self._worse_reason(best):
            tuner_note = self._tune_variants(stage, best)
            if tuner_note:
                notes.append(tuner_note)
        return self._outcome(stage, largest, "; ".join(notes))

    def _outcome(self, stage: int, largest: int | None, note: str) -> StageOutcome:
        names = tuple(name for name, m in self._memo.items() if m.trial.stage == stage)
        return StageOutcome(stage, names, self._stage_best(stage), largest, note)

    def _stage_best(self, stage: int) -> Measurement | None:
        return self._best_of(m for m in self._memo.values() if m.trial.stage == stage)

    def _leader(self) -> Measurement | None:
        """The best experiment so far."""
        return self._best_of(self._finished)

    def _best_of(self, measurements: Iterable[Measurement]) -> Measurement | None:
        return best_measurement(measurements, self.metric)

    def _may_fit(self, stage: int, mbs: int) -> bool:
        return ((self.fits is None or self.fits(stage, mbs) is not False)
                and (self.memory is None or self.memory.fits(stage, mbs) is not False))

    def _memory_note(self, stage: int, mbs: int) -> str:
        """Why the memory that exists rules ``mbs`` out; empty when it does not."""
        if self.memory is None or self.memory.fits(stage, mbs) is not False:
            return ""
        return self.memory.reason(stage, mbs)

    def upper_bound(self, stage: int, start: int) -> int:
        """The largest mbs worth trying: the space's cap, lowered to the largest the estimate fits
        (a note says which bound was applied)."""
        bound = self.space.max_micro_batch_size
        if bound > start and not self._may_fit(stage, bound):
            fits_low, fails_high = start, bound
            while fails_high - fits_low > 1:
                mid = (fits_low + fails_high) // 2
                if self._may_fit(stage, mid):
                    fits_low = mid
                else:
                    fails_high = mid
            bound = fits_low
        return bound

    def _note_bound(self, stage: int, bound: int) -> None:
        """Say so when the memory that exists is what keeps the stage at ``bound``."""
        why = self._memory_note(stage, bound + 1) if bound < self.space.max_micro_batch_size else ""
        if why:
            self._note(f"stage {stage}: micro-batch sizes above {bound} are not launched (the space goes up to "
                       f"{self.space.max_micro_batch_size}): at {bound + 1} {why}")

    def _largest_mbs(self, stage: int, largest_so_far: int, gas: int) -> tuple[int, int] | str:
        """(starting, largest) runnable mbs at accumulation ``gas``, or why the stage is abandoned."""
        if largest_so_far:
            start = largest_so_far
            if not self._may_fit(stage, start):
                return f"the memory estimate says micro-batch size {start} (the largest so far) does not fit"
            first = self._run_one(self.space.trial(stage, start, gas), "start")
            if not first.ok:
                return (f"abandoned: micro-batch size {start}, the largest so far, does not run here "
                        f"({first.status})")
        else:
            starts = list(dict.fromkeys([self.space.min_micro_batch_size,
                                         self.autotuning.min_train_micro_batch_size_per_gpu]))
            starts = [m for m in starts if self._may_fit(stage, m)]
            if not starts:
                return "skipped: the memory estimate says not even the smallest micro-batch size fits"
            for start in starts:
                first = self._run_one(self.space.trial(stage, start, gas), "start")
                if first.ok:
                    break
            else:
                tried = f"micro-batch size {starts[0]} does not run" if len(starts) == 1 else \
                    f"neither micro-batch size {starts[0]} nor {starts[1]} runs"
                return f"abandoned: {tried} ({first.status})"
        bound = self.upper_bound(stage, start)
        if bound <= start:
            self._note_bound(stage, start)
            return start, start
        ran, ran_value = start, first.value
        while True:  # a success can raise the bound: its peak tells how memory grows
            top = self._run_one(self.space.trial(stage, bound, gas), "upper-bound")
            if not top.ok:
                break
            higher = self.upper_bound(stage, bound)
            if higher <= bound:
                self._note_bound(stage, bound)
                return start, bound
            ran, ran_value, bound = bound, top.value, higher
        low, high, reference = ran + 1, bound - 1, ran_value
        while low <= high:
            mid = (low + high) // 2
            run = self._run_one(self.space.trial(stage, mid, gas), "binary-search")
            if run.value is None:
                high = mid - 1
                continue
            low = mid + 1
            if reference is not None and self.metric.gain(run.value, reference) < PLATEAU:
                self._note(f"stage {stage}: the metric plateaus at micro-batch size {mid}")
                break
            reference = run.value
        return start, low - 1

    # ---------------------------------------------------------------------------- knobs etc.
    def _tune_variants(self, stage: int, best: Measurement) -> str:
        mbs, gas = best.trial.micro_batch_size, best.trial.gradient_accumulation_steps
        candidates = self.space.variants(stage, mbs, gas, prune_dead=self.options.prune_dead_knobs)
        if len(candidates) < 2:
            return ""
        settings = TunerSettings(
            num_trials=self.autotuning.tuner_num_trials,
            early_stopping=self.autotuning.tuner_early_stopping,
            batch_size=max(1, self.options.parallel),
            seed=self.options.seed,
        )
        tuner = make_tuner(self.autotuning.tuner_type, candidates, settings, self.metric)
        self.progress.note(f"stage {stage}: {self.autotuning.tuner_type} tuner over {len(candidates)} "
                           f"settings at micro-batch size {mbs}, gas {gas}")
        outcome = run_tuner(tuner, lambda batch: [m.value for m in self._run(batch, "tuner")])
        return f"the {self.autotuning.tuner_type} tuner measured {len(outcome.evaluated)} of " \
               f"{len(candidates)} settings and stopped: {outcome.stop_reason}"

    # ---------------------------------------------------------------------------- running
    def _run_one(self, trial: Trial, phase: str) -> Measurement:
        return self._run([trial], phase)[0]

    def _run(self, trials: Sequence[Trial], phase: str) -> list[Measurement]:
        """Run the trials not yet run in this search, ``parallel`` at a time; all their measurements."""
        named = [(self.space.name(t), t) for t in trials]
        fresh = list({name: t for name, t in named if name not in self._memo}.items())
        step = max(1, self.options.parallel)
        for i in range(0, len(fresh), step):
            self._launch(fresh[i:i + step], phase)
        return [self._memo[name] for name, _ in named]

    def _launch(self, group: list[tuple[str, Trial]], phase: str) -> None:
        firsts = [self._record(run) for run in self._ran(group, phase)]  # all kept before any rerun
        for first in firsts:
            self._steadied(first)

    def _ran(self, group: list[tuple[str, Trial]], phase: str) -> list[Measurement]:
        """Run ``group`` at once; the measurements in its order."""
        experiments = [self.make_experiment(name, trial, self.space.render(trial)) for name, trial in group]
        self.progress.started([name for name, _ in group])
        results = {r.name: r for r in self.runner.run(experiments)}
        return [self._measurement(name, trial, results[name], phase, experiment.ds_config)
                for (name, trial), experiment in zip(group, experiments)]

    def _record(self, measurement: Measurement, *, stands: bool = True) -> Measurement:
        """Keep ``measurement`` (for its configuration when it ``stands``) and say so."""
        if self.memory is not None and measurement.ok:
            self.memory.learn(measurement.trial.stage, measurement.trial.micro_batch_size, measurement.metrics)
        if stands:
            self._memo[self.space.name(measurement.trial)] = measurement
        self._finished.append(measurement)
        self._finished_line(measurement)
        if measurement.load_note:
            self.progress.note(measurement.load_note)
        return measurement

    def _finished_line(self, measurement: Measurement) -> None:
        leader = self._leader()
        self.progress.finished(measurement.name, measurement.shown_status(), measurement.reason, measurement.value,
                               (leader.name, leader.value) if leader and leader.value is not None else None)

    def _steadied(self, first: Measurement) -> None:
        """Run ``first``'s configuration once more when it succeeded with a step time that moved
        within its window and no other process disturbed it (their load explains the move); the
        steadier success (the smaller move, ``first`` on a tie) stands, the other is set aside. A
        rerun that fails leaves ``first``."""
        shift = first.unsteady_shift
        if not first.ok or shift is None or first.load_note is not None:
            return
        name, starting, moved = rerun_notes(first.name, shift)
        self.progress.note(starting)
        (again,) = self._ran([(name, first.trial)], RERUN_PHASE)
        if not again.ok:
            self._record(again, stands=False)
            self._note(f"{moved}, which ended {again.status}: {first.name}'s figure stands")
            return
        verdict = rerun_verdict(first, again)
        if verdict.again_stands:
            self._finished[self._finished.index(first)] = verdict.aside
            self._finished_line(verdict.aside)
            self._record(again)
        else:
            self._record(verdict.aside, stands=False)
        self._note(f"{moved}, {verdict.note}")

    def _measurement(self, name: str, trial: Trial, result: Any, phase: str, ds_config: dict[str, Any]) -> Measurement:
        return Measurement.of_result(name, trial, result, phase=phase, ds_config=ds_config,
                                     metric_key=self.autotuning.metric_key)
