"""Compute time of one micro-step on one rank.

    forward_s   = flops_per_sample_forward * micro_batch_size / mp / achieved_flop_per_s(work)
    backward_s  = 2 * forward_s          (gradients w.r.t. inputs and weights: two matmuls per
                                          forward matmul; Narayanan et al. 2021, section 5.1)
    recompute_s = forward_s with activation checkpointing, else 0   (one extra forward)

The hardware's efficiency curve is indexed, as calibration measures it, by the FLOPs of one
matmul: here the model's MLP matmul at this micro-batch,

    work = 2 * (micro_batch_size * seq_len) * hidden_size * intermediate_size / mp

the largest matmul of a transformer layer, which sets how well the device is filled. Backward
runs at the same efficiency.

When the model carries times measured on this hardware (``ModelSpec.measured_compute``, from the
workload calibration), those replace the FLOPs / rate formula: forward and backward seconds at
the micro-batch size, interpolated linearly between measured sizes, divided by mp; the
recomputation is the measured checkpointed backward minus the plain one.
"""

from __future__ import annotations

from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig


def matmul_work_flop(m: ModelSpec, c: TrainConfig) -> float:
    return 2.0 * c.micro_batch_size * m.seq_len * m.hidden_size * m.intermediate_size / c.mp_degree


def forward_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    if m.measured_compute is not None:
        return m.measured_compute.forward_s(c.micro_batch_size) / c.mp_degree
    rate = hw.compute.for_precision(c.precision).flop_per_s(matmul_work_flop(m, c))
    return m.flops_per_sample_forward * c.micro_batch_size / c.mp_degree / rate


def backward_s(forward_time_s: float) -> float:
    return 2.0 * forward_time_s


def micro_recompute_s(m: ModelSpec, c: TrainConfig, forward_time_s: float) -> float:
    """The measured recomputation (checkpointed minus plain backward) when the model has it,
    else one forward."""
    if not c.activation_checkpointing:
        return 0.0
    if m.measured_compute is not None:
        measured = m.measured_compute.recompute_s(c.micro_batch_size)
        if measured is not None:
            return measured / c.mp_degree
    return recompute_s(forward_time_s, c)


def micro_backward_s(m: ModelSpec, c: TrainConfig, forward_time_s: float) -> float:
    """The measured backward when the model has one, else twice the forward."""
    if m.measured_compute is not None:
        return m.measured_compute.backward_s(c.micro_batch_size) / c.mp_degree
    return backward_s(forward_time_s)


def recompute_s(forward_time_s: float, c: TrainConfig) -> float:
    return forward_time_s if c.activation_checkpointing else 0.0
