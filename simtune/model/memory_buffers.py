"""Buffer memory per rank: communication buckets, ZeRO-3 gathered parameters, transients.

Device bytes for one rank; b is the byte size of the compute precision.

- Gradient buckets (stage_1_and_2.py ``setup_buckets``; stage3.py ``_setup_for_real_optimizer``):
  with contiguous gradients DeepSpeed allocates ``reduce_bucket_size`` elements at once, whatever
  the model size: b * RBS, twice for stages 1/2 with overlap_comm (double buffering). Stages 1/2
  allocate it at the first gradient of a backward, stage 3 at start-up. CPU offload (stages 1/2)
  adds a b-byte staging buffer of the largest tensor.
- Gathered parameters (stage 3, partitioned_param_coordinator.py): after a module's forward its
  parameters stay gathered when the backward reuses them within ``stage3_max_reuse_distance``
  elements of trace, and prefetching keeps up to ``stage3_max_live_parameters`` of them; one
  module in flight and one prefetch bucket come on top.
- Communication scratch: one reduction flattens its bucket into a new tensor, at any data-parallel
  degree (stage 0: engine.py ``buffered_allreduce_fallback`` in pieces of 5e8 elements, called
  whatever the world size; stage 3: ``reduce_scatter_coalesced`` concatenates the bucket's
  gradients, also at one rank; stages 1/2: one bucket, beside other ranks only). Where the
  backend's reduce-scatter stages its buffers (``HardwareSpec.reduce_scatter_staging``: gloo copies
  the input and allocates a shard-sized output, (1 + 1/dp) times the input, measured by
  benchmarks/collective_memory.py; NCCL reduces in place), stage 3 adds that.
- Buckets held through the step: stage 3's is allocated at start-up and kept; stages 1/2 release
  theirs at the end of every backward (stage_1_and_2.py ``_release_ipg_buffers``), so theirs share
  the backward's slot with the activations.
- Step transient: the optimizer step builds fp32 gradients for the elements it updates
  (fp16/unfused_optimizer.py and fused_optimizer.py for stage 0 mixed precision,
  ``single_grad_partition`` in stage_1_and_2.py and stage3.py: at stage 3 one optimizer
  sub-group at a time, ``Shards.step_group``); on the host when offloaded.
  Stage 0 in fp16 (``FP16_Optimizer``, which DeepSpeed's "Adam" becomes with FusedAdam on CUDA)
  holds twice that at its peak: ``step`` converts every gradient to fp32 in a list and
  ``_flatten_dense_tensors`` concatenates the list into a new flat tensor while the list lives
  (fused_optimizer.py ``step``): 8 bytes per parameter.
- Optimizer temporaries (:meth:`simtune.optimizers.OptimizerChoice.kernels`): what the
  implementation allocates inside its step, in fp32, beyond its states. torch's for-loop AdamW (``_single_tensor_adam``,
  torch's choice for CPU tensors) computes ``(exp_avg_sq.sqrt() / bias_correction2_sqrt)``: two
  temporaries the size of the tensor it updates, one tensor at a time, so twice the largest
  tensor it steps (the flat fp32 partition at stages 1/2 and in stage 0's mixed-precision
  optimizers, the largest optimizer sub-group at stage 3, which steps one at a time:
  ``Shards.step_group``, the largest model tensor at stage 0 in fp32); the foreach AdamW
  (``_multi_tensor_adam``) one ``_foreach_sqrt`` copy of every element it updates (at stage 3,
  of one sub-group); fused kernels none. Adagrad's ``sqrt`` allocates one such tensor, SGD none,
  and SGD's and Adagrad's coupled weight decay one more (``grad.add(param)``).
- Gradients inside the step: stages 0 and 3 keep theirs through the step. Stages 1/2 free theirs
  inside it (stage_1_and_2.py ``step``): the gradients outside the rank's partition first, then
  the partition's once it is flattened (b bytes per element) and cast to fp32 (4 bytes; no copy
  in fp32), before the optimizer runs. So their gradients share the backward's slot, and the
  step's own peak is the larger of that cast (the partition's gradients, their flat copy and the
  fp32 cast at once) and the optimizer's (the fp32 gradients and the implementation's
  temporaries).
"""

from __future__ import annotations

from typing import Optional

from simtune.model.inputs import ModelSpec, TrainConfig
from simtune.model.memory_states import FP32_BYTES, gradient_bytes
from simtune.model.shards import Shards
from simtune.optimizers import implementation_of

STAGE0_ALLREDUCE_ELEMENTS = 500_000_000
"""engine.py MEMORY_OPT_ALLREDUCE_SIZE: stage 0 reduces gradients in pieces of this many."""


