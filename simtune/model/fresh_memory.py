"""Time spent mapping fresh memory: the page faults of allocations the allocator maps anew (CPU).

glibc serves an allocation of at least its largest mmap threshold (32 MiB on 64-bit,
``DEFAULT_MMAP_THRESHOLD_MAX``) with a fresh mapping and unmaps it when it is freed, so every
such tensor pays its page faults again when it is first written; smaller ones come back from the
heap already mapped. A fresh 64 MiB copy on a 2-core VM took 5x a copy into a tensor that exists
(benchmarks/results/transient_memory.txt); CUDA's caching allocator keeps its blocks, so a GPU
pays nothing (``HardwareSpec.first_touch_s_per_byte`` is None there).

    first_touch_s (per phase) = first_touch_s_per_byte * fresh bytes of the phase

Fresh bytes per optimizer step count only single allocations of at least
:data:`FRESH_MAPPING_BYTES` (b: bytes of the compute precision, n_t: a tensor's elements / mp,
gas: micro-steps per optimizer step):

- forward (stage 3): every gathered parameter tensor, once per step when the backward reuses it
  (memory_buffers.kept_gathered_elements covers them all), else again in the backward;
- backward: each parameter's gradient, which autograd allocates anew in every micro-step (an
  embedding's dense backward fills it with zeros): at stages 0/1 the first becomes ``.grad`` (the
  step freed the last one: ``zero_grad(set_to_none=True)``) and the next are added into it and
  freed (``AccumulateGrad``), at stages 2/3 hooks move each into the bucket and free it; an LM
  head tied to the token embedding (``Block.tied_head``) makes that gradient three times, the
  head's, the embedding's and their sum (``aten::add`` of two [V, h] tensors; gpt2 at 32 tokens:
  3 x 147 MiB of first touches per rank in the backward, benchmarks/results/engine_profile_gpt2_tied.txt);
  none where the backward was measured (it paid them); the reductions' flat copies
  (memory_buffers.comm_scratch_bytes: stage 0's flatten at the boundary, stage 3's concatenated
  bucket and the backend's staging every micro-step, stages 1/2's beside other ranks); the bucket
  stages 1/2 allocate where they reduce (``setup_buckets``: at the boundary at stage 1, every
  micro-step at stage 2), as far as gradients fill it;
- step: the flat fp32 gradients stages 1-3 build (``single_grad_partition``) and the optimizer
  implementation's temporaries (memory_buffers.optimizer_temporaries), tensor by tensor;
- the loss, every micro-step (:func:`loss_fresh_bytes`), where the model's forward and backward
  were not measured (a measured one paid them): the logits-sized tensors it makes one by one, n =
  micro-batch x ``ModelSpec.logits_per_sample`` / mp elements each. torch's cross-entropy over
  upcast logits (memory_activations, ``loss == "fp32"``): in the forward the b-byte logits, their
  fp32 copy (none in fp32) and the fp32 log-softmax; in the backward the negative
  log-likelihood's zero-filled fp32 gradient, the log-softmax's fp32 gradient and, below fp32,
  its cast back to b bytes. A fused cross-entropy: the logits, then their gradient. Megatron-LM's
  vocabulary-parallel one: the logits and their fp32 copy (softmax in place), then the cast back.
  gpt2's at micro-batch 8 of 32 tokens on CPU: four of 51 MB (benchmarks/results/engine_profile_gpt2_mbs.txt
  lists the gradient's ``fill_ [256, 50257]``); at micro-batch 4 none reaches the threshold.
"""

from __future__ import annotations

from simtune.model import memory_buffers as buf
from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig
from simtune.model.shards import Shards

FRESH_MAPPING_BYTES = 32 * 2**20
"""glibc's largest mmap threshold on 64-bit (4 MiB * sizeof(long)): allocations at least this
large are always mapped afresh."""


def _fresh(nbytes: float) -> float:
    return nbytes if nbytes >= FRESH_MAPPING_BYTES else 0.0


