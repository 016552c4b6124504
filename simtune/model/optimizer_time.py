"""Optimizer step and offload transfer time per optimizer step on one rank.

    optimizer_s = local elements * seconds per parameter
                  (the algorithm's rate measured on the device, else the device AdamW rate *
                  relative cost; when the optimizer is offloaded the host's AdamW rate * relative
                  cost: torch's on host tensors where DeepSpeed runs it, ``torch_adam`` or an
                  algorithm DeepSpeed has no CPU kernel for, else its CPU Adam, or the algorithm's
                  own DeepSpeed CPU kernel where calibration timed it)
                  + the dispatch of an implementation that launches its kernels tensor by tensor,
                  where it steps the model's own tensors (:func:`loop_dispatch_s`)
                  + idle local elements * z   (on the device, not offloaded)

The relative cost is the configuration's algorithm's bytes over AdamW's in the same
implementation (:meth:`simtune.optimizers.OptimizerChoice.relative_cost`: 1 for AdamW; for the
for-loop 48/84 Adagrad, 32/84 momentum SGD, 12/84 plain SGD): what a spec profile, a profile
calibrated before the other algorithms were timed, Lion on the device and every offloaded step
whose kernel was not timed use.

with local elements P (stage 0), the flat slice (stages 1/2) or the partition (stage 3). Idle
elements are those no sample gives a gradient (``ModelSpec.idle_elements``: learned position rows
beyond the sequence), whose moments stay exactly 0; z is what one adds to the step of an
algorithm that takes the square root of such a state (AdamW, Adagrad: ``Algorithm.sqrt_of_state``;
the algorithm's own where calibration timed it: :func:`zero_state_s_per_param`)
(``HardwareSpec.zero_state_s_per_param``: measured on the host, where torch's ``sqrt`` of a zero
took 7x that of an ordinary value, benchmarks/results/zero_optimizer_state.txt; not timed on
CUDA, 0). A rank holds its share, idle * local / P: exact at stage 3, whose partitions cut every
tensor alike; at stages 1/2 a small table lies in one rank's flat slice, a large one (the heavy
twin's) across them.

Offload transfers and the host's copies (b = the bytes of a parameter or gradient element as
the model keeps them), as DeepSpeed 0.19.8 moves them, counted as exposed time:
- optimizer offload, stages 1/2 (stage_1_and_2.py): at the boundary the slice's gradients are cast
  to fp32 on the device and go to the host fp32 gradient (4 * slice, d2h:
  ``async_inplace_copy_grad_to_fp32_buffer_from_gpu``); after the step the host casts the fp32
  slice into a b-byte buffer (a host copy of the slice) that goes up (b * slice, h2d); with
  accumulation each micro-step also round-trips the accumulated gradients of the tensors touching
  the slice (``async_accumulate_grad_in_cpu_via_gpu``: gas * b down, (gas - 1) * b up). Every
  buffer is pinned or pageable by the section's ``pin_memory``.
- optimizer offload, stage 3 (stage3.py ``partition_grads``): every micro-step's reduced partition
  goes to the host gradient buffer and comes back to the device to accumulate (gas * b each way),
  and at the boundary its fp32 cast goes down (4 * partition). The updated fp32 partition is
  copied into the device's b-byte partition by a blocking copy that changes dtype, which torch
  casts on the host into a new, pageable tensor before it goes up (a host copy and b * partition
  from pageable memory, whatever ``pin_memory`` says); in fp32 it goes up directly. With the
  parameters offloaded too the 16-bit partition is on the host: a host copy only.
- parameter offload (stage 3): every gather first uploads the partitions it needs (h2d): b times
  the elements gathered per micro-step (:func:`simtune.model.memory_buffers.fetched_elements`)
  over the ranks, per micro-step.
- what stage 3 swaps to NVMe (``device: nvme``): what the step waits for of its reads and writes
  at the node's NVMe rates over its ranks (:func:`simtune.model.nvme_swap.nvme_swap_s`).

A host copy of n elements from fp32 to b bytes moves (4 + b) n bytes: (4 + b) n / (2 x the
host's copy rate), a copy of N bytes reading N and writing N (uncosted where the profile has no
host copy rate). The device's cast of the gradients to fp32 before they go down (b < 4) reads b
and writes 4 bytes per element of the slice or partition at the device's plain bandwidth
(``HardwareSpec.plain_bandwidth``). DeepSpeed casts on the device because torch's casts on the
host were slow (a DeepSpeed author in DeepSpeed issue #899: "It is faster to communicate in fp32
than to communicate in fp16 then convert it in CPU").
"""