def gradient_bucket_bytes(s: Shards, c: TrainConfig) -> int:
    """Under DeepSpeed's autocast the engine keeps one bucket per communication dtype (the 16-bit
    one of linear layers and fp32): stages 1/2 each of fp32 elements, stage 3 each in its dtype."""
    b = c.state_bytes
    if c.stage == 0:
        return 0
    if c.stage == 3:
        if not c.contiguous_gradients:
            return 0
        if c.deepspeed_autocast:
            return (b + c.bytes_per_element) * c.reduce_bucket_size
        return (c.gradient_comm_bytes or b) * c.reduce_bucket_size
    total = 0
    if c.contiguous_gradients or c.offload_optimizer:
        total = b * c.reduce_bucket_size * (2 if c.overlap else 1) * (2 if c.deepspeed_autocast else 1)
    if c.offload_optimizer:
        total += b * s.largest_tensor
    return total


def resident_bucket_bytes(allocated: int, s: Shards, c: TrainConfig) -> int:
    """Buckets as a resident set counts them (CPU): each bucket is written only as far as the
    gradients placed in it, at most the whole model's: b * min(RBS, P) per bucket."""
    if allocated == 0:
        return 0
    b = c.state_bytes
    per_bucket = b * min(c.reduce_bucket_size, s.params)
    count = 2 if c.stage in (1, 2) and c.overlap else 1
    staging = b * s.largest_tensor if c.stage in (1, 2) and c.offload_optimizer else 0
    return min(allocated, count * per_bucket + staging)


def kept_gathered_elements(model: ModelSpec, s: Shards, c: TrainConfig) -> int:
    """Stage-3 parameters still gathered when the forward ends (elements)."""
    if c.stage != 3:
        return 0
    nonpersistent = s.params - s.persistent
    reuse = model.layout.reuse_kept_numel(c.stage3_param_persistence_threshold,
                                          c.stage3_max_reuse_distance) // c.mp_degree
    live = min(c.stage3_max_live_parameters, nonpersistent) if c.stage3_prefetch_bucket_size > 0 else 0
    return min(nonpersistent, max(reuse, live))


