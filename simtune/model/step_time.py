"""Step time per optimizer step: every term on its own, and how they combine.

One optimizer step runs gas micro-steps (forward, backward, recompute), the last of which is
the accumulation boundary, then the boundary work:

    step_s = (gas - 1) * micro_s + boundary_micro_s + boundary_reduce_s
             + gather_after_step_s + optimizer_s + offload_transfer_s
             + engine overhead (measured per stage by the workload calibration, when given;
               else the profile's framework costs: stage-3 hooks, bucket calls, gradient
               hooks and copies, the engine's step)
             + stage 0 in 16 bits around torch's AdamW: a dispatch per op per parameter tensor
               (:func:`unfused_wrapper_s`)
             + gradients cast to and from ``communication_data_type`` where it differs from
               theirs (:func:`communication_cast_s`)
             + gradient clipping where the loop clips the model's fp32 gradients (:func:`clipping_s`)
             + torch's loss scaling in fp16 under autocast outside DeepSpeed (:func:`loss_scaling_s`)
             + first touch of memory mapped afresh (CPU: :mod:`simtune.model.fresh_memory`)
             + waking a throttled OpenMP pool (CPU ranks of 2+ threads: :mod:`simtune.model.thread_pool`)

The same sum is reported by phase, as the engine's calls split it (forward calls, backward calls,
the step call); the boundary reduction of stages 0/1 runs inside the engine's backward.

Overlap (overlap_comm, on hardware that can run communication beside compute): the
overlappable communication of a phase runs beside its compute except its last call, which
starts when the compute ends; while a collective runs it holds a share f of the device
(:func:`simtune.model.overlap.collective_share`: the SMs NCCL's channels hold, or the memory
bandwidth its traffic takes, whichever is larger), and the compute beside it moves at 1 - f of
its speed while it runs (:func:`simtune.model.overlap.side_by_side`):

    beside_s = comm_s - last_call_s
    phase_s  = max(compute_s + f x min(beside_s, compute_s / (1 - f)), beside_s) + last_call_s

Backward overlaps gradient reductions issued by the gradient hooks (stage 2 every micro-step,
stage 1 at the boundary micro-step); stage 3 with prefetch also overlaps parameter allgathers
with forward and backward (the first fetch of the forward is exposed). Without overlap every
term adds up. ``hidden_comm_s`` is what overlap saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from simtune.model import compute_time as ct
from simtune.model.checkpointing import checkpointed_layers
from simtune.model.comm_time import communication
from simtune.model.fresh_memory import first_touch_s
from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig
from simtune.model.links import ring_collectives
from simtune.model.optimizer_time import offload_transfer_s, optimizer_s, steps_model_tensors
from simtune.model.overlap import PhaseShares, phase_shares, side_by_side
from simtune.model.shards import Shards, shards
from simtune.model.thread_pool import pool_wake_s


@dataclass(frozen=True)
class TimeEstimate:
    """Seconds per optimizer step on one rank (all gas micro-steps and the boundary)."""

    forward_s: float
    backward_s: float
    recompute_s: float
    grad_reduce_s: float
    param_gather_s: float
    optimizer_s: float
    offload_transfer_s: float
    hidden_comm_s: float
    step_s: float
    engine_overhead_s: float = 0.0
    """What DeepSpeed's engine adds beyond these terms: measured per stage by the workload
    calibration, else the profile's framework costs (:func:`framework_costs`)."""
    forward_phase_s: float = 0.0
    """The engine's forward calls of one optimizer step: forward compute, stage-3 gathers."""
    backward_phase_s: float = 0.0
    """The engine's backward calls: backward, recomputation, the reductions (stages 0/1 at the
    boundary, stages 2/3 in the hooks), stage-3 gathers of released parameters."""
    step_phase_s: float = 0.0
    """The engine's step call: optimizer, gathers after it, offload copies."""
    first_touch_s: float = 0.0
    """Page faults of the memory mapped afresh in the step's phases
    (:mod:`~simtune.model.fresh_memory`; CPU only)."""
    thread_pool_s: float = 0.0
    """Waking a throttled OpenMP pool's workers before its parallel kernels
    (:mod:`~simtune.model.thread_pool`; CPU ranks of two or more threads)."""

    @property
    def exposed_comm_s(self) -> float:
        return self.grad_reduce_s + self.param_gather_s - self.hidden_comm_s

    def terms(self) -> tuple[float, ...]:
        """The :data:`STEP_TERMS` in order; they sum to ``step_s``."""
        return tuple(getattr(self, f"{name}_s") for name, _ in STEP_TERMS)