def _large_tensor_bytes(m: ModelSpec, c: TrainConfig, bytes_per_element: int) -> float:
    """Bytes of the parameter tensors whose copy at ``bytes_per_element`` is mapped afresh."""
    per_mp = c.mp_degree
    elements = -(-FRESH_MAPPING_BYTES // bytes_per_element) * per_mp
    return bytes_per_element * m.layout.elements_at_least(elements) / per_mp


def tied_head_copies_bytes(m: ModelSpec, c: TrainConfig) -> float:
    """Bytes mapped afresh per micro-step for the two extra copies of a tied LM head's weight
    gradient (the head's own and the embedding's, before autograd sums them)."""
    if not m.block.sums_tied_gradients:
        return 0.0
    return 2 * _fresh(c.bytes_per_element * m.vocab_size * m.hidden_size / c.mp_degree)


def forward_fresh_bytes(m: ModelSpec, s: Shards, c: TrainConfig) -> float:
    """Stage 3's gathered parameter tensors per optimizer step."""
    if c.stage != 3:
        return 0.0
    gathers = 1 if buf.kept_gathered_elements(m, s, c) >= s.params - s.persistent else 2
    return gathers * c.gradient_accumulation_steps * _large_tensor_bytes(m, c, c.bytes_per_element)


def backward_fresh_bytes(m: ModelSpec, s: Shards, c: TrainConfig, hw: HardwareSpec) -> float:
    """Gradients, reduction copies and stage 1/2 buckets per optimizer step. A model whose
    backward was measured (``ModelSpec.measured_compute``) paid its gradients' faults inside that
    measurement, which also freed them after every backward."""
    b, gas = c.bytes_per_element, c.gradient_accumulation_steps
    per_micro = c.stage >= 2
    grads = 0.0
    if m.measured_compute is None:
        grads = gas * (_large_tensor_bytes(m, c, b) + tied_head_copies_bytes(m, c))
    if c.stage == 0:
        piece = b * min(buf.STAGE0_ALLREDUCE_ELEMENTS, s.params)
        scratch = _fresh(piece) * s.params * b / piece if piece else 0.0
    else:  # each reduction flattens one bucket's worth: copies of it, each mapped afresh or not
        flat = b * min(c.reduce_bucket_size, s.params)
        copies = buf.comm_scratch_bytes(s, c, hw.reduce_scatter_staging) / flat if flat else 0.0
        scratch = _fresh(flat) * copies * s.params * b / flat * (gas if per_micro else 1) if flat else 0.0
    buckets = 0.0
    if c.stage in (1, 2) and (c.contiguous_gradients or c.offload_optimizer):
        count = 2 if c.overlap else 1
        if _fresh(b * c.reduce_bucket_size):
            buckets = (gas if per_micro else 1) * b * min(c.reduce_bucket_size * count, s.params)
    return grads + scratch + buckets


def step_fresh_bytes(m: ModelSpec, s: Shards, c: TrainConfig, hw: HardwareSpec) -> float:
    """The step's fp32 gradients and the optimizer's temporaries per optimizer step."""
    if c.offload_optimizer:
        return 0.0
    transient = _fresh(buf.step_transient_bytes(s, c))
    every, largest = buf.optimizer_temporaries(c, hw.optimizer_impl)
    if c.stage == 0 and c.precision == "fp32":
        temporaries = (every + largest) * _large_tensor_bytes(m, c, 4)
    else:
        temporaries = (every + largest) * _fresh(4 * buf.stepped_elements(s, c))
    return transient + temporaries


def loss_tensor_sizes(loss: str, b: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bytes per element of each logits-sized tensor the loss makes per micro-step, (forward,
    backward), in order (module docstring); ``b`` the compute precision's. The fp32 copy and the
    cast back exist only below fp32."""
    upcast, downcast = ((), ()) if b == 4 else ((4,), (b,))
    if loss == "fused":
        return (b,), (b,)
    if loss == "vocab_parallel":
        return (b, *upcast), downcast
    return (b, *upcast, 4), (4, 4, *downcast)


def loss_fresh_bytes(m: ModelSpec, c: TrainConfig) -> tuple[float, float]:
    """(forward, backward) bytes per optimizer step of the loss's logits-sized tensors mapped
    afresh (module docstring); none where the model's compute was measured."""
    if m.measured_compute is not None:
        return 0.0, 0.0
    n = c.micro_batch_size * m.logits_per_sample / c.mp_degree
    forward, backward = (sum(_fresh(size * n) for size in phase)
                         for phase in loss_tensor_sizes(m.loss, c.bytes_per_element))
    return forward * c.gradient_accumulation_steps, backward * c.gradient_accumulation_steps


def first_touch_s(m: ModelSpec, s: Shards, c: TrainConfig, hw: HardwareSpec) -> tuple[float, float, float]:
    """(forward, backward, step) seconds of page faults per optimizer step; zeros where the
    hardware maps no memory afresh."""
    rate = hw.first_touch_s_per_byte
    if not rate:
        return 0.0, 0.0, 0.0
    loss_forward, loss_backward = loss_fresh_bytes(m, c)
    return (rate * (forward_fresh_bytes(m, s, c) + loss_forward),
            rate * (backward_fresh_bytes(m, s, c, hw) + loss_backward), rate * step_fresh_bytes(m, s, c, hw))
