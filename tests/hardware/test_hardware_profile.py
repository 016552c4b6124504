"""The profile dataclasses' own arithmetic: ring factors, interpolation, time formulas."""

import math

import pytest

from simtune.hardware import (
    CollectiveFit,
    CollectivesProfile,
    ComputeCurve,
    OptimizerFit,
    RatePoint,
    SizePoint,
    Stats,
    bus_factor,
    interpolate_log,
    load_profile,
)


def test_bus_factors_are_the_nccl_tests_ones():
    assert bus_factor("allreduce", 8) == pytest.approx(2 * 7 / 8)
    assert bus_factor("allgather", 8) == pytest.approx(7 / 8)
    assert bus_factor("reduce_scatter", 2) == pytest.approx(0.5)
    assert bus_factor("broadcast", 16) == 1.0
    assert bus_factor("allreduce", 1) == 0.0
    with pytest.raises(ValueError):
        bus_factor("alltoall", 4)


def test_interpolation_is_linear_in_log_size_and_clamped():
    points = ((1e6, 10.0), (1e8, 30.0))
    assert interpolate_log(points, 1e7) == pytest.approx(20.0)  # halfway in log10
    assert interpolate_log(points, 1e3) == 10.0
    assert interpolate_log(points, 1e12) == 30.0
    curve = ComputeCurve("fp32", (RatePoint(1e6, 1e9), RatePoint(1e9, 4e9)))
    assert curve.flop_per_s(math.sqrt(1e6 * 1e9)) == pytest.approx(2.5e9)


def test_collective_time_uses_bus_bandwidth_and_ranks():
    fit = CollectiveFit("allreduce", 2, "fp32", latency_s=1e-4, bandwidth_bytes_per_s=1e9, r2=1.0, points=())
    # 2 ranks: factor 1, 1 GB -> 1 s + latency
    assert fit.time_s(1e9) == pytest.approx(1.0001)
    # 8 ranks: factor 1.75
    assert fit.time_s(1e9, ranks=8) == pytest.approx(1.75 + 1e-4)
    assert fit.time_s(1e9, ranks=1) == 0.0
    table = CollectivesProfile(True, "", "gloo", {"allreduce": fit}, {})
    assert table.time_s("allreduce", 1e9, ranks=2) == pytest.approx(1.0001)
    assert table.fit_for("allreduce", nodes=4) is fit  # no inter-node fits: intra-node ones
    one_per_node = CollectivesProfile(True, "", "gloo", {}, {"allreduce": fit})
    assert one_per_node.fit_for("allreduce", nodes=1) is fit  # no intra-node fits: inter-node ones


def test_optimizer_step_is_linear_in_params():
    fit = OptimizerFit("torch_adamw_fused", "cpu", 1e-3, 2e-9, 0.99, ())
    assert fit.step_s(1e6) == pytest.approx(1e-3 + 2e-3)


def test_the_zero_state_cost_is_the_zero_moment_step_beyond_the_ordinary_one_of_its_size():
    def point(size, seconds):
        return SizePoint(size, Stats(seconds, seconds * 1.1, seconds * 1.2, 5))

    points = (point(2**20, 3e-3), point(2**22, 10e-3))
    fit = OptimizerFit("torch_adamw_for_loop", "cpu", 1e-4, 2.4e-9, 0.99, points, point(2**22, 26e-3))
    assert fit.zero_state_s_per_param == pytest.approx(16e-3 / 2**22)
    assert OptimizerFit("torch_adamw_fused", "cpu", 1e-4, 2.4e-9, 0.99, points).zero_state_s_per_param == 0
    faster = OptimizerFit("torch_adamw_fused", "cpu", 1e-4, 2.4e-9, 0.99, points, point(2**22, 9e-3))
    assert faster.zero_state_s_per_param == 0  # noise: never below 0
    elsewhere = OptimizerFit("torch_adamw_fused", "cpu", 1e-4, 2.4e-9, 0.99, points, point(2**21, 9e-3))
    assert elsewhere.zero_state_s_per_param == 0  # no ordinary point of its size to compare with


def test_spec_profile_queries():
    profile = load_profile("dgx-h100-80gb")
    assert profile.kind == "spec"
    assert profile.device.count == 8
    assert profile.efficiency("bf16", 1e11) == pytest.approx(0.78)  # large GEMMs (XLA's H100 table, MAMF)
    assert profile.efficiency("bf16", 1e9) < 0.2 < profile.efficiency("bf16", 1e10)  # small ones are latency-bound
    assert profile.framework is not None and profile.framework.zero3_module_s > 0
    intra = profile.collectives.fit_for("allreduce", nodes=1)
    inter = profile.collectives.fit_for("allreduce", nodes=2)
    assert intra.bandwidth_bytes_per_s == pytest.approx(0.8 * 450e9)
    assert inter.bandwidth_bytes_per_s == pytest.approx(0.8 * 8 * 400e9 / 8)  # 8 ConnectX-7 at 400 Gb/s


def test_spec_profiles_carry_flash_attention_and_16bit_streaming_where_published_or_measured():
    from simtune.model.adapters import streaming_bandwidth

    h100, a100, v100 = (load_profile(name) for name in ("dgx-h100-80gb", "dgx-a100-80gb", "dgx2-v100-32gb"))
    rate = h100.compute.attention["bf16"]
    assert rate.forward_flop_per_s == pytest.approx(0.30 * 989.4e12)  # FlashAttention-2, FA3 paper Fig. 5
    assert rate.forward_flop_per_s < 0.5 * h100.efficiency("bf16", 1e11) * 989.4e12
    assert a100.compute.attention["bf16"].backward_flop_per_s < a100.compute.attention["bf16"].forward_flop_per_s
    assert v100.compute.attention == {}  # no FlashAttention-2 on Volta
    assert streaming_bandwidth(h100) == pytest.approx(0.8 * 3.35e12)
    assert streaming_bandwidth(h100, "bf16") == pytest.approx(0.65 * 3.35e12)  # measured on an H200
    assert streaming_bandwidth(a100, "bf16") == pytest.approx(streaming_bandwidth(a100))



def test_spec_profiles_hold_the_compute_a_running_collective_takes():
    from simtune.model.adapters import hardware_spec

    h100, v100 = load_profile("dgx-h100-80gb"), load_profile("dgx2-v100-32gb")
    assert h100.collectives.compute_share == pytest.approx(24 / 132)  # NCCL's blocks over the SMs
    assert v100.collectives.compute_share == pytest.approx(24 / 80)
    assert hardware_spec(h100).collective_compute_share == pytest.approx(24 / 132)
