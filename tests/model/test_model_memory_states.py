import dataclasses

import pytest

from simtune.errors import ConfigError
from simtune.model.inputs import ModelSpec, TrainConfig
from simtune.model.memory_states import (gradient_bytes, host_bytes, master_weight_bytes, optimizer_state_bytes,
                                         parameter_bytes)
from simtune.model.shards import shards

P = 8_000_000


def gpt2_spec(parameter_count, param_tensor_numels) -> ModelSpec:
    return ModelSpec(parameter_count=parameter_count, num_layers=12, hidden_size=768, num_heads=12,
                     intermediate_size=3072, vocab_size=50257, seq_len=1024, flops_per_sample_forward=1e12,
                     largest_layer_params=max(param_tensor_numels), param_tensor_numels=param_tensor_numels)


def even_model() -> ModelSpec:
    """P divisible by 8 in 8 equal tensors: no padding and no straddling for dp in {1, 2, 4, 8}."""
    return gpt2_spec(parameter_count=P, param_tensor_numels=(P // 8,) * 8)


def states(config: TrainConfig) -> dict:
    s = shards(even_model(), config)
    return {"params": parameter_bytes(s, config), "grads": gradient_bytes(s, config),
            "master": master_weight_bytes(s, config), "optim": optimizer_state_bytes(s, config),
            "host": host_bytes(s, config)}


def total(config: TrainConfig) -> int:
    d = states(config)
    return d["params"] + d["grads"] + d["master"] + d["optim"]


def test_stage0_is_16_bytes_per_parameter_in_both_precisions():
    assert total(TrainConfig(stage=0, micro_batch_size=1, precision="fp32")) == 16 * P  # 4 + 4 + 8
    assert total(TrainConfig(stage=0, micro_batch_size=1, precision="bf16")) == 16 * P  # 2 + 2 + 4 + 8


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_master_and_moments_are_12_bytes_sharded(stage):
    d = states(TrainConfig(stage=stage, micro_batch_size=1, dp_degree=4, precision="bf16"))
    assert d["master"] + d["optim"] == 12 * P // 4


def test_stage2_shards_gradients_and_stage3_parameters():
    s1 = states(TrainConfig(stage=1, micro_batch_size=1, dp_degree=4, precision="bf16"))
    s2 = states(TrainConfig(stage=2, micro_batch_size=1, dp_degree=4, precision="bf16"))
    s3 = states(TrainConfig(stage=3, micro_batch_size=1, dp_degree=4, precision="bf16",
                            stage3_param_persistence_threshold=0))
    assert s1["grads"] == 2 * P and s1["params"] == 2 * P
    assert s2["grads"] == 2 * P // 4 and s2["params"] == 2 * P
    assert s3["grads"] == 2 * P // 4 and s3["params"] == 2 * P // 4


def test_fp32_zero_keeps_a_separate_master_copy():
    d = states(TrainConfig(stage=1, micro_batch_size=1, dp_degree=2, precision="fp32"))
    assert d["params"] == 4 * P and d["master"] == 4 * P // 2


def test_stage2_accumulation_holds_two_gradient_partitions():
    one = states(TrainConfig(stage=2, micro_batch_size=1, dp_degree=4))
    two = states(TrainConfig(stage=2, micro_batch_size=1, dp_degree=4, gradient_accumulation_steps=2))
    assert two["grads"] == 2 * one["grads"]


def test_stage3_persistent_tensors_stay_whole():
    model = gpt2_spec(parameter_count=P, param_tensor_numels=(100,) * 10 + (P // 8,) * 8)
    config = TrainConfig(stage=3, micro_batch_size=1, dp_degree=4, precision="bf16",
                         stage3_param_persistence_threshold=100)
    s = shards(model, config)
    assert s.persistent == 1000
    assert parameter_bytes(s, config) == 2 * (s.partition + 1000)


def test_straddling_tensor_is_kept_whole_by_stage2():
    model = gpt2_spec(parameter_count=30, param_tensor_numels=(10, 10, 10))
    s = shards(model, TrainConfig(stage=2, micro_batch_size=1, dp_degree=2))
    assert s.flat_partition == 16 and s.grads_in_partition == 20  # the middle tensor crosses element 16


def test_offload_moves_master_and_moments_to_the_host():
    device = states(TrainConfig(stage=2, micro_batch_size=1, dp_degree=4))
    offloaded = states(TrainConfig(stage=2, micro_batch_size=1, dp_degree=4, offload_optimizer=True))
    assert offloaded["master"] == offloaded["optim"] == offloaded["grads"] == 0
    assert offloaded["host"] >= device["master"] + device["optim"]
    assert device["host"] == 0
    z3 = states(TrainConfig(stage=3, micro_batch_size=1, dp_degree=4, offload_param=True, offload_optimizer=True,
                            stage3_param_persistence_threshold=0))
    assert z3["params"] == 0 and z3["host"] == (16 + 2 + 2) * P // 4


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_model_states_shrink_with_each_stage(precision):
    totals = [total(TrainConfig(stage=stage, micro_batch_size=1, dp_degree=8, precision=precision,
                                stage3_param_persistence_threshold=0)) for stage in range(4)]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4


def test_model_parallel_divides_the_states():
    one = total(TrainConfig(stage=2, micro_batch_size=1, dp_degree=2))
    two = total(TrainConfig(stage=2, micro_batch_size=1, dp_degree=2, mp_degree=2))
    assert two == pytest.approx(one / 2, rel=1e-6)


def test_autocast_keeps_fp32_parameters_and_gradients_as_the_master(gpt2):
    c = TrainConfig(stage=0, micro_batch_size=1, precision="bf16", autocast=True)
    s = shards(gpt2, c)
    assert parameter_bytes(s, c) == gradient_bytes(s, c) == 4 * gpt2.parameter_count
    assert master_weight_bytes(s, c) == 0
    total = parameter_bytes(s, c) + gradient_bytes(s, c) + master_weight_bytes(s, c) + optimizer_state_bytes(s, c)
    assert total == 16 * gpt2.parameter_count


def test_autocast_needs_a_16_bit_precision():
    with pytest.raises(ConfigError, match="Autocast needs a 16-bit precision"):
        TrainConfig(stage=0, micro_batch_size=1, precision="fp32", autocast=True)


@pytest.mark.parametrize("algorithm,count", [("adamw", 2), ("adagrad", 1), ("sgd_momentum", 1), ("lion", 1),
                                             ("sgd", 0)])
def test_each_algorithm_keeps_its_fp32_states_per_element_it_steps(algorithm, count):
    from simtune.model.memory_states import stale_state_bytes
    from simtune.optimizers import OptimizerChoice

    for stage, elements in ((0, P), (1, P // 4), (3, P // 4)):
        config = TrainConfig(stage=stage, micro_batch_size=1, dp_degree=4, precision="fp32",
                             optimizer=OptimizerChoice(algorithm))
        stale = stale_state_bytes(shards(even_model(), config), config)  # Adagrad's at stage 1 (next test)
        assert states(config)["optim"] == 4 * count * elements + stale
    offloaded = TrainConfig(stage=2, micro_batch_size=1, dp_degree=4, precision="bf16", offload_optimizer=True,
                            optimizer=OptimizerChoice(algorithm))
    adam = dataclasses.replace(offloaded, optimizer=OptimizerChoice())
    assert states(adam)["host"] - states(offloaded)["host"] == 4 * (2 - count) * P // 4


def test_adagrad_keeps_the_state_it_built_for_the_models_own_parameters_where_a_wrapper_steps_others():
    """torch's Adagrad builds its sum when constructed; DeepSpeed's ZeRO-1/2 build another over the
    fp32 slice and stage 0's 16-bit wrapper steps fp32 copies, and the first stays (b x P). Not at
    stage 3 (built partitioned), not in fp32 at stage 0, not offloaded."""
    from simtune.model.memory_states import stale_state_bytes
    from simtune.optimizers import OptimizerChoice

    adagrad = OptimizerChoice("adagrad")
    cases = {(0, "bf16", False): 2 * P, (0, "fp32", False): 0, (1, "bf16", False): 2 * P, (2, "fp32", False): 4 * P,
             (3, "bf16", False): 0, (2, "bf16", True): 0}
    for (stage, precision, offload), stale in cases.items():
        config = TrainConfig(stage=stage, micro_batch_size=1, dp_degree=4, precision=precision,
                             offload_optimizer=offload, optimizer=adagrad)
        s = shards(even_model(), config)
        assert stale_state_bytes(s, config) == stale
        assert stale_state_bytes(s, dataclasses.replace(config, optimizer=OptimizerChoice("sgd_momentum"))) == 0
