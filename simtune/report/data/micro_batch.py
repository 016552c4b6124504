"""The largest micro-batch size per ZeRO stage, and predicted throughput against it.

For each stage and GPU count: the largest micro-batch size per GPU at which some configuration of
the stage fits (gradient accumulation 1, every bucket size and overlap setting of the planning
grid, no offload), without and with activation checkpointing; and, at each micro-batch size
(powers of two and the largest), the throughput of the stage's fastest configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from simtune.hardware.profile import HardwareProfile
from simtune.prediction.planning import Planner


@dataclass(frozen=True)
class StageCurve:
    stage: int
    checkpointing: bool
    micro_batch_sizes: tuple[int, ...]
    throughputs_samples_per_s: tuple[float, ...]
    largest: int
    """The largest micro-batch size that fits (0: none)."""


@dataclass(frozen=True)
class MicroBatchPanel:
    gpus: int
    curves: tuple[StageCurve, ...]

    def largest(self, stage: int, checkpointing: bool) -> int:
        return next(c.largest for c in self.curves if c.stage == stage and c.checkpointing == checkpointing)


@dataclass(frozen=True)
class MicroBatchStudy:
    profile: str
    precision: str
    stages: tuple[int, ...]
    panels: tuple[MicroBatchPanel, ...]


def micro_batch_study(profile: HardwareProfile, planners: Sequence[Planner],
                      stages: Sequence[int] = (0, 1, 2, 3)) -> MicroBatchStudy:
    """``planners``: one per GPU count, on the profile, in one precision."""
    panels = []
    for planner in sorted(planners, key=lambda p: p.gpus):
        curves = []
        for checkpointing in (False, True):
            plain = planner.restricted(offload="none", checkpointing=checkpointing)
            for stage in stages:
                plans = plain.throughput_by_micro_batch(stage)
                curves.append(StageCurve(stage, checkpointing, tuple(p.trial.micro_batch_size for p in plans),
                                         tuple(p.throughput_samples_per_s for p in plans),
                                         plain.largest_micro_batch(stage)))
        panels.append(MicroBatchPanel(planner.gpus, tuple(curves)))
    return MicroBatchStudy(profile.name, planners[0].precision, tuple(stages), tuple(panels))
