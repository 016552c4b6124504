from simtune.model.inputs import TrainConfig
from simtune.model.memory_buffers import (STAGE0_ALLREDUCE_ELEMENTS, comm_scratch_bytes, gathered_parameter_bytes,
                                          gradient_bucket_bytes, kept_gathered_elements, optimizer_temporary_bytes,
                                          step_transient_bytes)
from simtune.model.shards import shards

RBS = 50_000_000


def test_buckets_are_allocated_at_full_reduce_bucket_size(gpt2):
    z0 = TrainConfig(stage=0, micro_batch_size=1, dp_degree=8)
    z2 = TrainConfig(stage=2, micro_batch_size=1, dp_degree=8, reduce_bucket_size=RBS)
    z2_overlap = TrainConfig(stage=2, micro_batch_size=1, dp_degree=8, reduce_bucket_size=RBS, overlap_comm=True)
    z3 = TrainConfig(stage=3, micro_batch_size=1, dp_degree=8, reduce_bucket_size=RBS)
    assert gradient_bucket_bytes(shards(gpt2, z0), z0) == 0
    assert gradient_bucket_bytes(shards(gpt2, z2), z2) == 2 * RBS
    assert gradient_bucket_bytes(shards(gpt2, z2_overlap), z2_overlap) == 2 * 2 * RBS  # double buffer
    assert gradient_bucket_bytes(shards(gpt2, z3), z3) == 2 * RBS  # stage 3 has one, even with overlap


def test_stage3_small_model_keeps_all_gathered_parameters(gpt2):
    """With the default reuse distance (1e9) a 124M model's parameters are all reused in time."""
    config = TrainConfig(stage=3, micro_batch_size=1, dp_degree=8)
    s = shards(gpt2, config)
    nonpersistent = s.params - s.persistent
    assert kept_gathered_elements(gpt2, s, config) == nonpersistent
    assert gathered_parameter_bytes(gpt2, s, config) == 2 * nonpersistent


def test_stage3_without_reuse_or_prefetch_holds_one_module(gpt2):
    config = TrainConfig(stage=3, micro_batch_size=1, dp_degree=8, stage3_max_reuse_distance=0,
                         stage3_prefetch_bucket_size=0)
    s = shards(gpt2, config)
    assert kept_gathered_elements(gpt2, s, config) == 0
    assert gathered_parameter_bytes(gpt2, s, config) == 2 * gpt2.largest_layer_params


def test_stage3_max_live_parameters_bounds_the_prefetch_kept_set(gpt2):
    config = TrainConfig(stage=3, micro_batch_size=1, dp_degree=8, stage3_max_reuse_distance=0,
                         stage3_max_live_parameters=10_000_000)
    assert kept_gathered_elements(gpt2, shards(gpt2, config), config) == 10_000_000


def test_no_gathered_parameters_below_stage3(gpt2):
    config = TrainConfig(stage=2, micro_batch_size=1, dp_degree=8)
    assert gathered_parameter_bytes(gpt2, shards(gpt2, config), config) == 0


def test_scratch_is_one_reduction_piece(gpt2):
    z0 = TrainConfig(stage=0, micro_batch_size=1, dp_degree=8)
    z1 = TrainConfig(stage=1, micro_batch_size=1, dp_degree=8, reduce_bucket_size=RBS)
    single = TrainConfig(stage=1, micro_batch_size=1, dp_degree=1)
    assert comm_scratch_bytes(shards(gpt2, z0), z0) == 2 * min(STAGE0_ALLREDUCE_ELEMENTS, gpt2.parameter_count)
    assert comm_scratch_bytes(shards(gpt2, z1), z1) == 2 * RBS
    assert comm_scratch_bytes(shards(gpt2, single), single) == 0


def test_stages_0_and_3_flatten_their_gradients_even_at_one_rank(gpt2):
    # engine.py reduces at any world size; stage 3's reduce_scatter_coalesced too
    z0 = TrainConfig(stage=0, micro_batch_size=1, dp_degree=1)
    z3 = TrainConfig(stage=3, micro_batch_size=1, dp_degree=1, reduce_bucket_size=RBS)
    assert comm_scratch_bytes(shards(gpt2, z0), z0) == 2 * gpt2.parameter_count
    assert comm_scratch_bytes(shards(gpt2, z3), z3) == 2 * RBS