STEP_TERMS = (("forward", "forward"), ("backward", "backward"), ("recompute", "recomputation"),
              ("exposed_comm", "exposed communication"), ("optimizer", "optimizer step"),
              ("offload_transfer", "offload transfers"), ("engine_overhead", "engine work"),
              ("first_touch", "first-touch page faults"), ("thread_pool", "thread pool wake-ups"))
"""(TimeEstimate attribute without ``_s``, label) of the terms that add up to the step:
exposed communication = gradient reduction + parameter gathers - what overlap hid."""


def _reduce_calls(m: ModelSpec, c: TrainConfig) -> int:
    """Gradient-reduction calls of one optimizer step: one per bucket, at the boundary for stage
    1 and in every micro-step for stages 2 and 3."""
    if c.stage == 0 or c.dp_degree == 1:
        return 0
    per_step = 1 if c.stage == 1 else c.gradient_accumulation_steps
    return per_step * m.layout.bucket_count(c.reduce_bucket_size)


def backward_engine_work_per_step(stage: int) -> bool:
    """Whether the engine's backward work beyond the model's (measured, or the profile's
    ``engine_boundary_s``, hooks and per-parameter passes) runs once per optimizer step rather than
    in every micro-step: at stages 0/1, whose gradients are reduced at the accumulation boundary
    only (DeepSpeed 0.19.8 engine.py ``allreduce_gradients``: "Communicate only at gradient
    accumulation boundaries"), so that the ranks also wait for each other only there; stages 2/3
    reduce, and meet, in every micro-step. benchmarks/accumulation.py splits 16 samples per rank
    into 16 x 1, 4 x 4 and 1 x 16 micro-steps on 2 CPU processes: charged in every micro-step,
    stage 0/1 steps of 1 x 16 were predicted 67-80% slow; once a step, 13-14% (docs/cost-model.md
    3.3)."""
    return stage < 2


def gradient_copy_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """Device seconds per micro-step spent moving gradients, where the engine's costs are not
    measured: stages 0/1 accumulate each micro-step's gradients into the kept ones (read both,
    write one: 3 b P bytes, from the second micro-step on, averaged over the step); stages 2/3 copy
    every gradient into the reduction bucket as its hook fires (2 b P bytes). At the streaming
    rate, except an accumulation whose two gradient sets (2 b P) fit in the rank's share of the
    last-level cache, which runs at the cached rate (:meth:`HardwareSpec.plain_bandwidth_within`);
    autograd adds each tensor's gradient in its own kernel, one dispatch each
    (``backward_kernel_s``), beside the device's time or after it where ops run on the calling
    thread (CPU). gpt2-tiny's 2.2 MB of gradients over 28 tensors took 0.17 ms an add on the
    2-core VM, where the streaming rate alone charged 0.51 (docs/cost-model.md 3.3)."""
    p, b, gas = m.parameter_count / c.mp_degree, c.state_bytes, c.gradient_accumulation_steps
    streaming = hw.streaming_for(c.state_precision)
    if c.stage >= 2:
        return 0.0 if streaming is None else 2 * b * p / streaming
    bandwidth = hw.plain_bandwidth_within(2 * b * p) or streaming
    if bandwidth is None or gas == 1:
        return 0.0
    device = 3 * b * p / bandwidth
    host = len(m.layout.numels) * hw.framework.backward_kernel_s
    return hw.with_host_s(device, host) * (gas - 1) / gas


