import pytest

from simtune.model.compute_time import backward_s, forward_s, matmul_work_flop, recompute_s
from simtune.model.inputs import TrainConfig


def test_forward_is_flops_over_the_rate_at_the_mlp_matmul_size(gpt2, hardware):
    config = TrainConfig(stage=0, micro_batch_size=4, precision="bf16")
    work = 2 * 4 * 1024 * 768 * 3072
    assert matmul_work_flop(gpt2, config) == work
    expected = gpt2.flops_per_sample_forward * 4 / hardware.compute.bf16.flop_per_s(work)
    assert forward_s(gpt2, hardware, config) == pytest.approx(expected)


def test_precision_picks_its_curve(gpt2, hardware):
    bf16 = forward_s(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=4, precision="bf16"))
    fp32 = forward_s(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=4, precision="fp32"))
    assert fp32 > 10 * bf16


def test_larger_work_runs_at_higher_efficiency(gpt2, hardware):
    one = forward_s(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=1))
    eight = forward_s(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=8))
    assert one < eight < 8 * one


def test_backward_is_two_forwards_and_recompute_one():
    assert backward_s(0.1) == pytest.approx(0.2)
    assert recompute_s(0.1, TrainConfig(stage=0, micro_batch_size=1, activation_checkpointing=True)) == 0.1
    assert recompute_s(0.1, TrainConfig(stage=0, micro_batch_size=1)) == 0.0