def tied_table_regathered(model: ModelSpec, s: Shards, c: TrainConfig) -> int:
    """Elements of a tied LM head's table (the token embedding, :attr:`Block.sums_tied_gradients`)
    stage 3 gathers a second time in each pass: forward uses it first and last, backward first and
    last, and where not every parameter stays gathered (some are released after forward) it is
    released between its two uses and gathered at each. 0 for an untied or persistent table, or
    where everything stays gathered (benchmarks/results/checkpoint_fetches.txt: gpt2-tiny's table
    gathered 4 times per step with every parameter released, once with DeepSpeed's defaults)."""
    if c.stage != 3 or not model.block.sums_tied_gradients:
        return 0
    table = model.vocab_size * model.hidden_size
    if table <= c.stage3_param_persistence_threshold:
        return 0
    if kept_gathered_elements(model, s, c) >= s.params - s.persistent:
        return 0
    return -(-table // c.mp_degree)


def fetched_elements(model: ModelSpec, s: Shards, c: TrainConfig) -> int:
    """Parameter elements stage 3 gathers in one micro-step: every non-persistent one in forward,
    in backward again those released after forward (all but :func:`kept_gathered_elements`), and
    a released tied table once more in each pass (:func:`tied_table_regathered`).

    Activation checkpointing adds no fetch: the recomputing forward gathers what the layer's
    backward then uses. DeepSpeed 0.19.8 gathered the same elements in as many calls with and
    without checkpointing, with parameters kept and with every one released
    (benchmarks/results/checkpoint_fetches.txt)."""
    if c.stage != 3:
        return 0
    nonpersistent = s.params - s.persistent
    return 2 * nonpersistent - kept_gathered_elements(model, s, c) + 2 * tied_table_regathered(model, s, c)


def gathered_parameter_bytes(model: ModelSpec, s: Shards, c: TrainConfig) -> int:
    """b * min(non-persistent, kept + the largest module in flight + one prefetch bucket)."""
    if c.stage != 3:
        return 0
    kept = kept_gathered_elements(model, s, c)
    prefetch = 0
    if c.stage3_prefetch_bucket_size > 0:
        prefetch = min(c.stage3_prefetch_bucket_size, max(0, c.stage3_max_live_parameters - kept))
    nonpersistent = s.params - s.persistent
    return c.state_bytes * min(nonpersistent, kept + s.largest_layer + prefetch)


def buckets_held_through_step(c: TrainConfig) -> bool:
    """Stage 3 keeps its bucket from start-up; stages 1/2 free theirs after each backward."""
    return c.stage == 3


def gradients_held_through_step(c: TrainConfig) -> bool:
    """Stages 0 and 3 keep their gradients through the optimizer step; stages 1/2 free them inside
    it, once their partition is cast to fp32 (stage_1_and_2.py ``step``: ``free_grad_in_param_list``
    of the parameters outside the partition, the flat fp32 copy, then of those inside), so their
    gradients share the backward's slot and never meet the optimizer's temporaries."""
    return c.stage not in (1, 2)


def gradient_cast_bytes(s: Shards, c: TrainConfig) -> int:
    """What stages 1/2 hold as they cast their gradient partition to fp32 before the optimizer step
    (stage_1_and_2.py ``step``, DeepSpeed 0.19.8): the partition's gradients (the parameters'
    inside the partition, b bytes per element; at stage 2 all its gradient copies,
    :func:`~simtune.model.memory_states.gradient_bytes`), their flat copy (``flatten``, b bytes per
    element) and that copy cast to fp32 (``.to``: none when the gradients are fp32 already); the
    gradients outside the partition are freed first. Host optimizers cast on the host: nothing."""
    if c.stage not in (1, 2) or c.offload_optimizer:
        return 0
    b = c.state_bytes
    partition = gradient_bytes(s, c) if c.stage == 2 else b * s.grads_in_partition
    return partition + b * s.flat_partition + (FP32_BYTES * s.flat_partition if b != FP32_BYTES else 0)


def comm_scratch_bytes(s: Shards, c: TrainConfig, reduce_scatter_staging: bool = False) -> int:
    """The flattened bucket of one reduction; where ``communication_data_type`` differs from the
    gradients' dtype, stages 0-2 cast that bucket to it in a new tensor beside it (engine.py
    ``allreduce_bucket``, stage_1_and_2.py ``gradient_reduction_w_predivide``) and stage 3's
    bucket and scratch are in it already."""
    b = c.state_bytes
    g = c.gradient_comm_bytes
    cast = g if g is not None and g != b else 0
    if c.stage == 0:
        return (b + cast) * min(STAGE0_ALLREDUCE_ELEMENTS, s.params)
    if c.stage == 3:
        flat = (g or b) * min(c.reduce_bucket_size, s.params)
        staged = reduce_scatter_staging and not c.allreduces_gradients
        return flat + (round(flat * (1 + 1 / c.dp_degree)) if staged else 0)
    flat = (b + cast) * min(c.reduce_bucket_size, s.params)
    return flat if c.dp_degree > 1 else 0


def stepped_elements(s: Shards, c: TrainConfig) -> int:
    """Elements the device optimizer updates in one call: the model's parameters at stage 0, the
    flat fp32 slice at stages 1/2, one optimizer sub-group at stage 3 (stage3.py steps them one
    at a time: ``Shards.step_group``)."""
    if c.stage == 0:
        return s.params
    return s.flat_partition if c.stage in (1, 2) else s.step_group


def step_transient_bytes(s: Shards, c: TrainConfig) -> int:
    if c.stage == 0:
        return {"fp32": 0, "fp16": 8, "bf16": 4}[c.state_precision] * s.params
    if c.offload_optimizer:
        return 0
    return 4 * stepped_elements(s, c)


def optimizer_temporaries(c: TrainConfig, impl: Optional[str]) -> tuple[int, int]:
    """(fp32 copies of every element it updates, fp32 copies of the largest tensor it updates) of
    the configuration's optimizer stepped as the device fit ``impl`` steps AdamW
    (:meth:`simtune.optimizers.OptimizerChoice.kernels`); none for an unknown or unnamed fit (host
    optimizers run on host memory)."""
    kind = implementation_of(impl)
    if kind is None:
        return 0, 0
    kernels = c.optimizer.kernels(kind)
    return kernels.temporaries_per_element, kernels.temporaries_of_largest


def optimizer_temporary_bytes(s: Shards, c: TrainConfig, impl: Optional[str]) -> int:
    """fp32 bytes an optimizer implementation allocates inside its step
    (:func:`optimizer_temporaries`): the largest tensor it updates is one model tensor at stage 0
    in fp32, else all it updates at once (:func:`stepped_elements`)."""
    if c.offload_optimizer:
        return 0
    every, largest = optimizer_temporaries(c, impl)
    updated = stepped_elements(s, c)
    biggest = s.largest_tensor if c.stage == 0 and c.state_precision == "fp32" else updated
    return 4 * (every * updated + largest * biggest)
