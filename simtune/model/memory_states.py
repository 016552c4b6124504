"""Model-state memory per rank: parameters, gradients, fp32 master weights, optimizer states.

Each function returns device bytes for one rank, from the element counts in
:class:`~simtune.model.shards.Shards`, with b the bytes of the compute precision (4 for fp32,
2 for fp16/bf16). The ZeRO paper (Rajbhandari et al. 2020, section 3) counts 2 + 2 + 12 bytes
per parameter for mixed-precision Adam and shards the 12 (stage 1), then the gradients (stage 2),
then the parameters (stage 3). These functions mirror what DeepSpeed 0.19.8 actually holds at the
gradient-accumulation boundary, read from its code and checked by counting the tensors of live
engines (tests/model/test_model_real_states.py):

stage 0 (engine.py without a ZeRO wrapper; fp16/bf16 through fp16/unfused_optimizer.py or
fused_optimizer.py): b*P parameters, b*P gradients, 4*P fp32 master (mixed precision only),
8*P Adam moments (4*k*P for an optimizer of k fp32 states per parameter:
``OptimizerChoice.states``, 1 for Adagrad, Lion and momentum SGD, 0 for plain SGD).

stage 1/2 (zero/stage_1_and_2.py): the b*flat parameter buffer; an fp32 master slice of the
flat buffer, even when training in fp32 (``single_partition_of_fp32_groups`` is a clone);
8 bytes of moments per slice element. Stage 1 keeps full b*P gradients until the boundary
reduction; stage 2 keeps only whole gradients of the tensors touching its slice
(``grads_in_partition``), and a second such buffer while accumulating (``all_grad_tensors``
holds the previous micro-steps' sum while the next backward fills a new buffer).

stage 3 (zero/stage3.py): b*(partition + persistent) parameters, b*partition gradients
(``grad_partitions_flat_buffer``), 4*partition master (a separate copy in fp32 too) and
8*partition moments.

Offload moves the master, moments and (stages 2/3) gradient partitions to host memory
(:func:`host_bytes`); stage-3 parameter offload moves the parameter partitions too.
"""

from __future__ import annotations

from simtune.model.inputs import TrainConfig
from simtune.model.nvme_swap import nvme_host_bytes
from simtune.model.shards import Shards

FP32_BYTES = 4


def host_state_bytes(c: TrainConfig) -> int:
    """Bytes per element of an offloaded slice the host keeps: the fp32 master, the fp32 gradient
    and the optimizer's fp32 states (16 for Adam)."""
    return FP32_BYTES * (2 + c.optimizer.states)


def _optimizer_elements(s: Shards, stage: int) -> int:
    """Elements of the fp32 master and moments this rank updates."""
    if stage == 0:
        return s.params
    if stage in (1, 2):
        return s.flat_partition
    return s.partition


def parameter_bytes(s: Shards, c: TrainConfig) -> int:
    b = c.state_bytes
    if c.stage == 0:
        return b * s.params
    if c.stage in (1, 2):
        return b * s.flat
    if c.offload_param:
        return b * s.persistent
    return b * (s.partition + s.persistent)


def gradient_bytes(s: Shards, c: TrainConfig) -> int:
    b = c.state_bytes
    if c.stage in (0, 1):
        return b * s.params
    if c.offload_optimizer:
        return 0
    if c.stage == 2:
        copies = 2 if c.gradient_accumulation_steps > 1 else 1
        return copies * b * s.grads_in_partition
    return b * s.partition


def master_weight_bytes(s: Shards, c: TrainConfig) -> int:
    torch_autocast = c.autocast and not c.deepspeed_autocast  # its fp32 parameters are the master copy
    if c.offload_optimizer or torch_autocast or (c.stage == 0 and c.state_precision == "fp32"):
        return 0
    return FP32_BYTES * _optimizer_elements(s, c.stage)


def optimizer_state_bytes(s: Shards, c: TrainConfig) -> int:
    """The fp32 states of the elements the optimizer steps, and the states an optimizer that builds
    them eagerly kept for the model's own parameters (:func:`stale_state_bytes`)."""
    if c.offload_optimizer:
        return 0
    return FP32_BYTES * c.optimizer.states * _optimizer_elements(s, c.stage) + stale_state_bytes(s, c)


def stale_state_bytes(s: Shards, c: TrainConfig) -> int:
    """torch's Adagrad builds its state when it is constructed (``Algorithm.eager_state``), over the
    model's parameters the engine hands it, in their dtype, and the engine keeps that optimizer
    (``engine.basic_optimizer``) with its state: ZeRO-1/2 build a second Adagrad over the fp32
    slice (stage_1_and_2.py ``if isinstance(self.optimizer, torch.optim.Adagrad)``) and stage 0's
    16-bit wrappers step fp32 master copies: states x b x P stay. Not at stage 3, whose model is
    built partitioned (``deepspeed.zero.Init``, as the Hugging Face Trainer and simtune's training
    program build it: its parameters are empty then; stage3.py builds its own Adagrad too), nor
    offloaded (DeepSpeedCPUAdagrad builds its state at the first step). Counted on live engines
    (tests/model/test_model_real_states.py)."""
    spec = c.optimizer.spec
    if not spec.eager_state or c.offload_optimizer or c.stage == 3 or (c.stage == 0 and c.state_precision == "fp32"):
        return 0
    return spec.states * c.state_bytes * s.params


def host_bytes(s: Shards, c: TrainConfig) -> int:
    """Host memory per rank for offloaded states.

    Stage 1/2 (``cpu_offload`` in stage_1_and_2.py): fp32 master, fp32 gradient and moments of the
    slice (16 bytes per element; :func:`host_state_bytes`), a b-byte copy of the slice for the parameter upload, a b-byte
    staging buffer of the largest tensor, and with accumulation the b-byte gradients of the
    tensors touching the slice. Stage 3 (stage3.py): those 16 bytes per partition element plus the
    b-byte gradient partition; parameter offload adds the b-byte parameter partition. What stage 3
    swaps to NVMe holds buffers instead (:func:`simtune.model.nvme_swap.nvme_host_bytes`)."""
    if not (c.offload_optimizer or c.offload_param):
        return 0
    b = c.bytes_per_element
    total = nvme_host_bytes(s, c)
    if c.offload_optimizer:
        if c.stage in (1, 2):
            total += (host_state_bytes(c) + b) * s.flat_partition + b * s.largest_tensor
            if c.gradient_accumulation_steps > 1:
                total += b * s.grads_in_partition
        elif not c.swaps_optimizer_states:
            total += (host_state_bytes(c) + b) * s.partition
    if c.offload_param and not c.swaps_parameters:
        total += b * s.partition
    return total
