"""Compute time of one micro-step on one rank.

Without times measured for this model, a pass is costed operator by operator
(:mod:`simtune.model.operators`):

    device_s = sum over matmuls   flop(mbs) / mp / rate(flop(mbs) / mp)
                                  + weight_bytes / mp x weight_s_per_byte(weight_bytes / mp)
             + fused attention    flop(mbs) / mp / attention_rate   (backward: 2.5 x flop at its rate)
             + sum over streaming bytes(mbs) / mp / streaming_bandwidth   (the precision's passes at
                                  its own bandwidth, fp32 passes at fp32's: HardwareSpec.streaming_for)
             + forward: dropout elements(mbs) / mp x dropout_s_per_element (random numbers)
    host_s   = kernels x dispatch_s            (forward_kernel_s, or backward_kernel_s)
             + forward: modules with parameters x forward_module_s (the model's own Python)
    pass_s   = max(device_s, host_s)  where the device runs asynchronously (CUDA),
               device_s + host_s      where every op runs on the calling thread (CPU)

with ``rate`` the hardware's efficiency curve for the precision, read at the FLOPs of that one
matmul (the unit calibration measures), and ``weight_s_per_byte`` what a linear layer costs per
byte of its weight beyond that (``HardwareSpec.matmul_weights``, measured on CPU at few tokens;
forward and backward each their own; absent elsewhere), ``attention_rate`` the profile's fused
attention rate for the precision and direction (the curve's rate at the kernel's FLOPs where it
has none); a backward runs two products per forward product
(gradients with respect to inputs and weights: Narayanan et al. 2021, section 5.1; a fused
attention kernel 2.5, as it recomputes its scores) and its
streaming operators' backward passes. The recomputation under activation checkpointing is one
more forward of the layers (not of the embedding, head and loss).

When the model carries times measured on this hardware (``ModelSpec.measured_compute``, from the
workload calibration), those replace the formulas: forward and backward seconds at the
micro-batch size, interpolated linearly between measured sizes, divided by mp; the
recomputation is the measured checkpointed backward minus the plain one. Where ranks share a CPU
node's cores and the prediction's layout gives a rank other threads than the measurement had, the
measured time is carried over by the operators' own ratio (:func:`measured_scale`):

    measured_s x pass_s(hardware laid out now) / pass_s(hardware at the measurement's threads)
"""

from __future__ import annotations

from dataclasses import dataclass

from simtune.model.checkpointing import SELECTIVE_OP, checkpointed_layers, kept_products
from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig
from simtune.model.operators import Matmul, Streaming, model_operators


def matmul_work_flop(m: ModelSpec, c: TrainConfig) -> float:
    """FLOPs of one MLP matmul of a layer at this micro-batch (``2 * mbs * s * h * I / mp``): where
    reports read a profile's efficiency curve for the model."""
    return 2.0 * c.micro_batch_size * m.seq_len * m.hidden_size * m.intermediate_size / c.mp_degree


@dataclass(frozen=True)
class PassTime:
    """One pass of the whole model on one rank, in its parts."""

    matmul_s: float
    streaming_s: float
    host_s: float
    total_s: float


def _device_s(matmuls: tuple[Matmul, ...], streaming: tuple[Streaming, ...], hw: HardwareSpec,
              c: TrainConfig, backward: bool) -> tuple[float, float]:
    curve = hw.compute.for_precision(c.precision)
    attention = hw.compute.attention_for(c.precision)
    mbs, mp = c.micro_batch_size, c.mp_degree
    matmul = 0.0
    weights = hw.matmul_weights
    for op in matmuls:
        flop = op.flop(mbs) / mp
        work = op.backward_products * flop if backward else flop
        if op.fused_attention and attention is not None:
            matmul += work / attention.flop_per_s(backward)
        else:
            matmul += work / curve.flop_per_s(flop)
        if weights is not None and op.weighted:
            weight_bytes = op.cols * op.depth * c.bytes_per_element / mp
            matmul += weight_bytes * weights.s_per_byte(weight_bytes, backward)
    memory = 0.0
    fp32_bw, own_bw = hw.streaming_bytes_per_s, hw.streaming_for(c.precision)
    if fp32_bw is not None and own_bw is not None:
        b = c.bytes_per_element
        moved = [op.bytes(mbs, b, backward) for op in streaming]
        own = sum(m[0] for m in moved) + sum(mbs * op.rows * op.cols * b for op in matmuls if backward and op.bias)
        memory = (own / own_bw + sum(m[1] for m in moved) / fp32_bw) / mp
    if not backward and hw.dropout_s_per_element:
        memory += sum(op.count(mbs) for op in streaming if op.random) / mp * hw.dropout_s_per_element
    return matmul, memory


_PASSES: dict[tuple[object, ...], tuple[ModelSpec, HardwareSpec, PassTime]] = {}
"""Pass times by (model, hardware, the config fields a pass reads): a search asks for the same
pass under many knob settings. Entries hold their model and hardware, so their ids stay theirs."""