from __future__ import annotations

import dataclasses

from simtune.model.inputs import BYTES_PER_ELEMENT, HardwareSpec, ModelSpec, TrainConfig
from simtune.model.memory_buffers import fetched_elements
from simtune.model.nvme_swap import nvme_swap_s
from simtune.model.shards import Shards
from simtune.optimizers import implementation_of


def local_elements(s: Shards, c: TrainConfig) -> int:
    if c.stage == 0:
        return s.params
    return s.flat_partition if c.stage in (1, 2) else s.partition


def optimizer_s(m: ModelSpec, s: Shards, hw: HardwareSpec, c: TrainConfig) -> float:
    if c.offload_optimizer:
        return local_elements(s, c) * host_step_s_per_param(hw, c)
    return local_elements(s, c) * device_step_s_per_param(hw, c) + loop_dispatch_s(m, hw, c) \
        + idle_local_elements(m, s, c) * zero_state_s_per_param(hw, c)


def zero_state_s_per_param(hw: HardwareSpec, c: TrainConfig) -> float:
    """What an element whose states stay 0 adds: the algorithm's own measured cost, else AdamW's,
    for an algorithm that takes a state's root; 0 for the others (module docstring)."""
    if not c.optimizer.spec.sqrt_of_state:
        return 0.0
    measured = hw.algorithm_rate(c.optimizer.algorithm)
    return measured.zero_state_s_per_param if measured is not None else hw.zero_state_s_per_param


def device_step_s_per_param(hw: HardwareSpec, c: TrainConfig) -> float:
    """The configuration's algorithm's rate measured in the device fit's implementation
    (``HardwareSpec.algorithm_rates``; a coupled weight decay adds its bytes pro rata), else
    the fit's AdamW rate times the algorithm's relative cost in that implementation (an unnamed
    fit's as a fused kernel's)."""
    kind = implementation_of(hw.optimizer_impl) or "fused"
    measured = hw.algorithm_rate(c.optimizer.algorithm)
    if measured is None:
        return hw.optimizer_s_per_param * c.optimizer.relative_cost(kind)
    plain = dataclasses.replace(c.optimizer, coupled_decay=False)
    return measured.s_per_param * c.optimizer.kernels(kind).bytes_per_param / plain.kernels(kind).bytes_per_param


def host_step_s_per_param(hw: HardwareSpec, c: TrainConfig) -> float:
    """An offloaded step per parameter: torch's on host tensors (a for-loop) where DeepSpeed runs it
    (``torch_adam`` for AdamW; an algorithm without a DeepSpeed CPU kernel, SGD) and the profile
    timed torch's AdamW there, else DeepSpeed's CPU kernel (fused): the algorithm's kernel at the
    rate calibration measured for it (``HardwareSpec.host_algorithm_rates``), else at its AdamW
    rate times the algorithm's relative cost. DeepSpeed's CPU Adagrad stepped 0.53 of its CPU
    Adam's time per element where the bytes say 0.71, its Lion 0.72
    (benchmarks/results/optimizer_algorithms.txt)."""
    torch_on_host = torch_steps_on_host(c)
    measured = None if torch_on_host else hw.algorithm_rate(c.optimizer.algorithm, host=True)
    if measured is not None:
        return measured.s_per_param
    rate, implementation = hw.host_optimizer_rate(torch_adamw=torch_on_host)
    return rate * c.optimizer.relative_cost(implementation)


def idle_local_elements(m: ModelSpec, s: Shards, c: TrainConfig) -> float:
    """The rank's share of the elements no sample gives a gradient (module docstring)."""
    return m.idle_elements * local_elements(s, c) / m.parameter_count


def steps_model_tensors(c: TrainConfig) -> bool:
    """Whether the device optimizer steps the model's own parameter tensors: at stage 0 in fp32
    or under autocast (the engine hands it the model's parameters; their fp32 gradients are also
    what a loop that clips clips itself: :func:`simtune.model.step_time.clipping_s`). Stage 0's
    16-bit wrappers and the ZeRO stages step flat fp32 tensors, one or a few per parameter group."""
    return c.stage == 0 and not c.offload_optimizer and c.state_precision == "fp32"


