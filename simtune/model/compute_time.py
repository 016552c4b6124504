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
"""

from __future__ import annotations

from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig


def matmul_work_flop(m: ModelSpec, c: TrainConfig) -> float:
    return 2.0 * c.micro_batch_size * m.seq_len * m.hidden_size * m.intermediate_size / c.mp_degree


def forward_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> float:
    rate = hw.compute.for_precision(c.precision).flop_per_s(matmul_work_flop(m, c))
    return m.flops_per_sample_forward * c.micro_batch_size / c.mp_degree / rate


def backward_s(forward_time_s: float) -> float:
    return 2.0 * forward_time_s


def recompute_s(forward_time_s: float, c: TrainConfig) -> float:
    return forward_time_s if c.activation_checkpointing else 0.0
