"""The cost model: pure functions predicting per-rank peak memory and step time of a DeepSpeed
ZeRO configuration, term by term (docs/cost-model.md gives every formula and its source)."""

from simtune.model.estimate import Estimate, Metrics, estimate
from simtune.model.inputs import (
    CollectiveCost,
    Collectives,
    ComputeCurves,
    EfficiencyCurve,
    HardwareSpec,
    ModelSpec,
    TrainConfig,
)
from simtune.model.memory import MemoryEstimate, estimate_memory
from simtune.model.step_time import TimeEstimate, estimate_time

__all__ = [
    "CollectiveCost", "Collectives", "ComputeCurves", "EfficiencyCurve", "Estimate", "HardwareSpec",
    "MemoryEstimate", "Metrics", "ModelSpec", "TimeEstimate", "TrainConfig", "estimate",
    "estimate_memory", "estimate_time",
]
