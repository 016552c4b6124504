"""Search strategies: how candidates are chosen and measured.

``measure``: DeepSpeed's exploration order with every candidate run for real
(:class:`MeasuredSearch`); :mod:`.tuners` picks the ZeRO-knob experiments; :class:`TwinRunner`
stands in for the runner where results can be computed instead of measured.
"""

from simtune.strategies.measure import (
    Measurement,
    MeasuredSearch,
    MeasureOptions,
    SearchOutcome,
    StageOutcome,
)
from simtune.strategies.tuners import TUNER_TYPES, TunerOutcome, TunerSettings, make_tuner, run_tuner
from simtune.strategies.twin import TwinRunner

__all__ = [
    "TUNER_TYPES",
    "Measurement",
    "MeasuredSearch",
    "MeasureOptions",
    "SearchOutcome",
    "StageOutcome",
    "TunerOutcome",
    "TunerSettings",
    "TwinRunner",
    "make_tuner",
    "run_tuner",
]
