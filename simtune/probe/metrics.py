"""metrics.json from a finished window (pure; no torch).

Definitions (docs/experiments.md has the full list):

- ``step_time_s``: median end-to-end time of the steps ``start..end``;
- ``throughput = train_batch_size / step_time_s`` (samples/s, global batch);
- ``latency = 1000 * step_time_s`` (ms per optimizer step, accumulation included);
- ``FLOPS_per_gpu = flops_per_step / step_time_s`` (flop/s per rank), where ``flops_per_step`` is
  the FLOPs one rank counted in forward and backward of one micro-step times the accumulation
  steps; null when they could not be counted.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from simtune.metrics import step_metrics
from simtune.probe.window import StepWindow


@dataclass(frozen=True)
class RunFacts:
    """What the engine and the ranks report besides the times."""

    train_batch_size: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    world_size: int
    zero_stage: int | None
    flops_per_micro_step: int | None
    peak_memory_per_rank: tuple[int, ...]
    peak_reserved_per_rank: tuple[int, ...] | None
    memory_kind: str


def summarize(window: StepWindow, facts: RunFacts) -> dict:
    """The metrics.json object for a complete window."""
    times = window.step_times_s()
    median_s = statistics.median(times)
    split = window.split_medians_s()
    flops_per_step = (
        None
        if facts.flops_per_micro_step is None
        else facts.flops_per_micro_step * facts.gradient_accumulation_steps
    )
    return {
        **step_metrics(median_s, facts.train_batch_size, flops_per_step),
        "step_time_s": median_s,
        "step_times_s": times,
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "fwd_s": split["fwd"],
        "bwd_s": split["bwd"],
        "step_s": split["step"],
        "flops_per_step": flops_per_step,
        "peak_memory_bytes": max(facts.peak_memory_per_rank),
        "peak_memory_per_rank": list(facts.peak_memory_per_rank),
        "peak_memory_reserved_bytes": (
            None if facts.peak_reserved_per_rank is None else max(facts.peak_reserved_per_rank)
        ),
        "memory_kind": facts.memory_kind,
        "train_batch_size": facts.train_batch_size,
        "micro_batch_size": facts.micro_batch_size,
        "gradient_accumulation_steps": facts.gradient_accumulation_steps,
        "world_size": facts.world_size,
        "zero_stage": facts.zero_stage,
        "start_profile_step": window.start,
        "end_profile_step": window.end,
    }
