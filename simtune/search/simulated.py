"""The simulated strategy: search the whole space against the cost model, run only the best few.

1. Predict: :class:`~simtune.search.forecast.Forecaster` wraps the predictor
   (:class:`simtune.prediction.predictor.Predictor`) with the residual model's corrections and the memory
   limit (the device memory limit, or the memory budget when lower).
2. Bound the space: :class:`~simtune.search.model_space.ModelSpace`, every dimension of the
   tuning space with micro-batch sizes up to the largest predicted to fit.
3. Study: :class:`~simtune.search.study.ModelStudy`, an Optuna study (seeded TPE, then a local
   polish) stored in ``results_dir/study.db`` or the storage given (``storage``); resumed when the
   same search runs again.
4. Check: when the space has at most ``enumerate_limit`` points, every point is predicted and the
   study's best is compared with the model's true optimum (the gap is reported). The
   verification candidates are then drawn from every point, else from the study's points.
5. Verify: the top ``verify_top`` predictions, spread over the model's doubt
   (:mod:`~simtune.search.doubt`), run for real (:mod:`~simtune.search.verify`); failures
   are replaced and teach the model. The measured best is the answer; with
   ``confirm_close_calls`` N, a close call between the two best is settled by N more runs of each
   and the better mean is the answer.
6. Feedback: the residual model, with this search's measurements added, is saved for the next
   search (by the caller, :meth:`SimulatedSearch.save_residual`).

``verify_top = 0`` stops after step 4: the predicted best is the answer, marked as predicted.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from simtune.errors import StorageError
from simtune.search.outputs import ModelReport, PredictionRow
from simtune.progress import Progress, format_value
from simtune.prediction.residual import ResidualModel
from simtune.space import Trial, TuningSpace
from simtune.search.forecast import Forecast, Forecaster, PredictorLike
from simtune.search.outcome import (Measurement, RunnerLike, SearchOutcome, StageOutcome, best_measurement,
                                    default_experiment)
from simtune.search.model_space import ModelSpace
from simtune.search.study import ModelStudy, StudyResult, study_name
from simtune.search.verify import Settlement, Verification, Verifier, keep_latest
from simtune.search.study_storage import STUDY_FILE, StudyStorage, reason_of, storage_failures

ENUMERATE_LIMIT = 20_000
"""Spaces with at most this many points are also enumerated against the model."""


@dataclass(frozen=True)
class SimulateOptions:
    verify_top: int = 3
    """Predictions run for real (0: none; the predicted best is returned)."""
    search_trials: int = 200
    """Trials of the Optuna study."""
    seed: int = 0
    enumerate_limit: int = ENUMERATE_LIMIT
    max_replacements: int | None = None
    """Failed candidates replaced at most this many times (default: verify_top)."""
    prune_dead_knobs: bool = True
    parallel: int = 1
    """Verifications run side by side (the runner's slot sets)."""
    confirm_close_calls: int = 0
    """When one run each cannot tell the two best verified apart, run each this many more times
    and return the better mean (0: only say so)."""


@dataclass(frozen=True)
class EnumerationCheck:
    """The study's best against the model's true optimum over every point."""

    points: int
    optimum: Forecast | None
    study_best: Forecast | None
    gap: float | None
    """How far the study's best is predicted below the optimum (0: it found it)."""
    seconds: float

    @property
    def found_optimum(self) -> bool:
        return self.gap is not None and self.gap <= 1e-9

    def sentence(self, metric: str) -> str:
        if self.optimum is None:
            return f"all {self.points} points enumerated: none is predicted to fit"
        if self.study_best is None:
            return (f"all {self.points} points enumerated: the model's optimum is {self.optimum.name} "
                    f"({metric} {format_value(self.optimum.value)}) but the study found no feasible point")
        if self.found_optimum:
            return (f"all {self.points} points enumerated: the study's best {self.study_best.name} is the model's "
                    f"optimum ({metric} {format_value(self.optimum.value)}), gap 0%")
        return (f"all {self.points} points enumerated: the model's optimum is {self.optimum.name} "
                f"({metric} {format_value(self.optimum.value)}); the study's best {self.study_best.name} is "
                f"{self.gap:.2%} below it")


@dataclass(frozen=True)
class SimulationOutcome:
    """Everything the simulated search found."""

    outcome: SearchOutcome
    """The verified experiments in the measured strategy's form (outputs read this)."""
    model_space: ModelSpace
    study: StudyResult
    enumeration: EnumerationCheck | None
    verifications: tuple[Verification, ...]
    error_estimate: float
    """The relative error the doubt-aware choice used."""
    error_source: str
    """Where that error estimate comes from, in words."""
    predicted_best: Forecast | None
    stage_best: tuple[tuple[int, Forecast], ...]
    """The best feasible prediction of each stage (from the study, or the enumeration)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """study, enumeration, verification."""
    settlement: Settlement | None = None
    """A close call between the two best settled by more runs (``confirm_close_calls``)."""

    @property
    def predicted_only(self) -> bool:
        return not self.verifications

    @property
    def predictions(self) -> dict[str, float]:
        """Experiment name -> predicted metric value (verified ones, or the predicted best)."""
        if self.verifications:
            return {v.measurement.name: v.forecast.value for v in self.verifications}
        return {f.name: f.value for _, f in self.stage_best}


class SimulatedSearch:
    """The model-driven search of the module docstring."""

    def __init__(self, space: TuningSpace, predictor: PredictorLike, runner: RunnerLike | None, *,
                 results_dir: str | Path, residual: ResidualModel | None = None, workload: str = "",
                 identity: Mapping[str, Any] | None = None, options: SimulateOptions = SimulateOptions(),
                 memory_budget_bytes: int | None = None, progress: Progress | None = None,
                 make_experiment: Callable[[str, Trial, dict[str, Any]], Any] = default_experiment,
                 storage: StudyStorage | None = None):
        self.space = space
        self.runner = runner
        self.results_dir = Path(results_dir)
        self.storage = storage or StudyStorage.default(results_dir)
        self.storage_place = self.storage.shown if storage else str(self.results_dir / STUDY_FILE)
        """Where the study is, as the progress lines say it."""
        self.residual = residual if residual is not None else ResidualModel()
        self.workload = workload
        self.identity = identity
        self.options = options
        self.memory_budget_bytes = memory_budget_bytes
        self.progress = progress or Progress(metric=space.autotuning.metric, quiet=True)
        self.make_experiment = make_experiment
        self.forecaster = Forecaster(predictor, space, residual=self.residual, workload=workload,
                                     memory_budget_bytes=memory_budget_bytes)
        self.residual_fingerprint = self.residual.fingerprint()
        self.verifications: list[Verification] = []
        self._study_name: str | None = None
        self._storage: Any = None

    # ---------------------------------------------------------------------------- the search
    def run(self) -> SimulationOutcome:
        seconds: dict[str, float] = {}
        started = time.monotonic()
        model_space = ModelSpace.build(self.space, lambda t: self.forecaster.forecast(t).feasible,
                                       prune_dead=self.options.prune_dead_knobs)
        self.progress.note(f"model space: {model_space.size()} configurations ({model_space.describe()})")
        name = self.study_name(model_space)
        self._storage = self.storage.open()
        study = ModelStudy(model_space, self.forecaster, storage=self._storage, name=name,
                           seed=self.options.seed, progress=self.progress.note, where=self.storage.shown,
                           inputs={"workload": self.workload, **(self.identity or {})})  # named in a shared storage
        self.progress.note(f"studying {self.options.search_trials} trials against the model "
                           f"(Optuna, {self.storage_place}, study {name})")
        try:
            result = study.run(self.options.search_trials)
        except storage_failures() as exc:  # the writer's failures are StorageErrors already
            raise StorageError(f"The study storage {self.storage.shown} failed: {reason_of(exc)}.") from None
        seconds["study"] = time.monotonic() - started

        enumeration: EnumerationCheck | None = None
        everything: list[Forecast] = []
        if model_space.size() <= self.options.enumerate_limit:
            enumeration, everything = self._enumerate(model_space, result)
            seconds["enumeration"] = enumeration.seconds
            self.progress.note(enumeration.sentence(self.forecaster.metric.name))
        pool = list(dict.fromkeys([f.trial for f in result.forecasts] + [f.trial for f in everything]))
        ranked = sorted(self.forecaster.forecast_many(pool), key=self.forecaster.sort_key)
        best = ranked[0] if ranked and ranked[0].feasible else None
        stage_best = self._stage_best(ranked)
        error = self.residual.error_estimate(self.workload)
        source = error_source(self.residual, self.workload)
        if best is not None:
            self.progress.note(f"predicted best: {best.name} ({self.forecaster.metric.name} {format_value(best.value)}); "
                               f"the model's error estimate is {error:.0%}")
        else:
            self.progress.note("no configuration is predicted to fit in memory")

        verifications: tuple[Verification, ...] = ()
        notes: list[str] = []
        settlement: Settlement | None = None
        if self.options.verify_top > 0 and best is not None:
            if self.runner is None:
                raise ValueError("a runner is needed to verify predictions")
            started_verify = time.monotonic()
            verifier = Verifier(self.space, self.runner, self.forecaster, k=self.options.verify_top, error=error,
                                parallel=self.options.parallel, max_replacements=self.options.max_replacements,
                                progress=self.progress, on_result=self._record,
                                make_experiment=self.make_experiment, confirm=self.options.confirm_close_calls)
            verified = verifier.run(pool)
            verifications = verified.verifications
            settlement = verified.settlement
            notes.extend(verified.notes)
            seconds["verification"] = time.monotonic() - started_verify
        outcome = self._search_outcome(verifications, best, notes, settlement)
        return SimulationOutcome(outcome, model_space, result, enumeration, verifications, error, source, best,
                                 stage_best, seconds, settlement)

    def study_name(self, model_space: ModelSpace) -> str:
        """The study of these inputs: workload, space, profile and residual model, metric, limit."""
        if self._study_name is None:
            self._study_name = study_name(self.identity, self.workload, model_space.fingerprint_data(),
                                          self.space.autotuning.metric, self.memory_budget_bytes,
                                          self.residual_fingerprint, self.options.seed)
        return self._study_name

    def partial_outcome(self) -> SearchOutcome:
        """The verifications finished so far (after an interrupt)."""
        return self._search_outcome(tuple(self.verifications), None,
                                    ["interrupted; the study and the finished experiments are kept"])

    def save_residual(self) -> Path | None:
        """Store the residual model with this search's measurements (where it was loaded from);
        None when it has no such place or learnt nothing (every run crashed or timed out)."""
        if self.residual.path is None or not self.residual.learnt:
            return None
        return self.residual.save()

    def residual_note(self, saved: Path) -> str:
        """What the saved residual model learnt: the experiments it took a sample from (a
        configuration settled by more runs counts once), and the failures it could not learn from."""
        learnt = len(self.residual.learnt)
        unused = sum(1 for v in self.verifications if v.measurement.failed and v.measurement.status != "oom")
        skipped = f" ({unused} experiment(s) that crashed, timed out or gave no metric teach it nothing)" \
            if unused else ""
        return f"residual model updated with {learnt} measurement(s){skipped}: {saved}"

    # ---------------------------------------------------------------------------- steps
    def _enumerate(self, model_space: ModelSpace, result: StudyResult) -> tuple[EnumerationCheck, list[Forecast]]:
        started = time.monotonic()
        forecasts = self.forecaster.forecast_many(model_space.points())
        feasible = [f for f in forecasts if f.feasible]
        optimum = min(feasible, key=self.forecaster.sort_key) if feasible else None
        gap = None
        if optimum is not None and result.best is not None:
            gap = max(0.0, self.forecaster.metric.shortfall(optimum.value, result.best.value))
        check = EnumerationCheck(len(forecasts), optimum, result.best, gap, time.monotonic() - started)
        return check, feasible

    @staticmethod
    def _stage_best(ranked: list[Forecast]) -> tuple[tuple[int, Forecast], ...]:
        best: dict[int, Forecast] = {}
        for f in ranked:
            if f.feasible and f.trial.stage not in best:
                best[f.trial.stage] = f
        return tuple(sorted(best.items()))

    def _record(self, verification: Verification) -> None:
        """Keep every verification (a later record of an experiment, such as a run set aside as
        unsteady, replaces the earlier), and write it into the study (inspectable with Optuna)."""
        keep_latest(self.verifications, verification)
        try:
            import optuna  # loaded by the study already; kept out of the module's imports

            study = optuna.load_study(study_name=self._study_name, storage=self._storage)
            m = verification.measurement
            study.set_user_attr(f"verified:{m.name}", {
                "trial": m.trial.to_dict(), "status": m.status, "reason": m.reason, "measured": m.value,
                "predicted": verification.forecast.value, "reused": m.reused, "result_dir": m.result_dir,
            })
        except Exception:  # noqa: BLE001 - the record in results_dir is what resuming relies on
            pass

    def _search_outcome(self, verifications: tuple[Verification, ...], best: Forecast | None,
                        notes: list[str], settlement: Settlement | None = None) -> SearchOutcome:
        if not verifications:
            measurements: tuple[Measurement, ...] = ()
            chosen = self.predicted_measurement(best) if best is not None else None
            stages: tuple[StageOutcome, ...] = ()
        else:
            measurements = tuple(v.measurement for v in verifications)
            # the runs that settle a close call are not candidates of their own: each settled
            # configuration stands for all its runs with their mean as its value
            means = settlement.means if settlement else {}
            candidates = [dataclasses.replace(m, value=means[m.name]) if m.name in means else m
                          for m in measurements if m.phase != "confirm"]
            if settlement is not None:  # the two led every other run; the settlement decides between them
                chosen = next(m for m in candidates if m.name == settlement.winner)
            else:
                chosen = best_measurement(candidates, self.forecaster.metric)
            per_stage = []
            for stage in self.space.stages:
                own = [m for m in measurements if m.trial.stage == stage]
                if not own:
                    continue
                ok = [m for m in candidates if m.trial.stage == stage and m.ok]
                per_stage.append(StageOutcome(stage, tuple(m.name for m in own),
                                              best_measurement(ok, self.forecaster.metric),
                                              max((m.trial.micro_batch_size for m in ok), default=None)))
            stages = tuple(per_stage)
        return SearchOutcome(metric=self.forecaster.metric, measurements=measurements,
                             stages=stages, best=chosen, notes=tuple(notes))

    def predicted_measurement(self, forecast: Forecast) -> Measurement:
        """A prediction in the form of a measurement (status "predicted"), for outputs."""
        return Measurement(name=forecast.name, trial=forecast.trial, status="predicted",
                           reason="predicted by the model; not run", metrics=forecast.metrics(
                               self.space.global_batch(forecast.trial)), value=forecast.value, result_dir="",
                           wall_s=0.0, phase="predicted", ds_config=self.space.render(forecast.trial))


def error_source(residual: ResidualModel, workload: str) -> str:
    """Where the error estimate comes from, in words."""
    corrector = residual.corrector(workload)
    held_out, origin = residual.error_evidence(workload)
    if origin == "own":
        return (f"held-out error of the {corrector.kind} residual correction over {corrector.samples} verified runs "
                f"of this workload; the uncorrected model's is {corrector.base_error:.1%}")
    others = len(residual.time_samples) - corrector.samples
    own = (f"; its {corrector.samples} run(s) of this workload scale the predictions by their mean ratio"
           if corrector.samples else "")
    if origin == "others":
        return (f"held-out error over {others} verified runs of other workloads on this hardware profile, once one "
                f"common factor is removed{own}")
    return f"default: too few verified runs on this hardware profile yet{own}"


def model_report(result: SimulationOutcome, space: TuningSpace, *, profile: str, profile_kind: str,
                 calibration_s: float, total_s: float, calibration_note: str | None = None,
                 residual_file: str | None = None, launches: str | None = None,
                 optimizer_note: str | None = None) -> ModelReport:
    """The account summary.txt, results.json and predictions.json give of a simulated search."""
    rows = []
    if result.verifications:
        for v in result.verifications:
            m, f = v.measurement, v.forecast
            rows.append(PredictionRow(m.name, m.trial.to_dict(), m.status, f.value, m.value, v.error, v.reason,
                                      m.reused, v.replaces, f.metrics(space.global_batch(f.trial)),
                                      dict(m.metrics) if m.metrics is not None else None, f.terms()))
    else:
        best_name = result.predicted_best.name if result.predicted_best else None
        ordered = sorted((f for _, f in result.stage_best), key=lambda f: (f.name != best_name, f.trial.stage))
        for f in ordered:
            why = "best prediction" if f.name == best_name else f"best prediction at stage {f.trial.stage}"
            rows.append(PredictionRow(f.name, f.trial.to_dict(), "predicted", f.value, None, None, why,
                                      predicted_metrics=f.metrics(space.global_batch(f.trial)), terms=f.terms()))
    launched = sum(1 for v in result.verifications if not v.measurement.reused)
    enumeration = result.enumeration
    return ModelReport(
        profile=profile, profile_kind=profile_kind, predicted_only=result.predicted_only,
        space_points=result.model_space.size(), study_name=result.study.name, study_storage=result.study.storage,
        study_trials=result.study.completed, study_resumed_from=result.study.resumed_from,
        enumeration=enumeration.sentence(space.autotuning.metric) if enumeration else None,
        enumeration_gap=enumeration.gap if enumeration else None, error_estimate=result.error_estimate,
        error_source=result.error_source, calibration_s=calibration_s,
        search_s=result.seconds.get("study", 0.0) + result.seconds.get("enumeration", 0.0),
        verification_s=result.seconds.get("verification", 0.0), total_s=total_s, real_experiments=launched,
        reused_experiments=len(result.verifications) - launched, rows=tuple(rows),
        calibration_note=calibration_note, residual_path=residual_file,
        settled=result.settlement is not None, launches=launches, optimizer_note=optimizer_note)
