import pytest

from simtune.model.estimate import estimate
from simtune.model.inputs import TrainConfig


def test_metrics_follow_their_definitions(gpt2, hardware):
    config = TrainConfig(stage=2, micro_batch_size=4, gradient_accumulation_steps=2, dp_degree=8)
    e = estimate(gpt2, hardware, config)
    step = e.time.step_s
    assert e.metrics.throughput_samples_per_s == pytest.approx(4 * 2 * 8 / step)
    assert e.metrics.latency_ms == pytest.approx(1000 * step)
    assert e.metrics.flops_per_gpu == pytest.approx(3 * gpt2.flops_per_sample_forward * 4 * 2 / step)
    assert e.feasible == e.memory.feasible


def test_flops_per_gpu_stays_below_the_achieved_rate(gpt2, hardware):
    e = estimate(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=8, dp_degree=8))
    peak = hardware.compute.bf16.points[-1][1]
    assert 0 < e.metrics.flops_per_gpu < peak


def test_larger_micro_batch_raises_throughput_and_memory(gpt2, hardware):
    small = estimate(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=1, dp_degree=8))
    large = estimate(gpt2, hardware, TrainConfig(stage=2, micro_batch_size=16, dp_degree=8))
    assert large.metrics.throughput_samples_per_s > small.metrics.throughput_samples_per_s
    assert large.memory.total_bytes > small.memory.total_bytes


def test_a_model_too_large_for_the_device_is_infeasible(make_gpt2, hardware):
    huge = make_gpt2(parameter_count=20_000_000_000, param_tensor_numels=(20_000_000,) * 1000)
    assert not estimate(huge, hardware, TrainConfig(stage=0, micro_batch_size=1, dp_degree=8)).feasible
    assert estimate(huge, hardware, TrainConfig(stage=3, micro_batch_size=1, dp_degree=8,
                                                offload_optimizer=True, offload_param=True,
                                                activation_checkpointing=True)).feasible
