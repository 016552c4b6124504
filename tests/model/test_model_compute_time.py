import dataclasses

import pytest

from simtune.model.compute_time import (forward_s, matmul_work_flop, micro_backward_s, micro_recompute_s,
                                        model_operators, pass_time)
from simtune.model.inputs import EfficiencyCurve, ComputeCurves, FrameworkCosts, FusedAttentionRate, TrainConfig
from simtune.model.operators import FUSED_ATTENTION_BACKWARD, operators
from tests.model.conftest import gpt2_spec

FLAT = ComputeCurves(fp32=EfficiencyCurve(((1e9, 1e12),)), bf16=EfficiencyCurve(((1e9, 1e14),)))


def matmul_flops(m, samples=1):
    ops = operators(m, fused_attention=False)
    return (m.num_layers * sum(op.flop(samples) for op in ops.layer_matmuls)
            + sum(op.flop(samples) for op in ops.outer_matmuls))


def test_on_a_flat_curve_without_memory_costs_a_forward_is_its_matmul_flops_over_the_rate(gpt2, make_hardware):
    hw = make_hardware(compute=FLAT, fused_attention_dropout=False)
    config = TrainConfig(stage=0, micro_batch_size=4, precision="bf16")
    assert forward_s(gpt2, hw, config) == pytest.approx(matmul_flops(gpt2, 4) / 1e14)
    assert micro_backward_s(gpt2, hw, config) == pytest.approx(2 * matmul_flops(gpt2, 4) / 1e14)


def test_each_matmul_reads_the_curve_at_its_own_flops(gpt2, hardware):
    config = TrainConfig(stage=0, micro_batch_size=4, precision="bf16")
    t = pass_time(gpt2, hardware, config, backward=False)
    curve = hardware.compute.bf16
    ops = model_operators(gpt2, hardware)
    expected = (gpt2.num_layers * sum(op.flop(4) / curve.flop_per_s(op.flop(4)) for op in ops.layer_matmuls)
                + sum(op.flop(4) / curve.flop_per_s(op.flop(4)) for op in ops.outer_matmuls))
    assert t.matmul_s == pytest.approx(expected)
    assert matmul_work_flop(gpt2, config) == 2 * 4 * 1024 * 768 * 3072


def test_memory_bound_operators_cost_their_bytes_over_the_bandwidth(gpt2, make_hardware):
    config = TrainConfig(stage=0, micro_batch_size=4, precision="bf16")
    fast = pass_time(gpt2, make_hardware(streaming_bytes_per_s=2e12), config, backward=True)
    slow = pass_time(gpt2, make_hardware(streaming_bytes_per_s=1e12), config, backward=True)
    assert slow.streaming_s == pytest.approx(2 * fast.streaming_s) and fast.streaming_s > 0
    assert slow.matmul_s == fast.matmul_s
    assert pass_time(gpt2, make_hardware(), config, backward=True).streaming_s == 0.0


def test_an_asynchronous_device_takes_the_longer_of_host_and_device(gpt2, make_hardware):
    config = TrainConfig(stage=0, micro_batch_size=1, precision="bf16")
    costs = FrameworkCosts(forward_kernel_s=1e-3)
    ops = model_operators(gpt2, make_hardware())
    host = ops.kernels(gpt2.num_layers, backward=False) * 1e-3
    cuda = pass_time(gpt2, make_hardware(framework=costs), config, backward=False)
    cpu = pass_time(gpt2, make_hardware(framework=costs, overlap_capable=False), config, backward=False)
    assert cuda.host_s == pytest.approx(host) and cuda.total_s == pytest.approx(max(host, cuda.matmul_s))
    assert cpu.total_s == pytest.approx(cpu.matmul_s + host)


def test_precision_picks_its_curve(gpt2, hardware):
    bf16 = forward_s(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=4, precision="bf16"))
    fp32 = forward_s(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=4, precision="fp32"))
    assert fp32 > 10 * bf16


def test_larger_work_runs_at_higher_efficiency(gpt2, hardware):
    one = forward_s(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=1))
    eight = forward_s(gpt2, hardware, TrainConfig(stage=0, micro_batch_size=8))
    assert one < eight < 8 * one


