"""Memory per GPU by term, per ZeRO stage and GPU count, against the device capacity.

Every stage runs at DeepSpeed's default knobs, without offload or activation checkpointing, at
one stated micro-batch size: the largest that fits at stage 0 on the smallest GPU count, or 1
when stage 0 does not fit at all. The stacked terms sum exactly to the model's total:

    total = parameters + gradients + master weights + optimizer states + gradient buckets
            + gathered parameters + activations + logits + communication scratch
            + max(0, step transient - backward phase) + fixed overhead

(the optimizer step's fp32 gradients share one slot with the forward/backward phase: activations,
logits and scratch, and at stages 1/2 the buckets and the gradients, which their step frees before
the optimizer runs; so only the part of the step transient beyond that phase adds to the peak;
docs/cost-model.md section 2.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from simtune.hardware.profile import HardwareProfile
from simtune.model.memory import MemoryEstimate
from simtune.prediction.planning import Planner
from simtune.space import Trial

TERM_LABELS = (
    "parameters", "gradients", "fp32 master weights", "optimizer states", "gradient buckets",
    "gathered parameters (ZeRO-3)", "activations", "logits and loss", "communication scratch",
    "optimizer-step transient (beyond the backward phase)", "fixed overhead",
)


def memory_terms(m: MemoryEstimate) -> tuple[int, ...]:
    """The terms in :data:`TERM_LABELS` order; they sum to ``m.total_bytes``."""
    return (m.parameters_bytes, m.gradients_bytes, m.master_weights_bytes, m.optimizer_states_bytes,
            m.gradient_buckets_bytes, m.gathered_parameters_bytes, m.activations_bytes, m.logits_bytes,
            m.comm_scratch_bytes, m.transient_beyond_backward_bytes, m.fixed_overhead_bytes)


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


def memory_breakdown(profile: HardwareProfile, planners: Sequence[Planner],
                     stages: Sequence[int] = (0, 1, 2, 3)) -> MemoryBreakdown:
    """``planners``: one per GPU count, on the profile, in one precision; each stage's bar is the
    trial with DeepSpeed's default knobs (``Planner.predictor``)."""
    planners = sorted(planners, key=lambda p: p.gpus)
    smallest = planners[0]
    largest0 = smallest.restricted(offload="none", checkpointing=False).largest_micro_batch(0)
    mbs = max(1, largest0)
    note = (f"the largest that fits at stage 0 on {smallest.gpus} GPUs" if largest0
            else "1, since stage 0 does not fit even at micro-batch size 1")
    panels = []
    limit = 0
    for planner in planners:
        estimates = [planner.predictor.predict(Trial(stage=s, micro_batch_size=mbs)).memory for s in stages]
        panels.append(MemoryBars(planner.gpus, tuple(stages), tuple(memory_terms(e) for e in estimates),
                                 tuple(e.total_bytes for e in estimates), tuple(e.feasible for e in estimates)))
        limit = estimates[0].limit_bytes
    return MemoryBreakdown(profile.name, profile.device.name, smallest.precision, mbs, note, TERM_LABELS,
                           tuple(panels), limit, profile.device.memory_bytes)