def torch_steps_on_host(c: TrainConfig) -> bool:
    """Whether DeepSpeed steps an offloaded optimizer with torch's on host tensors rather than its
    CPU kernel: AdamW with ``torch_adam`` (not FusedAdam), or an algorithm it has no CPU kernel for."""
    spec = c.optimizer.spec
    return spec.offload_impl is None or (spec.name == "adamw" and not c.fused_adam)


def loop_dispatch_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """Seconds an implementation that launches its kernels tensor by tensor (``kernels_per_tensor``
    k of :meth:`simtune.optimizers.OptimizerChoice.kernels`: torch's for-loop steps) adds beyond its bytes
    where it steps the model's own tensors (:func:`steps_model_tensors`); k launches per tensor at
    the dispatch cost d (``forward_kernel_s``). On a device that runs beside its host (CUDA) a
    tensor of e elements takes max(k d, e r), r the fit's seconds per parameter, so the launches
    add only over the tensors of fewer than k d / r elements (n_small of them, e_small elements):

        n_small k d - e_small r

    On a synchronous device (CPU) every launch adds, n k d (a measured fit holds its own few
    tensors' launches in its intercept, which the step leaves out)."""
    kind = implementation_of(hw.optimizer_impl)
    if kind is None or not steps_model_tensors(c):
        return 0.0
    kernels = c.optimizer.kernels(kind)
    if not kernels.kernels_per_tensor:
        return 0.0
    launch = kernels.kernels_per_tensor * hw.framework.forward_kernel_s
    rate = device_step_s_per_param(hw, c) / c.mp_degree  # per element of a whole tensor
    if not hw.overlap_capable or rate <= 0:
        return len(m.layout.numels) * launch
    elements, tensors = m.layout.at_most(int(launch / rate))
    return max(0.0, tensors * launch - elements * rate)


MASTER_BYTES = BYTES_PER_ELEMENT["fp32"]
"""Bytes of an element of the offloaded optimizer's fp32 master weights and gradients."""


def offload_transfer_s(m: ModelSpec, s: Shards, hw: HardwareSpec, c: TrainConfig) -> float:
    """Seconds a step spends in offload's copies (module docstring): to and from the device at the
    rate of each buffer's memory (:meth:`HardwareSpec.link_rate`), and within the host."""
    if not (c.offload_optimizer or c.offload_param):
        return 0.0
    b = c.state_bytes
    gas = c.gradient_accumulation_steps
    down = up = pageable_up = 0.0
    host_copied = 0
    if c.offload_optimizer and c.stage in (1, 2):
        down += MASTER_BYTES * s.flat_partition
        up += b * s.flat_partition
        host_copied += s.flat_partition
        if gas > 1:
            down += gas * b * s.grads_in_partition
            up += (gas - 1) * b * s.grads_in_partition
    elif c.offload_optimizer:
        down += gas * b * s.partition + MASTER_BYTES * s.partition
        up += gas * b * s.partition
        if c.offload_param:
            host_copied += s.partition
        elif b == MASTER_BYTES:
            up += b * s.partition
        else:
            host_copied += s.partition
            pageable_up += b * s.partition
    pinned = c.offload_optimizer_pinned
    seconds = (down / hw.link_rate(upload=False, pinned=pinned) + up / hw.link_rate(upload=True, pinned=pinned)
               + pageable_up / hw.link_rate(upload=True, pinned=False))
    if c.offload_param:
        seconds += (gas * b * fetched_elements(m, s, c) / c.dp_degree
                    / hw.link_rate(upload=True, pinned=c.offload_param_pinned))
    if hw.host_copy_bytes_per_s is not None:
        seconds += host_copied * (MASTER_BYTES + b) / (2 * hw.host_copy_bytes_per_s)
    device_bandwidth = hw.plain_bandwidth()
    if c.offload_optimizer and b != MASTER_BYTES and device_bandwidth is not None:
        seconds += (MASTER_BYTES + b) * local_elements(s, c) / device_bandwidth
    if c.swaps_optimizer_states or c.swaps_parameters:
        seconds += nvme_swap_s(m, s, hw, c,
                               host_step_s_per_param=host_step_s_per_param(hw, c) if c.swaps_optimizer_states else 0.0)
    return seconds
