import dataclasses

import pytest

from simtune.errors import ConfigError, ProfileError, SimtuneError, WorkloadError
from simtune.model.inputs import EfficiencyCurve, FusedAttentionRate, TrainConfig


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(stage=4, micro_batch_size=1), ConfigError, "stage"),
    (dict(stage=1, micro_batch_size=0), ConfigError, "micro_batch_size"),
    (dict(stage=1, micro_batch_size=1, precision="int8"), ConfigError, "precision"),
    (dict(stage=2, micro_batch_size=1, offload_param=True), ConfigError, "stage 3"),
    (dict(stage=0, micro_batch_size=1, offload_optimizer=True), ConfigError, "stage 1"),
])
def test_bad_train_config_raises_one_sentence(kwargs, error, words):
    with pytest.raises(error) as caught:
        TrainConfig(**kwargs)
    message = str(caught.value)
    assert words in message and message.endswith(".") and "\n" not in message
    assert isinstance(caught.value, SimtuneError)


def test_bad_model_and_hardware_name_the_field(make_gpt2, make_hardware):
    with pytest.raises(WorkloadError, match="hidden_size"):
        make_gpt2(hidden_size=0)
    with pytest.raises(ProfileError, match="usable_memory_bytes"):
        make_hardware(usable_memory_bytes=100 * 2**30)
    with pytest.raises(ProfileError, match="sorted"):
        EfficiencyCurve(((2e9, 1e12), (1e9, 2e12)))


def test_overlap_follows_deepspeed_default():
    assert TrainConfig(stage=3, micro_batch_size=1).overlap
    assert not TrainConfig(stage=2, micro_batch_size=1).overlap
    assert TrainConfig(stage=2, micro_batch_size=1, overlap_comm=True).overlap


def test_curve_is_log_linear_between_points_and_flat_outside():
    curve = EfficiencyCurve(((1e9, 10.0), (1e11, 30.0)))
    assert curve.flop_per_s(1e10) == pytest.approx(20.0)
    assert curve.flop_per_s(1e6) == 10.0
    assert curve.flop_per_s(1e14) == 30.0


def test_missing_precision_curve_is_a_profile_error(hardware):
    with pytest.raises(ProfileError, match="fp16"):
        hardware.compute.for_precision("fp16")


def test_a_cpu_rank_alone_on_the_node_gets_all_its_cores_and_memory(make_hardware):
    from simtune.model.inputs import FrameworkCosts

    per_param = ((0.0, 2e-9, 4e-9),) * 4
    base = make_hardware()
    shared = make_hardware(ranks_per_node=2, threads_per_rank=1, streaming_bytes_per_s=1e10,
                           streaming_by_precision=(("bf16", 4e9),), dropout_s_per_element=8e-9,
                           plain_bytes_per_s=1.5e10,
                           compute=dataclasses.replace(base.compute, attention=(
                               ("fp32", FusedAttentionRate(forward_flop_per_s=3e9, backward_flop_per_s=1e9)),)),
                           framework=FrameworkCosts(forward_kernel_s=5e-6, param_pass_s=per_param))
    alone = shared.with_ranks_per_node(1, 1)
    assert alone.threads_per_rank == 2 and alone.ranks_per_node == 1
    assert alone.compute.fp32.flop_per_s(1e9) == 2 * shared.compute.fp32.flop_per_s(1e9)
    assert alone.compute.attention_for("fp32") == FusedAttentionRate(6e9, 2e9)
    assert alone.streaming_bytes_per_s == 2e10 and alone.plain_bandwidth() == 3e10
    assert alone.dropout_s_per_element == 8e-9  # torch's CPU generator draws in order
    assert alone.streaming_for("bf16") == 8e9 and alone.streaming_for("fp16") == 2e10
    assert alone.framework.forward_kernel_s == shared.framework.forward_kernel_s  # dispatch does not scale
    assert alone.framework.param_pass_s == ((0.0, 1e-9, 2e-9),) * 4  # work over flat partitions does
    assert alone.with_ranks_per_node(2, 1).framework == shared.framework
    assert alone.device_memory_bytes == 2 * shared.device_memory_bytes
    assert alone.device_memory_bytes - alone.usable_memory_bytes == shared.device_memory_bytes - shared.usable_memory_bytes
    accelerator = make_hardware(ranks_per_node=8)
    assert accelerator.with_ranks_per_node(4, 2).compute == accelerator.compute


def test_a_layout_is_made_from_the_measured_one_and_threads_name_a_layout(make_hardware):
    """Laying out twice is laying out once from the layout the profile was measured in, and the
    hardware at a number of threads per rank is the layout that gives each rank that many."""
    from simtune.model.inputs import FrameworkCosts

    shared = make_hardware(ranks_per_node=2, threads_per_rank=1, streaming_bytes_per_s=1e10,
                           dropout_s_per_element=8e-9, framework=FrameworkCosts(forward_kernel_s=5e-6))
    alone = shared.with_ranks_per_node(1, 1)
    back = alone.with_ranks_per_node(2, 1)
    assert back.compute == shared.compute and back.threads_per_rank == 1
    assert back.device_memory_bytes == shared.device_memory_bytes
    assert alone.with_ranks_per_node(1, 1).compute == alone.compute
    assert alone.with_threads_per_rank(1).compute == shared.compute
    assert shared.with_threads_per_rank(2).compute == alone.compute
    assert shared.with_threads_per_rank(3) is None  # no layout of 2 cores gives 3 threads
    assert make_hardware(ranks_per_node=8).with_threads_per_rank(1) is None  # ranks own their devices


def test_a_cpu_ranks_matmul_weight_cost_scales_with_its_threads(make_hardware):
    from simtune.model.inputs import WeightCost

    weights = WeightCost(((4e6, 1e-11, 3e-11), (160e6, 2e-10, 4e-10)))
    two = make_hardware(ranks_per_node=2, threads_per_rank=1, matmul_weights=weights)
    one = two.with_ranks_per_node(1, 1)  # one rank, both cores
    assert one.matmul_weights is not None
    assert one.matmul_weights.s_per_byte(160e6, True) == pytest.approx(2e-10)
    assert one.with_ranks_per_node(2, 1).matmul_weights == weights
    with pytest.raises(ProfileError):
        WeightCost(((160e6, 1e-11, 3e-11), (4e6, 2e-10, 4e-10)))
