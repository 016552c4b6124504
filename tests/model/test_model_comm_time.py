import dataclasses

import pytest

from simtune.model.comm_time import (allreduce_factor, collective_s, communication, gather_scatter_factor)
from simtune.errors import ProfileError
from simtune.model.inputs import CollectiveCost, Collectives, TrainConfig
from simtune.model.shards import shards

LAT, BW = 20e-6, 200e9


def comm(model, hardware, **kwargs):
    config = TrainConfig(micro_batch_size=1, **kwargs)
    return communication(model, shards(model, config), hardware, config)


def test_nccl_tests_ring_factors():
    assert allreduce_factor(8) == pytest.approx(2 * 7 / 8)
    assert gather_scatter_factor(8) == pytest.approx(7 / 8)
    cost = CollectiveCost(latency_s=1e-5, bandwidth_bytes_per_s=1e9)
    assert collective_s(cost, 1.75, 1e9, 3) == pytest.approx(3e-5 + 1.75)
    assert collective_s(cost, 1.75, 0, 3) == 0.0


def test_single_rank_communicates_nothing(gpt2, hardware):
    for stage in range(4):
        c = comm(gpt2, hardware, stage=stage, dp_degree=1)
        assert c.reduce_per_micro_s == c.reduce_at_boundary_s == c.gather_forward_s == c.gather_after_step_s == 0


def test_stage0_allreduces_all_gradients_once(gpt2, hardware):
    c = comm(gpt2, hardware, stage=0, dp_degree=8, precision="bf16")
    expected = LAT + 2 * gpt2.parameter_count * allreduce_factor(8) / BW
    assert c.reduce_at_boundary_s == pytest.approx(expected) and c.reduce_per_micro_s == 0


def test_stage1_reduces_at_the_boundary_and_stage2_every_micro_step(gpt2, hardware):
    z1 = comm(gpt2, hardware, stage=1, dp_degree=8, reduce_bucket_size=10_000_000)
    z2 = comm(gpt2, hardware, stage=2, dp_degree=8, reduce_bucket_size=10_000_000)
    assert z1.reduce_at_boundary_s > 0 and z1.reduce_per_micro_s == 0
    assert z2.reduce_per_micro_s == pytest.approx(z1.reduce_at_boundary_s) and z2.reduce_at_boundary_s == 0
    flat = shards(gpt2, TrainConfig(stage=1, micro_batch_size=1, dp_degree=8)).flat
    assert z1.gather_after_step_s == pytest.approx(LAT + 2 * flat * gather_scatter_factor(8) / BW)


def test_smaller_buckets_pay_more_latency(gpt2, hardware):
    big = comm(gpt2, hardware, stage=2, dp_degree=8, reduce_bucket_size=500_000_000)
    small = comm(gpt2, hardware, stage=2, dp_degree=8, reduce_bucket_size=1_000_000)
    calls = gpt2.layout.bucket_count(1_000_000)
    assert calls > 50
    assert small.reduce_per_micro_s - big.reduce_per_micro_s == pytest.approx((calls - 1) * LAT)


def test_stage3_gathers_in_forward_and_only_released_parameters_in_backward(gpt2, hardware):
    untied = dataclasses.replace(gpt2, block=dataclasses.replace(gpt2.block, tied_head=False))
    kept = comm(untied, hardware, stage=3, dp_degree=8)
    released = comm(untied, hardware, stage=3, dp_degree=8, stage3_max_reuse_distance=0, stage3_prefetch_bucket_size=0)
    assert kept.gather_forward_s == pytest.approx(released.gather_forward_s)
    assert kept.gather_forward_s > 0
    assert kept.gather_backward_s == 0  # a 124M model is reused within the default distance
    assert released.gather_backward_s == pytest.approx(released.gather_forward_s)
    assert kept.reduce_per_micro_s > 0 and kept.gather_after_step_s == 0
    # GPT-2's tied table, released between its two uses in each pass, is gathered at both
    tied_kept = comm(gpt2, hardware, stage=3, dp_degree=8)
    tied = comm(gpt2, hardware, stage=3, dp_degree=8, stage3_max_reuse_distance=0, stage3_prefetch_bucket_size=0)
    assert tied_kept.gather_forward_s == pytest.approx(kept.gather_forward_s)
    table_s = tied.gather_forward_s - released.gather_forward_s
    assert table_s > 0 and tied.gather_backward_s - released.gather_backward_s == pytest.approx(table_s)


def test_groups_spanning_nodes_use_inter_node_costs(gpt2, make_hardware):
    slow = CollectiveCost(latency_s=LAT, bandwidth_bytes_per_s=BW / 10)
    hardware = make_hardware(inter_node_collectives=Collectives(slow, slow, slow), nodes=2)
    within = comm(gpt2, hardware, stage=0, dp_degree=8)
    across = comm(gpt2, hardware, stage=0, dp_degree=16)
    assert across.reduce_at_boundary_s > 9 * within.reduce_at_boundary_s