def communication_cast_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """Device seconds per optimizer step casting gradients to ``communication_data_type`` and back
    where it differs from their dtype (b bytes an element, g as reduced; memory-bound kernels
    without arithmetic, at :meth:`HardwareSpec.plain_bandwidth`). Stages 0-2 cast each reduced bucket into a new tensor and copy the
    result back, 2 (b + g) P bytes per reduction (engine.py ``allreduce_bucket``,
    stage_1_and_2.py ``gradient_reduction_w_predivide``): once a step at stages 0-1, every
    micro-step at stage 2 (stages 1-2 only beside other ranks). Stage 3 copies each gradient into
    a bucket of that dtype, g - b more bytes an element than its own, and casts the reduced
    partition back, (g + b) P / dp (stage3.py), every micro-step. Not part of the measured engine
    costs: the calibration's engines run DeepSpeed's default."""
    g, b = c.gradient_comm_bytes, c.state_bytes
    bandwidth = hw.plain_bandwidth()
    if g is None or g == b or bandwidth is None or (c.stage in (1, 2) and c.dp_degree == 1):
        return 0.0
    p = m.parameter_count / c.mp_degree
    if c.stage == 3:
        moved = ((g - b) * p + (g + b) * p / c.dp_degree) * c.gradient_accumulation_steps
    else:
        moved = 2 * (b + g) * p * (c.gradient_accumulation_steps if c.stage == 2 else 1)
    return max(0.0, moved) / bandwidth


def param_pass_terms(k: tuple[float, float, float], params: float, stage: int,
                     dp: int, persistent: float = 0.0) -> tuple[float, float, float]:
    """(forward, backward, step) seconds of one stage's costs per parameter ``k`` for a replica
    of P = ``params`` parameters on ``dp`` data-parallel ranks, ``persistent`` of them in the
    tensors ZeRO-3 keeps whole on every rank:

        forward = (P - persistent) k_f  (only with dp > 1: at one rank nothing is gathered; at
                  stage 3 only what is fetched, the persistent tensors never are),
        backward = P k_b,
        step    = P k_s at stages 0-2 (the update is copied back into the whole model),
                  (P / dp) k_s at stage 3 (its optimizer and fp32 partition hold the shard only)"""
    k_f, k_b, k_s = k
    fetched = params - (persistent if stage == 3 else 0.0)
    return (fetched * k_f if dp > 1 else 0.0, params * k_b, params * k_s / (dp if stage == 3 else 1))


