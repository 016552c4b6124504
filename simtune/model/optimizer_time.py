"""Optimizer step and offload transfer time per optimizer step on one rank.

    optimizer_s = local elements * seconds per parameter
                  (the device Adam rate; when the optimizer is offloaded the host's: torch's
                  AdamW on host tensors where DeepSpeed runs it, ``torch_adam``, else CPU Adam)
                  + the dispatch of an implementation that launches its kernels tensor by tensor,
                  where it steps the model's own tensors (:func:`loop_dispatch_s`)

with local elements P (stage 0), the flat slice (stages 1/2) or the partition (stage 3).

Offload transfers (b = compute precision bytes), counted as exposed time:
- optimizer offload, stages 1/2 (stage_1_and_2.py): the slice's gradients go to the host at the
  boundary (b * slice, d2h) and the updated b-byte slice comes back (h2d); with accumulation each
  micro-step also round-trips the accumulated gradients of the tensors touching the slice
  (``async_accumulate_grad_in_cpu_via_gpu``).
- optimizer offload, stage 3 (stage3.py): the gradient partition lives on the host, so every
  micro-step's reduced partition goes d2h; the updated partition comes back h2d unless the
  parameters are offloaded too.
- parameter offload (stage 3): every gather first uploads the partitions it needs (h2d).
"""

from __future__ import annotations

from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig
from simtune.model.memory_buffers import kept_gathered_elements
from simtune.model.shards import Shards
from simtune.optimizers import ADAM_KERNELS


def local_elements(s: Shards, c: TrainConfig) -> int:
    if c.stage == 0:
        return s.params
    return s.flat_partition if c.stage in (1, 2) else s.partition


def optimizer_s(m: ModelSpec, s: Shards, hw: HardwareSpec, c: TrainConfig) -> float:
    if c.offload_optimizer:
        return local_elements(s, c) * hw.host_optimizer_rate(torch_adamw=not c.fused_adam)
    return local_elements(s, c) * hw.optimizer_s_per_param + loop_dispatch_s(m, hw, c)


def steps_model_tensors(c: TrainConfig) -> bool:
    """Whether the device optimizer steps the model's own parameter tensors: at stage 0 in fp32
    or under autocast (the engine hands it the model's parameters; their fp32 gradients are also
    what a loop that clips clips itself: :func:`simtune.model.step_time.clipping_s`). Stage 0's
    16-bit wrappers and the ZeRO stages step flat fp32 tensors, one or a few per parameter group."""
    return c.stage == 0 and not c.offload_optimizer and c.state_precision == "fp32"


def loop_dispatch_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """Seconds an implementation that launches its kernels tensor by tensor (``kernels_per_tensor``
    k of :data:`simtune.optimizers.ADAM_KERNELS`: torch's for-loop AdamW) adds beyond its bytes
    where it steps the model's own tensors (:func:`steps_model_tensors`); k launches per tensor at
    the dispatch cost d (``forward_kernel_s``). On a device that runs beside its host (CUDA) a
    tensor of e elements takes max(k d, e r), r the fit's seconds per parameter, so the launches
    add only over the tensors of fewer than k d / r elements (n_small of them, e_small elements):

        n_small k d - e_small r

    On a synchronous device (CPU) every launch adds, n k d (a measured fit holds its own few
    tensors' launches in its intercept, which the step leaves out)."""
    kernels = ADAM_KERNELS.get(hw.optimizer_impl or "")
    if kernels is None or not kernels.kernels_per_tensor or not steps_model_tensors(c):
        return 0.0
    launch = kernels.kernels_per_tensor * hw.framework.forward_kernel_s
    rate = hw.optimizer_s_per_param / c.mp_degree  # per element of a whole tensor
    if not hw.overlap_capable or rate <= 0:
        return len(m.layout.numels) * launch
    elements, tensors = m.layout.at_most(int(launch / rate))
    return max(0.0, tensors * launch - elements * rate)


def offload_transfer_s(m: ModelSpec, s: Shards, hw: HardwareSpec, c: TrainConfig) -> float:
    if not (c.offload_optimizer or c.offload_param):
        return 0.0
    b = c.state_bytes
    gas = c.gradient_accumulation_steps
    d2h = h2d = 0.0
    if c.offload_optimizer and c.stage in (1, 2):
        d2h += b * s.flat_partition
        h2d += b * s.flat_partition
        if gas > 1:
            d2h += gas * b * s.grads_in_partition
            h2d += (gas - 1) * b * s.grads_in_partition
    elif c.offload_optimizer:
        d2h += gas * b * s.partition
        if not c.offload_param:
            h2d += b * s.partition
    if c.offload_param:
        nonpersistent = s.params - s.persistent
        released = nonpersistent - kept_gathered_elements(m, s, c)
        h2d += gas * b * (nonpersistent + released) / c.dp_degree
    return d2h / hw.d2h_bandwidth_bytes_per_s + h2d / hw.h2d_bandwidth_bytes_per_s
