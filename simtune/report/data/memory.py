"""Memory per GPU by term, per ZeRO stage and GPU count, against the device capacity.

Every stage runs at DeepSpeed's default knobs, without offload or activation checkpointing, at
one stated micro-batch size: the largest that fits at stage 0 on the smallest GPU count, or 1
when stage 0 does not fit at all. The stacked terms sum exactly to the model's total:

    total = parameters + gradients + master weights + optimizer states + gradient buckets
            + gathered parameters + activations + logits + communication scratch
            + max(0, step transient - (activations + logits + scratch)) + fixed overhead

(the optimizer step's fp32 gradients share one slot with the forward/backward phase, so only the
part of the step transient beyond that phase adds to the peak; docs/cost-model.md section 2.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from simtune.hardware.profile import HardwareProfile
from simtune.model import ModelSpec, TrainConfig, estimate_memory
from simtune.model.memory import MemoryEstimate
from simtune.prediction.planning import PLAIN_GRID, hardware_for, largest_micro_batch

TERM_LABELS = (
    "parameters", "gradients", "fp32 master weights", "optimizer states", "gradient buckets",
    "gathered parameters (ZeRO-3)", "activations", "logits and loss", "communication scratch",
    "optimizer-step transient (beyond activations)", "fixed overhead",
)


def memory_terms(m: MemoryEstimate) -> tuple[int, ...]:
    """The terms in :data:`TERM_LABELS` order; they sum to ``m.total_bytes``."""
    phase = m.activations_bytes + m.logits_bytes + m.comm_scratch_bytes
    return (m.parameters_bytes, m.gradients_bytes, m.master_weights_bytes, m.optimizer_states_bytes,
            m.gradient_buckets_bytes, m.gathered_parameters_bytes, m.activations_bytes, m.logits_bytes,
            m.comm_scratch_bytes, max(0, m.step_transient_bytes - phase), m.fixed_overhead_bytes)


@dataclass(frozen=True)
class MemoryBars:
    """One GPU count: a stacked bar per stage."""

    gpus: int
    stages: tuple[int, ...]
    terms_bytes: tuple[tuple[int, ...], ...]
    """Per stage, the terms in TERM_LABELS order."""
    totals_bytes: tuple[int, ...]
    fits: tuple[bool, ...]


@dataclass(frozen=True)
class MemoryBreakdown:
    profile: str
    device: str
    precision: str
    micro_batch_size: int
    micro_batch_note: str
    term_labels: tuple[str, ...]
    panels: tuple[MemoryBars, ...]
    limit_bytes: int
    """The limit the model compares the total with (MemoryEstimate.limit_bytes): the profile's usable
    memory plus its fixed overhead, which the total includes; the device memory unless the profile
    keeps headroom."""
    device_bytes: int


def memory_breakdown(model: ModelSpec, profile: HardwareProfile, gpu_counts: Sequence[int],
                     precision: str, stages: Sequence[int] = (0, 1, 2, 3)) -> MemoryBreakdown:
    counts = sorted(gpu_counts)
    largest0 = largest_micro_batch(model, hardware_for(profile, counts[0]), 0, counts[0], precision, PLAIN_GRID)
    mbs = max(1, largest0)
    note = (f"the largest that fits at stage 0 on {counts[0]} GPUs" if largest0
            else "1, since stage 0 does not fit even at micro-batch size 1")
    panels = []
    limit = 0
    for gpus in counts:
        hardware = hardware_for(profile, gpus)
        estimates = [estimate_memory(model, hardware, TrainConfig(stage=s, micro_batch_size=mbs, dp_degree=gpus,
                                                                  precision=precision)) for s in stages]
        panels.append(MemoryBars(gpus, tuple(stages), tuple(memory_terms(e) for e in estimates),
                                 tuple(e.total_bytes for e in estimates), tuple(e.feasible for e in estimates)))
        limit = estimates[0].limit_bytes
    return MemoryBreakdown(profile.name, profile.device.name, precision, mbs, note, TERM_LABELS, tuple(panels),
                           limit, profile.device.memory_bytes)