def recomputed_modules(m: ModelSpec, c: TrainConfig) -> int:
    """Parameter-holding modules whose forward runs again under activation checkpointing: each
    checkpointed layer's, ``hooked_modules // num_layers`` of them (the modules outside the layers,
    embeddings and head, are not recomputed). At stage 3 their fetch and release hooks fire in that
    recomputation too; the allgathers do not repeat (the backward reuses what the recomputation
    gathered: ``stage3_max_reuse_distance``, whose default covers a layer)."""
    return checkpointed_layers(m, c) * (m.hooked_modules // m.num_layers)


UNFUSED_WRAPPER_OPS_PER_TENSOR = 13
"""Host-dispatched ops per parameter tensor in one step of DeepSpeed's ``FP16_UnfusedOptimizer``
(deepspeed/runtime/fp16/unfused_optimizer.py ``step``, DeepSpeed 0.19.8): the overflow check's
amax, amin, two isfinite, and, not (runtime/utils.py ``has_inf_or_nan``), the weight norm's
float cast, norm, power and sum (``get_weight_norm``), the gradient's cast to fp32, its unscaling
and the copy of the updated fp32 weight back into the 16-bit one."""


def unfused_wrapper_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """Host seconds per step of DeepSpeed's per-tensor wrapper around an optimizer other than its
    FusedAdam: at stage 0 in fp16 or bf16 the engine wraps torch's AdamW (``torch_adam``, fused or
    not) in ``FP16_UnfusedOptimizer`` (runtime/engine.py ``_configure_fp16_optimizer``: the fused
    wrapper only for FusedAdam), whose overflow check turns each gradient's check into a Python
    bool, one host-device synchronisation per tensor (runtime/utils.py ``has_overflow_serial``).
    After the first the device has nothing queued, so every op that follows costs its dispatch:

        n_tensors x UNFUSED_WRAPPER_OPS_PER_TENSOR x forward_kernel_s

    (the syncs' own latency and the ops' device time left out: small next to the dispatch on a
    GPU). Zero at stages 1-3 (the ZeRO optimizer checks flat partitions), in fp32 and under
    autocast (no 16-bit wrapper), and with FusedAdam (``TrainConfig.fused_adam``)."""
    if c.stage != 0 or c.precision == "fp32" or c.autocast or c.fused_adam:
        return 0.0
    return len(m.layout.numels) * UNFUSED_WRAPPER_OPS_PER_TENSOR * hw.framework.forward_kernel_s


CLIPPING_FIXED_OPS = 8
"""Ops of DeepSpeed's ``clip_grad_norm_`` beyond two per tensor: stacking the norms, their power
and sum, the root, the world average and the clip coefficient's three (runtime/utils.py)."""


def clipping_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """Seconds per step of gradient clipping over the fp32 gradients of the model's own tensors, where
    the loop clips them itself: DeepSpeed's engine at stage 0 with neither fp16 nor bf16 enabled
    (fp32, or its torch_autocast over an fp32 model; engine.py ``_take_model_step`` ->
    ``clip_fp32_gradients``), and a loop outside DeepSpeed under torch autocast (the Hugging Face
    Trainer clips at ``max_grad_norm``, 1.0 by default, with torch's ``clip_grad_norm_``).
    Each takes every gradient's norm and multiplies every gradient by min(1, max / norm), whatever
    the norm: 4 P bytes read and 8 P read and written at :meth:`HardwareSpec.plain_bandwidth`, two
    ops per tensor (torch 1.x loops over tensors; 2.x launches foreach kernels, fewer) and
    :data:`CLIPPING_FIXED_OPS` more at the dispatch cost; DeepSpeed's ``clip_grad_norm_``
    (runtime/utils.py) also averages the norm over the data-parallel group, one scalar allreduce
    (DDP's gradients are averaged already). Elsewhere the ZeRO and 16-bit optimizers take the norm
    whether or not the config clips (the engines the calibration measures include it) and scale
    the gradients only when the norm exceeds the limit, which the model cannot know."""
    if not c.gradient_clipping or not steps_model_tensors(c):
        return 0.0
    deepspeed = not c.autocast or c.deepspeed_autocast
    scalar = ring_collectives(hw, c.dp_degree * c.mp_degree).allreduce.latency_s if deepspeed and c.dp_degree > 1 else 0.0
    return _gradient_pass_s(m, hw, c, 12, 2 * len(m.layout.numels) + CLIPPING_FIXED_OPS) + scalar


def _gradient_pass_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig, bytes_per_param: int, ops: int) -> float:
    """A pass over every fp32 gradient of the rank moving ``bytes_per_param`` bytes each at
    :meth:`HardwareSpec.plain_bandwidth`, plus ``ops`` ops at the dispatch cost."""
    bandwidth = hw.plain_bandwidth()
    moved = bytes_per_param * m.parameter_count / c.mp_degree / bandwidth if bandwidth else 0.0
    return moved + ops * hw.framework.forward_kernel_s


LOSS_SCALING_OPS = 6
"""Ops of torch's ``GradScaler`` per step beyond its pass over the gradients: scaling the loss,
the inverse scale, the overflow flag, reading the flag on the host, the scale's update."""


