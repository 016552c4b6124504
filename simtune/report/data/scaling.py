"""Scaling with GPU count: predicted throughput of the best configuration, and its efficiency.

    efficiency(N) = throughput(N) / (N / N0 * throughput(N0))

with N0 the smallest GPU count at which the model fits on the profile (so the efficiency is 1
there). Each point is the best configuration at that count, so the micro-batch size may change
with N; with gradient accumulation 1 the global batch grows with N (weak scaling), with a fixed
global batch it does not (strong scaling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from simtune.prediction.planning import Plan


@dataclass(frozen=True)
class ScalingSeries:
    profile: str
    gpus: tuple[int, ...]
    throughputs_samples_per_s: tuple[Optional[float], ...]
    """None where the model does not fit."""
    efficiencies: tuple[Optional[float], ...]
    per_node: int


@dataclass(frozen=True)
class Scaling:
    series: tuple[ScalingSeries, ...]
    fixed_global_batch: bool


def scaling_efficiencies(gpus: Sequence[int], throughputs: Sequence[Optional[float]]) -> tuple[Optional[float], ...]:
    reference = next(((n, t) for n, t in zip(gpus, throughputs) if t), None)
    if reference is None:
        return tuple(None for _ in gpus)
    n0, t0 = reference
    return tuple(None if t is None else t / (n / n0 * t0) for n, t in zip(gpus, throughputs))


def scaling(plans: Mapping[tuple[str, int], Optional[Plan]], profiles: Sequence[str], gpu_counts: Sequence[int],
            per_node: Mapping[str, int], fixed_global_batch: bool = False) -> Scaling:
    """``plans``: the best plan per (profile name, GPU count), None where nothing fits."""
    counts = tuple(sorted(gpu_counts))
    series = []
    for name in profiles:
        throughputs = tuple(plans[(name, n)].throughput_samples_per_s if plans.get((name, n)) else None
                            for n in counts)
        series.append(ScalingSeries(name, counts, throughputs, scaling_efficiencies(counts, throughputs),
                                    per_node[name]))
    return Scaling(tuple(series), fixed_global_batch)