def pass_time(m: ModelSpec, hw: HardwareSpec, c: TrainConfig, *, backward: bool,
              layers_only: bool = False) -> PassTime:
    """A forward or backward pass of the model (of its layers alone with ``layers_only``)."""
    key = (id(m), id(hw), c.micro_batch_size, c.precision, c.autocast, c.mp_degree, backward, layers_only)
    hit = _PASSES.get(key)
    if hit is not None and hit[0] is m and hit[1] is hw:
        return hit[2]
    result = _pass_time(m, hw, c, backward=backward, layers_only=layers_only)
    if len(_PASSES) >= 4096:
        _PASSES.clear()
    _PASSES[key] = (m, hw, result)
    return result


def _pass_time(m: ModelSpec, hw: HardwareSpec, c: TrainConfig, *, backward: bool, layers_only: bool) -> PassTime:
    ops = model_operators(m, hw, c.autocast)
    lm, ls = _device_s(ops.layer_matmuls, ops.layer_streaming, hw, c, backward)
    matmul, streaming = m.num_layers * lm, m.num_layers * ls
    if not layers_only:
        om, os_ = _device_s(ops.outer_matmuls, ops.outer_streaming, hw, c, backward)
        matmul, streaming = matmul + om, streaming + os_
    framework = hw.framework
    dispatch = framework.backward_kernel_s if backward else framework.forward_kernel_s
    host = ops.kernels(m.num_layers, backward, outer=not layers_only) * dispatch
    if not backward:
        host += m.hooked_modules * framework.forward_module_s
    device = matmul + streaming
    total = hw.with_host_s(device, host)
    return PassTime(matmul_s=matmul, streaming_s=streaming, host_s=host, total_s=total)


def measured_scale(m: ModelSpec, hw: HardwareSpec, c: TrainConfig, *, backward: bool,
                   layers_only: bool = False) -> float:
    """What a time measured at the model's measurement threads (``MeasuredCompute.threads``) is
    multiplied by on ``hw``: the operators' pass time on ``hw`` over theirs on the same hardware
    laid out with the measurement's threads per rank; 1 where the threads are the same, unknown,
    or ranks do not share cores."""
    mc = m.measured_compute
    if mc is None or mc.threads is None or hw.threads_per_rank is None or mc.threads == hw.threads_per_rank:
        return 1.0
    there = _at_threads(hw, mc.threads)
    if there is None:
        return 1.0
    now = pass_time(m, hw, c, backward=backward, layers_only=layers_only).total_s
    then = pass_time(m, there, c, backward=backward, layers_only=layers_only).total_s
    return now / then if then > 0 else 1.0


_AT_THREADS: dict[tuple[int, int], tuple[HardwareSpec, HardwareSpec | None]] = {}


def _at_threads(hw: HardwareSpec, threads: int) -> HardwareSpec | None:
    """``hw.with_threads_per_rank(threads)``, kept per hardware object (the same each call)."""
    key = (id(hw), threads)
    hit = _AT_THREADS.get(key)
    if hit is not None and hit[0] is hw:
        return hit[1]
    spec = hw.with_threads_per_rank(threads)
    if len(_AT_THREADS) >= 256:
        _AT_THREADS.clear()
    _AT_THREADS[key] = (hw, spec)
    return spec


def forward_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    if m.measured_compute is not None:
        return (m.measured_compute.forward_s(c.micro_batch_size) / c.mp_degree
                * measured_scale(m, hw, c, backward=False))
    return pass_time(m, hw, c, backward=False).total_s


def micro_backward_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """The measured backward when the model has one, else the operators' backward."""
    if m.measured_compute is not None:
        return (m.measured_compute.backward_s(c.micro_batch_size) / c.mp_degree
                * measured_scale(m, hw, c, backward=True))
    return pass_time(m, hw, c, backward=True).total_s


def micro_recompute_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """What full checkpointing recomputes (the measured checkpointed minus plain backward when the
    model has it, else one forward of the layers) times the policy's :func:`recomputed_fraction`."""
    if not c.activation_checkpointing:
        return 0.0
    if m.measured_compute is not None:
        measured = m.measured_compute.recompute_s(c.micro_batch_size)
        full = ((measured if measured is not None else m.measured_compute.forward_s(c.micro_batch_size)) / c.mp_degree
                * measured_scale(m, hw, c, backward=False, layers_only=True))
    else:
        full = pass_time(m, hw, c, backward=False, layers_only=True).total_s
    return full * recomputed_fraction(m, hw, c)


def recomputed_fraction(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    """The share of full checkpointing's recomputation a policy runs: the checkpointed layers'
    share; for selective-op, a layer's forward device time less its kept products and fused
    attention kernel, over that forward (:mod:`simtune.model.checkpointing`)."""
    if c.checkpointing_policy != SELECTIVE_OP:
        return checkpointed_layers(m, c) / m.num_layers
    ops = model_operators(m, hw, c.autocast)
    matmul, streaming = _device_s(ops.layer_matmuls, ops.layer_streaming, hw, c, False)
    kept = kept_products(ops) + tuple(op for op in ops.layer_matmuls if op.fused_attention)
    kept_s = _device_s(kept, (), hw, c, False)[0]
    total = matmul + streaming
    return max(0.0, total - kept_s) / total if total > 0 else 1.0