def loss_scaling_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """Seconds per step of torch's dynamic loss scaling, where a loop outside DeepSpeed trains in
    fp16 under torch autocast (the Hugging Face Trainer's ``fp16=True``): ``GradScaler.unscale_``
    reads and writes every fp32 gradient once (``_amp_foreach_non_finite_check_and_unscale_``, 8 P
    bytes at :meth:`HardwareSpec.plain_bandwidth`) and :data:`LOSS_SCALING_OPS` ops at the dispatch
    cost. DeepSpeed's own fp16 checks overflow inside its optimizers (the engine's step)."""
    if not (c.autocast and not c.deepspeed_autocast and c.precision == "fp16"):
        return 0.0
    return _gradient_pass_s(m, hw, c, 8, LOSS_SCALING_OPS)


def framework_costs(m: ModelSpec, hw: HardwareSpec, c: TrainConfig,
                    sizes: Optional[Shards] = None) -> tuple[float, float, float]:
    """(per forward, per backward, per step) seconds the engine adds from the profile's
    :class:`~simtune.model.inputs.FrameworkCosts`, as an engine running one micro-step per step
    spends them (what the calibration's engines measure; :func:`estimate_time` charges the
    backward's once per step at stages 0/1, see :func:`backward_engine_work_per_step`): stage 3
    fetches and releases every parameter-holding module in each pass (at a cost per module of its
    own in each direction, ``zero3_module_s`` forward, ``zero3_module_backward_s`` backward);
    stages 2/3 run a gradient hook per parameter tensor in each backward, copy the gradients into
    their buckets (:func:`gradient_copy_s`) and gather each persistent tensor after the step; every
    stage runs the engine's own work per micro-step (in the forward) and where the ranks meet (in
    the backward), and steps the engine. Where the engine's work in proportion to the model's size
    was learnt (``param_pass_s``, read off engines at one micro-step per step), that replaces the
    copies into the buckets of stages 2/3; its terms are :func:`param_pass_terms`'s for the
    replica's ``parameter_count / mp`` parameters (stage 3's forward for those it fetches)."""
    fw = hw.framework
    sizes = sizes if sizes is not None else shards(m, c)
    fwd, bwd = fw.engine_micro_step_s, fw.engine_boundary_s
    if c.stage == 3:
        fwd += m.hooked_modules * fw.zero3_module_s
        bwd += (m.hooked_modules + recomputed_modules(m, c)) * fw.zero3_module_backward_s
    if c.stage >= 2:
        bwd += len(m.layout.numels) * fw.gradient_hook_s
    step = fw.engine_step_s
    if fw.param_pass_s:
        f, b, s = param_pass_terms(fw.param_pass_s[c.stage], m.parameter_count / c.mp_degree, c.stage, c.dp_degree,
                                   sizes.persistent)
        fwd, bwd, step = fwd + f, bwd + b, step + s
    if not fw.param_pass_s and c.stage >= 2:
        bwd += gradient_copy_s(m, hw, c)
    if c.stage == 3 and c.dp_degree > 1:
        step += sizes.persistent_tensors * fw.gather_call_s
    return fwd, bwd, step


