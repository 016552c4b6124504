"""Communication time of the collectives each ZeRO stage issues, as DeepSpeed 0.19.8 issues them.

One call moving S bytes (S as nccl-tests defines it: the buffer for allreduce, the whole gathered
or scattered array for allgather and reduce-scatter) over a group of n ranks takes

    t = latency_s + S * f / busbw,   f = 2(n-1)/n (allreduce), (n-1)/n (allgather, reduce-scatter)

(NVIDIA/nccl-tests doc/PERFORMANCE.md), so k calls moving S in total take k*latency + S*f/busbw.
Where a CPU calibration timed a message beyond its fitted sizes, a call of S > S0 (the largest
fitted size) adds (S - S0) * f * (1/busbw_beyond - 1/busbw): the two regimes of a large message
(in the caches and DeepSpeed's shared-memory buffers, and beyond them).
Bucket counts come from :meth:`ParamLayout.bucket_count` (greedy filling in backward order).
latency_s and busbw are those of the links the data-parallel group's rings cross
(:func:`simtune.model.links.ring_collectives`: the slowest one once the group spans nodes).
Gradients travel in ``communication_data_type`` where the config sets it
(``TrainConfig.gradient_comm_bytes``: every stage casts its bucket to it before the reduction,
engine.py ``allreduce_bucket``, stage_1_and_2.py ``gradient_reduction_w_predivide``, stage3.py's
buckets of that dtype); parameters in their own dtype.

- stage 0 (engine.py ``buffered_allreduce_fallback``): at the accumulation boundary, allreduce of
  all b*P gradient bytes in pieces of 5e8 elements.
- stage 1 (stage_1_and_2.py ``reduce_gradients``): at the boundary, the gradients pass through
  the ``reduce_bucket_size`` buckets and each bucket is allreduced (``average_tensor`` with the
  default ``use_multi_rank_bucket_allreduce``, and ``gradient_reduction_w_predivide`` without
  reduce_scatter, both allreduce); after the optimizer, one ``all_gather_into_tensor`` of the
  flat b*P buffer (``allgather_bucket_size`` only matters on torch without it).
- stage 2: the same bucketed allreduce, in every micro-step's backward (gradient hooks), and
  the same allgather after the optimizer.
- stage 3 (stage3.py, partitioned_param_coordinator.py): in every micro-step, one allgather per
  non-persistent tensor in forward, again in backward for the parameters released after forward,
  and a tied LM head's table once more in each pass where it is released between its two uses
  (:func:`simtune.model.memory_buffers.tied_table_regathered`),
  and a bucketed reduce-scatter of the b*P gradients during backward; with ``reduce_scatter``
  off and contiguous gradients a bucket is allreduced instead (``__reduce_and_partition_ipg_grads``
  -> ``__avg_scatter_contiguous_grads``), all but a gradient larger than the bucket, which
  still goes through ``reduce_scatter_coalesced``. After the optimizer only
  the persistent parameters are gathered again (each rank updated its partition of them), one
  call per persistent tensor (``_post_step``); the others are gathered at their next use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from simtune.model.inputs import CollectiveCost, Collectives, HardwareSpec, ModelSpec, TrainConfig
from simtune.model.links import ring_collectives
from simtune.model.memory_buffers import STAGE0_ALLREDUCE_ELEMENTS, kept_gathered_elements, tied_table_regathered
from simtune.model.operators import linear_parameters
from simtune.model.shards import Shards


def allreduce_factor(n: int) -> float:
    return 2.0 * (n - 1) / n


def gather_scatter_factor(n: int) -> float:
    return (n - 1) / n


def collective_s(cost: CollectiveCost, factor: float, total_bytes: float, calls: int) -> float:
    """``calls`` calls sharing ``total_bytes`` evenly (:meth:`CollectiveCost.call_s` each)."""
    if calls <= 0 or total_bytes <= 0:
        return 0.0
    return calls * cost.call_s(total_bytes / calls, factor)


@dataclass(frozen=True)
class CommTimes:
    reduce_per_micro_s: float = 0.0
    """Gradient reduction issued in every micro-step's backward (stages 2, 3)."""
    reduce_at_boundary_s: float = 0.0
    """Gradient reduction issued once per optimizer step (stages 0, 1)."""
    reduce_last_call_s: float = 0.0
    """One reduction call: issued after the last gradient, it cannot hide behind backward."""
    gather_forward_s: float = 0.0
    """Stage 3: parameter allgathers in each forward."""
    gather_backward_s: float = 0.0
    """Stage 3: allgathers in each backward of the parameters released after forward."""
    gather_first_call_s: float = 0.0
    """Stage 3: one allgather call, the first fetch of a pass, which no prefetch hides."""
    gather_after_step_s: float = 0.0
    """Stages 1/2: allgather of the updated parameters after the optimizer."""
    gather_persistent_after_step_s: float = 0.0
    """Stage 3: allgather of the updated persistent parameters after the optimizer, one call per
    persistent tensor (stage3.py ``_post_step`` -> ``all_gather`` of ``persistent_parameters``)."""


NO_COMMUNICATION = CommTimes()


def element_bytes(m: ModelSpec, c: TrainConfig) -> float:
    """Bytes per parameter or gradient element as the engine communicates them: the state bytes,
    except under DeepSpeed's autocast, which sends linear layers' in the 16-bit precision and the
    rest in fp32 (a mean over the model's parameters, :func:`~simtune.model.operators.linear_parameters`)."""
    if not c.deepspeed_autocast:
        return float(c.state_bytes)
    linear = linear_parameters(m) / m.parameter_count
    return c.bytes_per_element * linear + c.state_bytes * (1 - linear)