def test_a_call_beyond_the_fitted_sizes_pays_those_bytes_at_the_slower_bandwidth():
    from simtune.model.links import slower_link

    cost = CollectiveCost(latency_s=1e-4, bandwidth_bytes_per_s=2e9, beyond_bytes=16e6,
                          beyond_bandwidth_bytes_per_s=1e9)
    one_regime = CollectiveCost(latency_s=1e-4, bandwidth_bytes_per_s=2e9)
    # within the fitted sizes nothing changes, also over many calls that each stay within them
    assert collective_s(cost, 1.0, 8e6, 1) == collective_s(one_regime, 1.0, 8e6, 1)
    assert collective_s(cost, 1.0, 160e6, 10) == pytest.approx(collective_s(one_regime, 1.0, 160e6, 10))
    # one 496 MB call: 16 MB at 2 GB/s and 480 MB at 1 GB/s
    assert collective_s(cost, 1.0, 496e6, 1) == pytest.approx(1e-4 + 16e6 / 2e9 + 480e6 / 1e9)
    assert collective_s(cost, 1.0, 496e6, 2) == pytest.approx(2 * (1e-4 + 16e6 / 2e9 + 232e6 / 1e9))
    with pytest.raises(ProfileError):
        CollectiveCost(latency_s=0, bandwidth_bytes_per_s=1e9, beyond_bytes=16e6)
    # a ring through a faster link and this one runs at this one's speed, both regimes
    fast = CollectiveCost(latency_s=5e-4, bandwidth_bytes_per_s=10e9)
    assert slower_link(fast, cost) == CollectiveCost(5e-4, 2e9, 16e6, 1e9)


def test_autocast_reduces_fp32_gradients(gpt2, hardware):
    plain = TrainConfig(stage=0, micro_batch_size=1, dp_degree=8, precision="bf16")
    cast = TrainConfig(stage=0, micro_batch_size=1, dp_degree=8, precision="bf16", autocast=True)
    bf16 = communication(gpt2, shards(gpt2, plain), hardware, plain).reduce_at_boundary_s
    fp32 = communication(gpt2, shards(gpt2, cast), hardware, cast).reduce_at_boundary_s
    assert fp32 == pytest.approx(2 * bf16, rel=0.05)


def test_deepspeeds_autocast_sends_linear_layers_in_16_bit_and_the_rest_in_fp32(gpt2, hardware):
    from simtune.model.comm_time import element_bytes
    from simtune.model.operators import linear_parameters

    torch_style = TrainConfig(stage=2, micro_batch_size=1, dp_degree=8, precision="bf16", autocast=True)
    deepspeed = TrainConfig(stage=2, micro_batch_size=1, dp_degree=8, precision="bf16", autocast=True,
                            deepspeed_autocast=True)
    linear = linear_parameters(gpt2) / gpt2.parameter_count
    assert 0.5 < linear < 1
    assert element_bytes(gpt2, torch_style) == 4
    assert element_bytes(gpt2, deepspeed) == pytest.approx(2 * linear + 4 * (1 - linear))
    slower = communication(gpt2, shards(gpt2, torch_style), hardware, torch_style).reduce_per_micro_s
    assert communication(gpt2, shards(gpt2, deepspeed), hardware, deepspeed).reduce_per_micro_s < slower


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_communication_data_type_sets_the_bytes_of_the_gradient_reduction_only(gpt2, hardware, stage):
    """bf16 gradients reduced in fp32 carry twice the bytes; parameter gathers keep their dtype."""
    own = comm(gpt2, hardware, stage=stage, dp_degree=8, precision="bf16")
    fp32 = comm(gpt2, hardware, stage=stage, dp_degree=8, precision="bf16", communication_precision="fp32")
    same = comm(gpt2, hardware, stage=stage, dp_degree=8, precision="bf16", communication_precision="bf16")
    assert same == own
    reduce = own.reduce_at_boundary_s + own.reduce_per_micro_s
    calls = {0: 1, 1: gpt2.layout.bucket_count(500_000_000), 2: gpt2.layout.bucket_count(500_000_000),
             3: gpt2.layout.bucket_count(500_000_000)}[stage]
    wider = fp32.reduce_at_boundary_s + fp32.reduce_per_micro_s
    assert wider - calls * LAT == pytest.approx(2 * (reduce - calls * LAT))
    assert (fp32.gather_forward_s, fp32.gather_after_step_s) == (own.gather_forward_s, own.gather_after_step_s)


def test_deepspeeds_autocast_ignores_communication_data_type(gpt2, hardware):
    kwargs = dict(stage=2, dp_degree=8, precision="bf16", autocast=True, deepspeed_autocast=True)
    assert comm(gpt2, hardware, communication_precision="fp16", **kwargs) == comm(gpt2, hardware, **kwargs)


def test_stage3_without_reduce_scatter_allreduces_its_buckets_and_scatters_larger_gradients(gpt2, hardware):
    from simtune.model.comm_time import gradient_reduction

    bucket = 10_000_000  # gpt2's 38.6M-element embedding exceeds it; every other tensor fits
    scatter = TrainConfig(stage=3, micro_batch_size=1, dp_degree=8, reduce_bucket_size=bucket)
    allreduce = TrainConfig(stage=3, micro_batch_size=1, dp_degree=8, reduce_bucket_size=bucket, reduce_scatter=False)
    s = shards(gpt2, scatter)
    assert gradient_reduction(gpt2, s, scatter).allreduce_bytes == 0
    split = gradient_reduction(gpt2, s, allreduce)
    oversized = sum(n for n in gpt2.layout.numels if n > bucket)
    assert split.reduce_scatter_bytes == pytest.approx(2 * oversized)  # bf16, the default
    assert split.allreduce_bytes + split.reduce_scatter_bytes == pytest.approx(2 * gpt2.parameter_count)
    assert comm(gpt2, hardware, stage=3, dp_degree=8, reduce_bucket_size=bucket, reduce_scatter=False
                ).reduce_per_micro_s > comm(gpt2, hardware, stage=3, dp_degree=8, reduce_bucket_size=bucket
                                            ).reduce_per_micro_s
    # without contiguous gradients stage 3 reduce-scatters whatever reduce_scatter says
    loose = TrainConfig(stage=3, micro_batch_size=1, dp_degree=8, reduce_scatter=False, contiguous_gradients=False)
    assert gradient_reduction(gpt2, s, loose).allreduce_bytes == 0