def estimate_time(model: ModelSpec, hardware: HardwareSpec, config: TrainConfig,
                  sizes: Optional[Shards] = None) -> TimeEstimate:
    s = sizes if sizes is not None else shards(model, config)
    c = config
    gas = c.gradient_accumulation_steps
    fwd = ct.forward_s(model, hardware, c)
    bwd = ct.micro_backward_s(model, hardware, c)
    rec = ct.micro_recompute_s(model, hardware, c)
    comm = communication(model, s, hardware, c)
    overlap = c.overlap and hardware.overlap_capable
    share = phase_shares(model, s, hardware, c, comm) if overlap else PhaseShares(0.0, 0.0)
    prefetch = overlap and c.stage == 3 and c.stage3_prefetch_bucket_size > 0

    if prefetch:
        fwd_phase = side_by_side(fwd, comm.gather_forward_s, comm.gather_first_call_s, share.forward)
        bwd_serial, bwd_hidable = bwd + rec, comm.reduce_per_micro_s + comm.gather_backward_s
    else:
        fwd_phase = fwd + comm.gather_forward_s
        bwd_serial, bwd_hidable = bwd + rec + comm.gather_backward_s, comm.reduce_per_micro_s

    def backward_phase(extra_reduce_s: float) -> float:
        hidable = bwd_hidable + extra_reduce_s
        if overlap:
            return side_by_side(bwd_serial, hidable, comm.reduce_last_call_s, share.backward)
        return bwd_serial + hidable

    boundary_in_hooks = comm.reduce_at_boundary_s if c.stage == 1 and overlap else 0.0
    opt = optimizer_s(model, s, hardware, c)
    offload = offload_transfer_s(model, s, hardware, c)
    forward_phase = gas * fwd_phase
    backward_phase_total = ((gas - 1) * backward_phase(0.0) + backward_phase(boundary_in_hooks)
                            + comm.reduce_at_boundary_s - boundary_in_hooks)
    gathers_after = comm.gather_after_step_s + comm.gather_persistent_after_step_s
    step_phase = gathers_after + opt + offload
    loop = 0.0
    mc = model.measured_compute
    if mc is not None:
        o_fwd, o_bwd, o_step, o_loop = mc.overheads(c.stage, c.micro_batch_size)
        loop = gas * o_loop
    if mc is not None and mc.engines_measured:
        o_calls = _reduce_calls(model, c) * mc.reduce_call_overhead(c.stage, c.micro_batch_size)
    else:
        o_fwd, o_bwd, o_step = framework_costs(model, hardware, c, s)
        o_calls = _reduce_calls(model, c) * hardware.framework.reduce_bucket_s
    o_step += unfused_wrapper_s(model, hardware, c)  # engine residuals are read net of it (engine_residuals)
    o_calls += communication_cast_s(model, hardware, c)
    o_step += clipping_s(model, hardware, c) + loss_scaling_s(model, hardware, c)
    # read at one micro-step per step: where the ranks meet once a step, so does that work
    o_bwd_all = o_bwd * (1 if backward_engine_work_per_step(c.stage) else gas)
    o_bwd_all += gas * (gradient_copy_s(model, hardware, c) if c.stage < 2 else 0.0)  # accumulation
    overhead = gas * o_fwd + o_bwd_all + o_step + o_calls + loop
    forward_phase += gas * o_fwd
    backward_phase_total += o_bwd_all + o_calls
    step_phase += o_step
    touch_fwd, touch_bwd, touch_step = first_touch_s(model, s, c, hardware)
    touched = touch_fwd + touch_bwd + touch_step
    forward_phase += touch_fwd
    backward_phase_total += touch_bwd
    step_phase += touch_step
    wake_fwd, wake_bwd = pool_wake_s(model, hardware, c)
    woken = gas * (wake_fwd + wake_bwd)
    forward_phase += gas * wake_fwd
    backward_phase_total += gas * wake_bwd
    step = max(forward_phase + backward_phase_total + step_phase + loop, 1e-9)

    grad_reduce = gas * comm.reduce_per_micro_s + comm.reduce_at_boundary_s
    param_gather = gas * (comm.gather_forward_s + comm.gather_backward_s) + gathers_after
    serial_sum = gas * (fwd + bwd + rec) + grad_reduce + param_gather + opt + offload + overhead + touched + woken
    return TimeEstimate(forward_s=gas * fwd, backward_s=gas * bwd, recompute_s=gas * rec,
                        grad_reduce_s=grad_reduce, param_gather_s=param_gather, optimizer_s=opt,
                        offload_transfer_s=offload, hidden_comm_s=max(0.0, serial_sum - step),
                        step_s=step, engine_overhead_s=overhead, forward_phase_s=forward_phase,
                        backward_phase_s=backward_phase_total, step_phase_s=step_phase, first_touch_s=touched,
                        thread_pool_s=woken)
