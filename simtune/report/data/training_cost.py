"""Time, GPU-hours and cost to train a number of samples with the best configuration.

    samples   = tokens / sequence length         (when tokens are given)
    time_s    = samples / throughput_samples_per_s
    gpu_hours = time_s / 3600 * GPUs
    cost_usd  = gpu_hours * price per GPU-hour   (when a price is given)

Without tokens or samples the budget is 20 tokens per parameter, the compute-optimal ratio of
Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", Table 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from simtune.prediction.planning import Plan
from simtune.report.units import count

TOKENS_PER_PARAMETER = 20


@dataclass(frozen=True)
class TrainingBudget:
    samples: float
    tokens: float
    how: str
    """Where the budget comes from, in words."""


def training_budget(tokens: Optional[float], samples: Optional[float], seq_len: int, parameters: int) -> TrainingBudget:
    if samples is not None:
        return TrainingBudget(samples, samples * seq_len, f"{count(samples)} samples (given)")
    if tokens is not None:
        return TrainingBudget(tokens / seq_len, tokens, f"{count(tokens)} tokens (given), {seq_len} per sample")
    tokens = TOKENS_PER_PARAMETER * parameters
    return TrainingBudget(tokens / seq_len, tokens,
                          f"{count(tokens)} tokens: {TOKENS_PER_PARAMETER} per parameter (Hoffmann et al. 2022), "
                          f"{seq_len} per sample")


@dataclass(frozen=True)
class TrainingRun:
    profile: str
    gpus: int
    throughput_samples_per_s: Optional[float]
    time_s: Optional[float]
    gpu_hours: Optional[float]
    cost_usd: Optional[float]


@dataclass(frozen=True)
class TrainingCost:
    budget: TrainingBudget
    price_usd_per_gpu_hour: Optional[float]
    runs: tuple[TrainingRun, ...]


def training_run(profile: str, gpus: int, plan: Optional[Plan], samples: float,
                 price_usd_per_gpu_hour: Optional[float]) -> TrainingRun:
    if plan is None:
        return TrainingRun(profile, gpus, None, None, None, None)
    throughput = plan.throughput_samples_per_s
    time_s = samples / throughput
    gpu_hours = time_s / 3600.0 * gpus
    cost = None if price_usd_per_gpu_hour is None else gpu_hours * price_usd_per_gpu_hour
    return TrainingRun(profile, gpus, throughput, time_s, gpu_hours, cost)


def training_cost(plans: Mapping[tuple[str, int], Optional[Plan]], profiles: Sequence[str],
                  gpu_counts: Sequence[int], budget: TrainingBudget,
                  price_usd_per_gpu_hour: Optional[float] = None) -> TrainingCost:
    runs = tuple(training_run(name, n, plans.get((name, n)), budget.samples, price_usd_per_gpu_hour)
                 for name in profiles for n in sorted(gpu_counts))
    return TrainingCost(budget, price_usd_per_gpu_hour, runs)
