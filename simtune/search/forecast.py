"""Predictions as the search uses them: the cost model's estimate of a trial, corrected by what
real runs taught (the residual model), ranked by the configured metric, checked against memory.

    step_s    = estimate.time.step_s * r(trial)                 r: residual factor (1 without samples)
    memory    = estimate.memory.total_bytes * m(stage)          m: memory correction (>= 1)
    feasible  = estimate.feasible and memory <= limit           limit = min(memory limit, budget)
    value     = global batch / step_s (throughput), 1000 * step_s (latency),
                flops_per_gpu * estimate step_s / step_s (FLOPS)

The predictor is anything with ``predict(trial) -> simtune.model.Estimate``
(:class:`simtune.prediction.predictor.Predictor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol

from simtune.metrics import step_metrics
from simtune.model.estimate import Estimate
from simtune.prediction.residual import ResidualModel, residual_features
from simtune.space import Trial, TuningSpace


class PredictorLike(Protocol):
    def predict(self, trial: Trial) -> Estimate: ...


@dataclass(frozen=True)
class Forecast:
    """One trial's corrected prediction."""

    trial: Trial
    name: str
    """The experiment name the trial runs under."""
    estimate: Estimate
    """The cost model's estimate (uncorrected): every memory and time term."""
    step_s: float
    """Predicted step time after the residual correction."""
    value: float
    """Predicted metric value (throughput, latency or FLOPS) from ``step_s``."""
    memory_bytes: int
    """Predicted peak memory per rank after the memory correction."""
    limit_bytes: int
    """What a rank may use: the cost model's memory limit (usable memory + fixed overhead, as the
    predicted peak includes that overhead), or the memory budget when lower."""
    feasible: bool
    residual_ratio: float = 1.0
    features: Mapping[str, float] | None = None

    @property
    def base_step_s(self) -> float:
        return float(self.estimate.time.step_s)

    def metrics(self, global_batch: int) -> dict[str, float | None]:
        """The prediction in metrics.json's terms."""
        flops_per_step = float(self.estimate.metrics.flops_per_gpu) * self.base_step_s
        return {
            **step_metrics(self.step_s, global_batch, flops_per_step),
            "step_time_s": self.step_s,
            "peak_memory_bytes": self.memory_bytes,
        }

    def terms(self) -> dict[str, Any]:
        """Every predicted term: memory and time (uncorrected), and the corrections applied."""
        memory, time = self.estimate.memory, self.estimate.time
        names = [n for n in getattr(type(memory), "__dataclass_fields__", {})]
        time_names = [n for n in getattr(type(time), "__dataclass_fields__", {})]
        return {
            "memory": {n: getattr(memory, n) for n in names},
            "time": {n: getattr(time, n) for n in time_names},
            "residual_ratio": self.residual_ratio,
            "corrected_step_s": self.step_s,
            "corrected_memory_bytes": self.memory_bytes,
            "limit_bytes": self.limit_bytes,
        }


class Forecaster:
    """Corrected, cached predictions of trials of one space (see the module docstring)."""

    def __init__(self, predictor: PredictorLike, space: TuningSpace, *, residual: ResidualModel | None = None,
                 workload: str = "", memory_budget_bytes: int | None = None):
        self.predictor = predictor
        self.space = space
        self.residual = residual or ResidualModel()
        self.workload = workload
        self.memory_budget_bytes = memory_budget_bytes
        self.metric = space.autotuning.metric_spec
        self._cache: dict[Trial, Forecast] = {}
        self.evaluations = 0

    def forecast(self, trial: Trial) -> Forecast:
        return self.forecast_many([trial])[0]

    def forecast_many(self, trials: Iterable[Trial]) -> list[Forecast]:
        """Forecasts in input order (each trial predicted once; residuals computed in one batch)."""
        trials = list(trials)
        fresh = [t for t in dict.fromkeys(trials) if t not in self._cache]
        if fresh:
            estimates = [self.predictor.predict(t) for t in fresh]
            self.evaluations += len(fresh)
            features = [residual_features(t, e, self.space.knob_values(t), self.space.dp_size)
                        for t, e in zip(fresh, estimates)]
            ratios = self.residual.ratios(features, self.workload)
            for trial, estimate, row, ratio in zip(fresh, estimates, features, ratios):
                self._cache[trial] = self._make(trial, estimate, row, ratio)
        return [self._cache[t] for t in trials]

    def _make(self, trial: Trial, estimate: Estimate, features: Mapping[str, float], ratio: float) -> Forecast:
        step_s = float(estimate.time.step_s) * ratio
        memory = int(estimate.memory.total_bytes * self.residual.memory_factor(self.workload, trial.stage))
        limit = int(estimate.memory.limit_bytes)
        if self.memory_budget_bytes is not None:
            limit = min(limit, self.memory_budget_bytes)
        feasible = bool(estimate.feasible) and memory <= limit
        return Forecast(trial=trial, name=self.space.name(trial), estimate=estimate, step_s=step_s,
                        value=self.metric_value(trial, estimate, step_s), memory_bytes=memory,
                        limit_bytes=limit, feasible=feasible, residual_ratio=ratio, features=features)

    def metric_value(self, trial: Trial, estimate: Estimate, step_s: float) -> float:
        """The metric at the corrected step time (the model's FLOP per step and GPU over it)."""
        flops_per_step = float(estimate.metrics.flops_per_gpu) * float(estimate.time.step_s)
        return float(self.metric.of_step(step_s, self.space.global_batch(trial), flops_per_step) or 0.0)

    def forget(self, keep: Callable[[Trial], bool] = lambda t: False) -> None:
        """Drop cached forecasts (after the memory correction or residual model changed)."""
        self._cache = {t: f for t, f in self._cache.items() if keep(t)}

    def sort_key(self, forecast: Forecast) -> tuple[bool, float, str]:
        """Ranks feasible forecasts first, then best value first, then by name (deterministic)."""
        return (not forecast.feasible, self.metric.best_first(forecast.value), forecast.name)
