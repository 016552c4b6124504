"""The best configuration per profile and GPU count, and its step time by term.

The step-time terms (:data:`simtune.model.step_time.STEP_TERMS`) sum to the predicted step
(docs/cost-model.md section 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from simtune.model.step_time import STEP_TERMS
from simtune.prediction.planning import Plan

STEP_TERM_LABELS = tuple(label for _, label in STEP_TERMS)


@dataclass(frozen=True)
class BestConfig:
    profile: str
    gpus: int
    nodes: int
    plan: Optional[Plan]
    """None: nothing fits."""
    peak_flop_per_s: float
    """The profile's dense peak for the precision, for model FLOPs utilisation."""

    @property
    def mfu(self) -> Optional[float]:
        """Model FLOPs utilisation: model FLOP/s per GPU over the peak."""
        if self.plan is None or not self.peak_flop_per_s:
            return None
        return self.plan.estimate.metrics.flops_per_gpu / self.peak_flop_per_s


@dataclass(frozen=True)
class StepTimeBars:
    labels: tuple[str, ...]
    """One bar per (profile, GPU count) where something fits."""
    term_labels: tuple[str, ...]
    terms_s: tuple[tuple[float, ...], ...]
    steps_s: tuple[float, ...]
    samples_per_gpu: tuple[int, ...]
    """Samples one GPU processes per optimizer step (micro-batch x accumulation): the plot divides
    by it, so configurations with different batches compare per sample."""


def best_configs(plans: Mapping[tuple[str, int], Optional[Plan]], profiles: Sequence[str], gpu_counts: Sequence[int],
                 per_node: Mapping[str, int], peaks: Mapping[str, float]) -> tuple[BestConfig, ...]:
    return tuple(BestConfig(name, n, math.ceil(n / per_node[name]), plans.get((name, n)), peaks[name])
                 for name in profiles for n in sorted(gpu_counts))


def step_time_bars(configs: Sequence[BestConfig]) -> StepTimeBars:
    fitting = [c for c in configs if c.plan is not None]
    return StepTimeBars(
        labels=tuple(f"{c.profile}\n{c.gpus} GPUs" for c in fitting),
        term_labels=STEP_TERM_LABELS,
        terms_s=tuple(c.plan.estimate.time.terms() for c in fitting),
        steps_s=tuple(c.plan.estimate.time.step_s for c in fitting),
        samples_per_gpu=tuple(c.plan.config.micro_batch_size * c.plan.config.gradient_accumulation_steps
                              for c in fitting),
    )
