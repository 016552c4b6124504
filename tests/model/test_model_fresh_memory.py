import dataclasses

import pytest

from simtune.model.estimate import estimate
from simtune.model.fresh_memory import (FRESH_MAPPING_BYTES, backward_fresh_bytes, first_touch_s, forward_fresh_bytes,
                                        loss_fresh_bytes, step_fresh_bytes)
from simtune.model.inputs import MeasuredCompute, TrainConfig
from simtune.model.shards import shards

RATE = 0.4e-9


def test_no_rate_costs_nothing(gpt2, hardware):
    config = TrainConfig(stage=0, micro_batch_size=1, dp_degree=2, precision="fp32")
    assert first_touch_s(gpt2, shards(gpt2, config), config, hardware) == (0.0, 0.0, 0.0)


def test_stage0_maps_its_large_gradients_its_flat_copy_and_the_optimizers_temporaries_afresh(gpt2, make_hardware):
    hw = make_hardware(first_touch_s_per_byte=RATE, optimizer_impl="torch_adamw_for_loop")
    config = TrainConfig(stage=0, micro_batch_size=1, dp_degree=2, precision="fp32")
    s = shards(gpt2, config)
    embedding = 50257 * 768  # the only tensor of 32 MiB or more in fp32
    assert 4 * embedding >= FRESH_MAPPING_BYTES
    # the tied table's gradient three times (the head's, the embedding's, their sum), the flat copy
    assert backward_fresh_bytes(gpt2, s, config, hw) == 3 * 4 * embedding + 4 * gpt2.parameter_count
    assert step_fresh_bytes(gpt2, s, config, hw) == 2 * 4 * embedding  # sqrt and division of that tensor
    assert forward_fresh_bytes(gpt2, s, config) == 0
    _, backward, step = first_touch_s(gpt2, s, config, hw)
    assert backward == pytest.approx(RATE * (backward_fresh_bytes(gpt2, s, config, hw) + loss_fresh_bytes(gpt2, config)[1]))
    assert step == pytest.approx(RATE * 8 * embedding)


def test_a_measured_backward_already_paid_for_its_gradients(gpt2, make_hardware):
    hw = make_hardware(first_touch_s_per_byte=RATE)
    config = TrainConfig(stage=0, micro_batch_size=1, dp_degree=2, precision="fp32")
    measured = dataclasses.replace(gpt2, measured_compute=MeasuredCompute(((1, 0.1, 0.2),)))
    s = shards(gpt2, config)
    assert (backward_fresh_bytes(gpt2, s, config, hw) - backward_fresh_bytes(measured, s, config, hw)
            == 3 * 4 * 50257 * 768)


def test_every_micro_step_makes_its_large_gradients_anew(gpt2, make_hardware):
    """Stages 0/1 add each micro-step's gradient into ``.grad`` and free it: gas allocations per
    step, as at stages 2/3."""
    hw = make_hardware(first_touch_s_per_byte=RATE)
    measured = dataclasses.replace(gpt2, measured_compute=MeasuredCompute(((1, 0.1, 0.2),)))
    for stage in (0, 1, 2):
        one = TrainConfig(stage=stage, micro_batch_size=1, dp_degree=2, precision="fp32")
        four = dataclasses.replace(one, gradient_accumulation_steps=4)
        grads = [backward_fresh_bytes(gpt2, shards(gpt2, c), c, hw) - backward_fresh_bytes(measured, shards(gpt2, c), c, hw)
                 for c in (one, four)]
        assert grads == [3 * 4 * 50257 * 768, 4 * 3 * 4 * 50257 * 768]


def test_an_untied_head_makes_its_gradient_once(gpt2, make_hardware):
    hw = make_hardware(first_touch_s_per_byte=RATE)
    config = TrainConfig(stage=0, micro_batch_size=1, dp_degree=2, precision="fp32")
    untied = dataclasses.replace(gpt2, block=dataclasses.replace(gpt2.block, tied_head=False))
    s = shards(gpt2, config)
    assert backward_fresh_bytes(gpt2, s, config, hw) - backward_fresh_bytes(untied, s, config, hw) == 2 * 4 * 50257 * 768


def test_allocations_below_the_mmap_ceiling_come_back_mapped(make_gpt2, make_hardware):
    small = make_gpt2(vocab_size=1024, largest_layer_params=1024 * 768)  # every tensor under 32 MiB
    hw = make_hardware(first_touch_s_per_byte=RATE, optimizer_impl="torch_adamw_for_loop")
    config = TrainConfig(stage=0, micro_batch_size=1, dp_degree=2, precision="fp32")
    s = shards(small, config)
    assert step_fresh_bytes(small, s, config, hw) == 0
    assert backward_fresh_bytes(small, s, config, hw) == 4 * small.parameter_count  # only the flat copy