def test_recomputation_is_a_forward_of_the_layers_alone(gpt2, make_hardware):
    hw = make_hardware(streaming_bytes_per_s=1e12)
    config = TrainConfig(stage=0, micro_batch_size=2, activation_checkpointing=True)
    layers = pass_time(gpt2, hw, config, backward=False, layers_only=True).total_s
    assert micro_recompute_s(gpt2, hw, config) == pytest.approx(layers)
    assert 0 < layers < forward_s(gpt2, hw, config)
    assert micro_recompute_s(gpt2, hw, TrainConfig(stage=0, micro_batch_size=2)) == 0.0


def test_dropout_random_numbers_cost_only_the_forward(gpt2, make_hardware):
    config = TrainConfig(stage=0, micro_batch_size=2, precision="fp32")
    plain, drawn = make_hardware(streaming_bytes_per_s=1e10), make_hardware(streaming_bytes_per_s=1e10,
                                                                            dropout_s_per_element=8e-9)
    ops = model_operators(gpt2, plain)
    elements = (gpt2.num_layers * sum(op.count(2) for op in ops.layer_streaming if op.random)
                + sum(op.count(2) for op in ops.outer_streaming if op.random))
    assert elements > 0
    extra = pass_time(gpt2, drawn, config, backward=False).total_s - pass_time(gpt2, plain, config, backward=False).total_s
    assert extra == pytest.approx(elements * 8e-9)
    assert pass_time(gpt2, drawn, config, backward=True) == pass_time(gpt2, plain, config, backward=True)


def test_the_models_python_is_host_time_per_module(gpt2, make_hardware):
    config = TrainConfig(stage=0, micro_batch_size=1)
    base = pass_time(gpt2, make_hardware(overlap_capable=False), config, backward=False)
    more = pass_time(gpt2, make_hardware(overlap_capable=False, framework=FrameworkCosts(forward_module_s=1e-4)),
                     config, backward=False)
    assert more.host_s - base.host_s == pytest.approx(gpt2.hooked_modules * 1e-4)


def test_measured_times_move_to_another_cpu_layout_by_the_operators_ratio(gpt2, make_hardware):
    """A model measured with 1 thread per rank on 2 ranks, predicted with one rank alone on the
    node (2 threads): its measured times are scaled by what the operators take there over what
    they take at the measurement's threads; on the measured layout, or without the threads, they
    stand."""
    import dataclasses

    from simtune.model.compute_time import measured_scale, pass_time
    from simtune.model.inputs import MeasuredCompute

    shared = make_hardware(ranks_per_node=2, threads_per_rank=1, overlap_capable=False,
                           compute=ComputeCurves(fp32=EfficiencyCurve(((1e6, 1e9), (1e12, 1e10)))),
                           streaming_bytes_per_s=1e10, framework=FrameworkCosts(forward_kernel_s=5e-6,
                                                                                backward_kernel_s=5e-6))
    alone = shared.with_ranks_per_node(1, 1)
    model = dataclasses.replace(gpt2, measured_compute=MeasuredCompute(((1, 0.3, 0.6), (4, 1.2, 2.4)), threads=1))
    c = TrainConfig(stage=0, micro_batch_size=4, precision="fp32")
    assert forward_s(model, shared, c) == pytest.approx(1.2) and micro_backward_s(model, shared, c) == pytest.approx(2.4)
    ratio = pass_time(model, alone, c, backward=False).total_s / pass_time(model, shared, c, backward=False).total_s
    assert 0.5 < ratio < 1.0  # faster with both cores, less than twice (dispatch does not scale)
    assert forward_s(model, alone, c) == pytest.approx(1.2 * ratio)
    assert measured_scale(model, alone, c, backward=True) == pytest.approx(
        pass_time(model, alone, c, backward=True).total_s / pass_time(model, shared, c, backward=True).total_s)
    unknown = dataclasses.replace(model, measured_compute=dataclasses.replace(model.measured_compute, threads=None))
    assert forward_s(unknown, alone, c) == pytest.approx(1.2)