def test_a_staging_reduce_scatter_adds_its_input_and_output(gpt2):
    # gloo: a copy of the input and a 1/n output beside the concatenated bucket
    z3 = TrainConfig(stage=3, micro_batch_size=1, dp_degree=2, reduce_bucket_size=RBS)
    z2 = TrainConfig(stage=2, micro_batch_size=1, dp_degree=2, reduce_bucket_size=RBS)
    assert comm_scratch_bytes(shards(gpt2, z3), z3, reduce_scatter_staging=True) == 2 * RBS * (1 + 1.5)
    assert comm_scratch_bytes(shards(gpt2, z2), z2, reduce_scatter_staging=True) == 2 * RBS


def test_step_builds_fp32_gradients_for_the_updated_elements(gpt2):
    p = gpt2.parameter_count
    fp32 = TrainConfig(stage=0, micro_batch_size=1, precision="fp32")
    bf16 = TrainConfig(stage=0, micro_batch_size=1, precision="bf16")
    z2 = TrainConfig(stage=2, micro_batch_size=1, dp_degree=8)
    offload = TrainConfig(stage=2, micro_batch_size=1, dp_degree=8, offload_optimizer=True)
    assert step_transient_bytes(shards(gpt2, fp32), fp32) == 0  # Adam updates fp32 parameters in place
    assert step_transient_bytes(shards(gpt2, bf16), bf16) == 4 * p
    assert step_transient_bytes(shards(gpt2, z2), z2) == 4 * shards(gpt2, z2).flat_partition
    assert step_transient_bytes(shards(gpt2, offload), offload) == 0


def test_optimizer_temporaries_follow_the_implementation(gpt2):
    s0 = shards(gpt2, fp32 := TrainConfig(stage=0, micro_batch_size=1, precision="fp32"))
    z3 = TrainConfig(stage=3, micro_batch_size=1, dp_degree=8)
    offload = TrainConfig(stage=2, micro_batch_size=1, dp_degree=8, offload_optimizer=True)
    # for-loop AdamW: sqrt and division of the tensor it updates, one tensor at a time
    assert optimizer_temporary_bytes(s0, fp32, "torch_adamw_for_loop") == 2 * 4 * s0.largest_tensor
    assert optimizer_temporary_bytes(shards(gpt2, z3), z3, "torch_adamw_for_loop") == 8 * shards(gpt2, z3).partition
    # stage 3 steps one optimizer sub-group at a time (stage3.py _optimizer_step): its temporaries too
    groups = TrainConfig(stage=3, micro_batch_size=1, dp_degree=8, sub_group_size=1_000_000)
    s3 = shards(gpt2, groups)
    assert s3.step_group < s3.partition
    assert optimizer_temporary_bytes(s3, groups, "torch_adamw_foreach") == 4 * s3.step_group
    assert optimizer_temporary_bytes(s3, groups, "torch_adamw_for_loop") == 8 * s3.step_group
    # foreach AdamW: one copy of every element; fused kernels and unknown names: none
    assert optimizer_temporary_bytes(s0, fp32, "torch_adamw_foreach") == 4 * s0.params
    assert optimizer_temporary_bytes(s0, fp32, "torch_adamw_fused") == 0
    assert optimizer_temporary_bytes(s0, fp32, None) == 0
    assert optimizer_temporary_bytes(shards(gpt2, offload), offload, "torch_adamw_for_loop") == 0


def test_stage3_gathers_what_deepspeed_gathered_per_step_with_and_without_checkpointing():
    """gpt2-tiny at stage 3 on 2 ranks: DeepSpeed 0.19.8 gathered 544,256 elements per step with its
    defaults and 937,472 with every parameter released, checkpointing on or off
    (benchmarks/results/checkpoint_fetches.txt): the non-persistent ones in forward, the released
    ones in backward, the tied table at both of its uses in each pass once released, and the
    persistent ones after the step."""
    from simtune.model.adapters import model_spec
    from simtune.model.memory_buffers import fetched_elements, tied_table_regathered
    from simtune.workloads import load_workload

    m = model_spec(load_workload("gpt2-tiny", seq_len=64))
    release_all = {"stage3_max_reuse_distance": 0, "stage3_max_live_parameters": 0, "stage3_prefetch_bucket_size": 0}
    for zero, gathered, tied in (({}, 544_256, 0), (release_all, 937_472, 1024 * 128)):
        for checkpointing in (False, True):
            c = TrainConfig(stage=3, micro_batch_size=2, dp_degree=2, precision="fp32",
                            activation_checkpointing=checkpointing, **zero)
            s = shards(m, c)
            assert fetched_elements(m, s, c) + s.persistent == gathered
            assert tied_table_regathered(m, s, c) == tied
