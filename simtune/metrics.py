"""The metrics a search can optimise, as DeepSpeed's autotuner names them: one table, :data:`METRICS`.

Each knows its key in metrics.json, its unit, its direction and how it follows from one optimizer
step: throughput = global batch / step time (samples/s), latency = 1000 x step time (ms per
optimizer step), FLOPS = FLOP per step and device / step time (DeepSpeed's autotuner reports the
flops profiler's rate per GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class Metric:
    name: str
    """The ``autotuning.metric`` value."""
    key: str
    """Its key in metrics.json."""
    unit: str
    short_unit: str
    """The unit in progress lines."""
    lower_is_better: bool

    @property
    def description(self) -> str:
        """Unit and direction, as the summary says them."""
        return f"{self.unit}, {'lower' if self.lower_is_better else 'higher'} is better"

    @property
    def optuna_direction(self) -> Literal["minimize", "maximize"]:
        return "minimize" if self.lower_is_better else "maximize"

    def better(self, value: float, than: Optional[float]) -> bool:
        """True when ``value`` beats ``than`` (any value beats None)."""
        if than is None:
            return True
        return value < than if self.lower_is_better else value > than

    def best_first(self, value: float) -> float:
        """A sort key that puts the best value first."""
        return value if self.lower_is_better else -value

    def gain(self, value: float, reference: float) -> float:
        """How much better ``value`` is than ``reference``, as a fraction of ``|reference|``
        (negative when worse; +-inf against a zero reference)."""
        if reference == 0:
            if value == reference:
                return 0.0
            return float("inf") if self.better(value, reference) else float("-inf")
        return self.best_first(reference - value) / abs(reference)

    def shortfall(self, best: float, value: float) -> float:
        """How far ``value`` falls behind ``best``, as a fraction of ``|best|`` (0 when it is as good)."""
        return -self.gain(value, best)

    def of_step(self, step_s: float, global_batch: int, flops_per_step: Optional[float]) -> Optional[float]:
        """The metric of one optimizer step of ``step_s`` seconds (None: FLOPS with no FLOP count)."""
        if self.name == "throughput":
            return global_batch / step_s
        if self.name == "latency":
            return 1000.0 * step_s
        return None if flops_per_step is None else flops_per_step / step_s


METRICS: tuple[Metric, ...] = (
    Metric("throughput", "throughput", "samples/s", "samples/s", lower_is_better=False),
    Metric("latency", "latency", "ms per optimizer step", "ms", lower_is_better=True),
    Metric("FLOPS", "FLOPS_per_gpu", "flop/s per GPU", "flop/s", lower_is_better=False),
)


def metric(name: str) -> Metric:
    """The metric named ``name``; KeyError for another name."""
    for row in METRICS:
        if row.name == name:
            return row
    raise KeyError(name)


def step_metrics(step_s: float, global_batch: int, flops_per_step: Optional[float]) -> dict[str, Optional[float]]:
    """Every metric of one optimizer step, under its metrics.json key."""
    return {row.key: row.of_step(step_s, global_batch, flops_per_step) for row in METRICS}