def test_a_linear_layer_costs_its_weight_bytes_beyond_its_flops_where_measured(gpt2, make_hardware):
    from simtune.model.inputs import WeightCost

    config = TrainConfig(stage=0, micro_batch_size=2, precision="fp32")
    weights = WeightCost(((4e6, 1e-11, 3e-11), (160e6, 2e-10, 4e-10)))
    plain = make_hardware(compute=FLAT)
    costed = make_hardware(compute=FLAT, matmul_weights=weights)
    ops = model_operators(gpt2, plain)
    for backward in (False, True):
        expected = 0.0
        for op, count in [(op, gpt2.num_layers) for op in ops.layer_matmuls] + [(op, 1) for op in ops.outer_matmuls]:
            if op.name in ("attn.scores", "attn.weighted", "attn.fused", "unlisted"):
                assert not op.weighted
                continue
            size = 4.0 * op.cols * op.depth
            expected += count * size * weights.s_per_byte(size, backward)
        extra = (pass_time(gpt2, costed, config, backward=backward).matmul_s
                 - pass_time(gpt2, plain, config, backward=backward).matmul_s)
        assert extra == pytest.approx(expected) and extra > 0
    # the LM head's 154 MB weight reads near the large end; a 2.4 MB layer weight below the small one
    assert weights.s_per_byte(4.0 * 50257 * 768, False) == pytest.approx(1.9e-10, rel=0.05)
    assert weights.s_per_byte(4.0 * 768 * 768, True) == 3e-11
    # the weights' cost does not grow with the tokens: more tokens hide it
    small = pass_time(gpt2, costed, config, backward=False)
    large = pass_time(gpt2, costed, TrainConfig(stage=0, micro_batch_size=8, precision="fp32"), backward=False)
    plain_small = pass_time(gpt2, plain, config, backward=False)
    plain_large = pass_time(gpt2, plain, TrainConfig(stage=0, micro_batch_size=8, precision="fp32"), backward=False)
    assert large.matmul_s - plain_large.matmul_s == pytest.approx(small.matmul_s - plain_small.matmul_s)


def test_a_fused_attention_kernel_runs_two_and_a_half_forwards_backward_at_its_own_rate(make_hardware):
    gpt2 = gpt2_spec(attention="sdpa")
    config = TrainConfig(stage=0, micro_batch_size=4, precision="bf16")
    flat = make_hardware(compute=FLAT)  # CUDA-like: the fused kernel takes GPT-2's dropout
    rated = make_hardware(compute=dataclasses.replace(
        FLAT, attention=(("bf16", FusedAttentionRate(forward_flop_per_s=4e13, backward_flop_per_s=2e13)),)))
    kernel = next(op for op in model_operators(gpt2, flat).layer_matmuls if op.fused_attention)
    flop = gpt2.num_layers * kernel.flop(4)
    assert FUSED_ATTENTION_BACKWARD == 2.5
    forward, backward = (pass_time(gpt2, flat, config, backward=b).matmul_s for b in (False, True))
    assert backward - 2 * forward == pytest.approx(0.5 * flop / 1e14)  # the recomputed scores
    assert (pass_time(gpt2, rated, config, backward=False).matmul_s - forward
            == pytest.approx(flop / 4e13 - flop / 1e14))
    assert (pass_time(gpt2, rated, config, backward=True).matmul_s - backward
            == pytest.approx(2.5 * flop / 2e13 - 2.5 * flop / 1e14))
    fp32 = TrainConfig(stage=0, micro_batch_size=4, precision="fp32")  # no fp32 rate: the curve's
    assert pass_time(gpt2, rated, fp32, backward=True).matmul_s == pass_time(gpt2, flat, fp32, backward=True).matmul_s


def test_16bit_passes_run_at_their_own_bandwidth_and_fp32_passes_at_fp32s(gpt2, make_hardware):
    config = TrainConfig(stage=0, micro_batch_size=4, precision="bf16")
    one = make_hardware(streaming_bytes_per_s=1e12)
    narrow = make_hardware(streaming_bytes_per_s=1e12, streaming_by_precision=(("bf16", 5e11),))
    ops = model_operators(gpt2, one)

    def moved(streaming, matmuls, fp32):
        return (sum(op.bytes(4, 2, True)[fp32] for op in streaming)
                + (0 if fp32 else sum(4 * op.rows * op.cols * 2 for op in matmuls if op.bias)))

    own, wide = ((gpt2.num_layers * moved(ops.layer_streaming, ops.layer_matmuls, fp32)
                  + moved(ops.outer_streaming, ops.outer_matmuls, fp32)) for fp32 in (False, True))
    assert own > 0 and wide > 0  # the loss runs over fp32 logits
    both = (pass_time(gpt2, one, config, backward=True).streaming_s,
            pass_time(gpt2, narrow, config, backward=True).streaming_s)
    assert both[0] == pytest.approx((own + wide) / 1e12)
    assert both[1] == pytest.approx(own / 5e11 + wide / 1e12)
    fp32 = TrainConfig(stage=0, micro_batch_size=4, precision="fp32")
    assert (pass_time(gpt2, narrow, fp32, backward=True).streaming_s
            == pass_time(gpt2, one, fp32, backward=True).streaming_s)