def test_stage3_pays_for_its_staged_reduce_scatter_every_micro_step(gpt2, make_hardware):
    config = TrainConfig(stage=3, micro_batch_size=1, dp_degree=2, precision="fp32", gradient_accumulation_steps=2)
    s = shards(gpt2, config)
    staged = make_hardware(first_touch_s_per_byte=RATE, reduce_scatter_staging=True)
    in_place = make_hardware(first_touch_s_per_byte=RATE)
    extra = backward_fresh_bytes(gpt2, s, config, staged) - backward_fresh_bytes(gpt2, s, config, in_place)
    assert extra == pytest.approx(2 * 1.5 * 4 * gpt2.parameter_count)  # (1 + 1/2) inputs, two micro-steps
    assert forward_fresh_bytes(gpt2, s, config) == 2 * 4 * 50257 * 768  # the gathered embedding, per micro-step


def test_the_step_time_carries_the_faults_in_its_phases(gpt2, make_hardware):
    config = TrainConfig(stage=0, micro_batch_size=1, dp_degree=8, precision="fp32")
    plain = estimate(gpt2, make_hardware(), config).time
    faulting = estimate(gpt2, make_hardware(first_touch_s_per_byte=RATE), config).time
    assert faulting.first_touch_s > 0 and plain.first_touch_s == 0
    assert faulting.step_s == pytest.approx(plain.step_s + faulting.first_touch_s)
    assert faulting.hidden_comm_s == pytest.approx(plain.hidden_comm_s)  # a term of its own, never hidden
    assert faulting.engine_overhead_s == pytest.approx(plain.engine_overhead_s)
    assert faulting.backward_phase_s - plain.backward_phase_s == pytest.approx(
        RATE * (backward_fresh_bytes(gpt2, shards(gpt2, config), config, make_hardware())
                + loss_fresh_bytes(gpt2, config)[1]))


def test_the_loss_maps_its_logits_sized_tensors_afresh_once_they_reach_the_threshold(make_gpt2):
    """GPT-2's loss in fp32: the logits and the log-softmax in the forward, the two fp32 gradients in
    the backward, each n = tokens x 50257 elements; in bf16 also the fp32 copy and the cast back.
    Below 32 MiB the heap gives them back mapped; a measured model already paid them."""
    gpt2 = make_gpt2(seq_len=32)
    n = 8 * 32 * 50257  # 51 MB in fp32
    fp32 = TrainConfig(stage=0, micro_batch_size=8, precision="fp32", gradient_accumulation_steps=2)
    assert loss_fresh_bytes(gpt2, fp32) == (2 * 2 * 4 * n, 2 * 2 * 4 * n)
    assert loss_fresh_bytes(gpt2, dataclasses.replace(fp32, micro_batch_size=4)) == (0, 0)  # 25.7 MB each
    bf16 = TrainConfig(stage=0, micro_batch_size=16, precision="bf16")
    n16 = 16 * 32 * 50257
    assert loss_fresh_bytes(gpt2, bf16) == (2 * n16 + 4 * n16 + 4 * n16, 4 * n16 + 4 * n16 + 2 * n16)
    fused = dataclasses.replace(gpt2, loss="fused")
    assert loss_fresh_bytes(fused, bf16) == (2 * n16, 2 * n16)
    measured = dataclasses.replace(gpt2, measured_compute=MeasuredCompute(((8, 0.1, 0.2),)))
    assert loss_fresh_bytes(measured, fp32) == (0, 0)


def test_fewer_ranks_on_a_node_fault_faster_with_more_threads(make_hardware):
    hw = make_hardware(first_touch_s_per_byte=RATE, threads_per_rank=1, ranks_per_node=2)
    assert hw.with_ranks_per_node(1, 1).first_touch_s_per_byte == pytest.approx(RATE / 2)


def test_stage1_allocates_its_reduction_bucket_at_the_boundary_and_stage2_in_every_micro_step(gpt2, make_hardware):
    """Stage 1 reduces once a step, stage 2 in every backward: with more micro-steps only stage 2's
    bucket is allocated again (measured: benchmarks/results/engine_profile_gpt2_tied.txt)."""
    hw = make_hardware(first_touch_s_per_byte=RATE)
    measured = dataclasses.replace(gpt2, measured_compute=MeasuredCompute(((1, 0.1, 0.2),)))  # no gradients counted
    growth = {}
    for stage in (1, 2):
        one = TrainConfig(stage=stage, micro_batch_size=1, dp_degree=2, precision="fp32", reduce_bucket_size=int(5e8))
        two = dataclasses.replace(one, gradient_accumulation_steps=2)
        growth[stage] = (backward_fresh_bytes(measured, shards(gpt2, two), two, hw)
                         - backward_fresh_bytes(measured, shards(gpt2, one), one, hw))
    assert growth[1] == 0 and growth[2] > 0
