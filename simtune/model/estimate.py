"""The cost model's entry point: memory, time and the tuning metrics of one configuration.

    throughput_samples_per_s = global batch / step_s,  global batch = mbs * gas * dp
    latency_ms               = 1000 * step_s
    flops_per_gpu            = 3 * flops_per_sample_forward * mbs * gas / mp / step_s

FLOPS counts model FLOPs (forward + backward = 3 forwards; recomputation is not useful work),
with a multiply-add as 2 FLOPs. The metric names match DeepSpeed's autotuner (throughput,
latency, FLOPS per GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig
from simtune.model.memory import MemoryEstimate, estimate_memory
from simtune.model.shards import shards
from simtune.model.step_time import TimeEstimate, estimate_time


@dataclass(frozen=True)
class Metrics:
    throughput_samples_per_s: float
    latency_ms: float
    flops_per_gpu: float
    """Model FLOP/s per rank."""


@dataclass(frozen=True)
class Estimate:
    memory: MemoryEstimate
    time: TimeEstimate
    metrics: Metrics
    feasible: bool


def metrics(model: ModelSpec, config: TrainConfig, step_s: float) -> Metrics:
    c = config
    flops_per_step = 3.0 * model.flops_per_sample_forward * c.micro_batch_size * c.gradient_accumulation_steps / c.mp_degree
    return Metrics(throughput_samples_per_s=c.global_batch_size / step_s, latency_ms=1000.0 * step_s,
                   flops_per_gpu=flops_per_step / step_s)


def estimate(model: ModelSpec, hardware: HardwareSpec, config: TrainConfig) -> Estimate:
    sizes = shards(model, config)
    memory = estimate_memory(model, hardware, config, sizes)
    time = estimate_time(model, hardware, config, sizes)
    return Estimate(memory=memory, time=time, metrics=metrics(model, config, time.step_s),
                    feasible=memory.feasible)