def gradient_element_bytes(m: ModelSpec, c: TrainConfig) -> float:
    """Bytes per gradient element as the engine reduces it: ``communication_data_type``'s where
    set, else :func:`element_bytes`."""
    comm = c.gradient_comm_bytes
    return float(comm) if comm is not None else element_bytes(m, c)


@dataclass(frozen=True)
class GradientReduction:
    """One reduction pass over a rank's gradients: the bytes each collective carries (S as
    nccl-tests counts it) and its calls."""

    allreduce_bytes: float
    allreduce_calls: int
    reduce_scatter_bytes: float = 0.0
    reduce_scatter_calls: int = 0
    bucket_bytes: float = 0.0
    """One full bucket: the last call of a pass."""


def gradient_reduction(m: ModelSpec, s: Shards, c: TrainConfig) -> GradientReduction:
    """How one pass reduces the gradients: stage 0 allreduces them in pieces of
    ``STAGE0_ALLREDUCE_ELEMENTS``; stages 1-2 allreduce each bucket; stage 3 reduce-scatters
    each bucket, or allreduces it where :attr:`TrainConfig.allreduces_gradients` (a gradient
    larger than the bucket is then still reduce-scattered alone). Passes per optimizer step:
    one at stages 0-1 (the boundary), one per micro-step at stages 2-3."""
    g = gradient_element_bytes(m, c)
    total = g * s.params
    if c.stage == 0:
        return GradientReduction(total, -(-s.params // STAGE0_ALLREDUCE_ELEMENTS))
    calls = m.layout.bucket_count(c.reduce_bucket_size)
    bucket = g * min(c.reduce_bucket_size, s.params)
    if c.stage < 3:
        return GradientReduction(total, calls, bucket_bytes=bucket)
    if not c.allreduces_gradients:
        return GradientReduction(0.0, 0, total, calls, bucket)
    fitting, fitting_tensors = m.layout.at_most(c.reduce_bucket_size)
    oversized = len(m.layout.numels) - fitting_tensors
    alone = total * (m.layout.total - fitting) / max(1, m.layout.total)
    return GradientReduction(total - alone, max(1, calls - oversized) if total > alone else 0,
                             alone, oversized, bucket)


def _bytes_only(costs: Collectives) -> Collectives:
    """``costs`` without their per-call latency."""
    return Collectives(*(dataclasses.replace(cost, latency_s=0.0)
                         for cost in (costs.allreduce, costs.allgather, costs.reduce_scatter)))


def communication(m: ModelSpec, s: Shards, hw: HardwareSpec, c: TrainConfig, latency: bool = True) -> CommTimes:
    """Each stage's collectives (the module's docstring); with ``latency`` False, only the time
    their bytes take (what part of a call moves data: :func:`simtune.model.overlap.phase_shares`)."""
    n = c.dp_degree
    if n == 1:
        return NO_COMMUNICATION
    costs = ring_collectives(hw, n * c.mp_degree)
    if not latency:
        costs = _bytes_only(costs)
    b = element_bytes(m, c)
    red = gradient_reduction(m, s, c)
    all_f, part_f = allreduce_factor(n), gather_scatter_factor(n)
    reduce_s = (collective_s(costs.allreduce, all_f, red.allreduce_bytes, red.allreduce_calls)
                + collective_s(costs.reduce_scatter, part_f, red.reduce_scatter_bytes, red.reduce_scatter_calls))
    if c.stage == 0:
        return CommTimes(reduce_at_boundary_s=reduce_s)
    if c.allreduces_gradients:
        last_s = collective_s(costs.allreduce, all_f, red.bucket_bytes, 1)
    else:
        last_s = collective_s(costs.reduce_scatter, part_f, red.bucket_bytes, 1)
    if c.stage in (1, 2):
        # the updated partitions in the parameters' own dtype (fp32 under DeepSpeed's autocast)
        gather_s = collective_s(costs.allgather, part_f, c.state_bytes * s.flat, 1)
        if c.stage == 1:
            return CommTimes(reduce_at_boundary_s=reduce_s, reduce_last_call_s=last_s, gather_after_step_s=gather_s)
        return CommTimes(reduce_per_micro_s=reduce_s, reduce_last_call_s=last_s, gather_after_step_s=gather_s)
    nonpersistent = s.params - s.persistent
    gather_calls = max(1, len(m.layout.numels) - s.persistent_tensors)
    released = nonpersistent - kept_gathered_elements(m, s, c)
    tied = tied_table_regathered(m, s, c)
    forward_s = collective_s(costs.allgather, part_f, b * (nonpersistent + tied), gather_calls + (1 if tied else 0))
    backward_calls = -(-gather_calls * released // nonpersistent) if nonpersistent else 0
    backward_s = collective_s(costs.allgather, part_f, b * (released + tied), backward_calls + (1 if tied else 0))
    first_s = collective_s(costs.allgather, part_f, b * nonpersistent / gather_calls, 1)
    persistent_s = collective_s(costs.allgather, part_f, b * s.persistent, s.persistent_tensors)
    return CommTimes(reduce_per_micro_s=reduce_s, reduce_last_call_s=last_s, gather_forward_s=forward_s,
                     gather_backward_s=backward_s, gather_first_call_s=first_s,
                     gather_persistent_after_step_s=persistent_s)
