import dataclasses

import pytest

from simtune.model.adapters import model_spec
from simtune.model.step_time import estimate_time
from simtune.model.thread_pool import GRAIN_ELEMENTS, pool_wake_s, product_wake_ups, throttled, wake_ups
from simtune.model.inputs import TrainConfig
from simtune.workloads import load_workload

WAKE = 30e-6


def cpu(make_hardware, threads: int, wake=WAKE):
    return make_hardware(threads_per_rank=threads, ranks_per_node=4 // threads, pool_wake_s=wake)


def test_only_ranks_of_two_threads_with_a_gathering_stage_are_throttled(make_hardware):
    two, one = cpu(make_hardware, 2), cpu(make_hardware, 1)
    assert throttled(two, TrainConfig(stage=3, micro_batch_size=1, dp_degree=1))
    assert throttled(two, TrainConfig(stage=1, micro_batch_size=1, dp_degree=2))  # partitions gathered after the step
    assert not throttled(two, TrainConfig(stage=2, micro_batch_size=1, dp_degree=1))  # one rank gathers nothing
    assert not throttled(two, TrainConfig(stage=0, micro_batch_size=1, dp_degree=2))
    assert not throttled(one, TrainConfig(stage=3, micro_batch_size=1, dp_degree=2))  # no worker to wake
    assert not throttled(make_hardware(pool_wake_s=WAKE), TrainConfig(stage=3, micro_batch_size=1, dp_degree=2))
    assert not throttled(cpu(make_hardware, 2, wake=None), TrainConfig(stage=3, micro_batch_size=1, dp_degree=2))


def test_bert_tiny_wakes_about_as_often_as_its_measured_steps_slept(make_hardware):
    """benchmarks/results/openmp_wakeups.txt: one rank of bert-tiny (128 tokens, micro-batch 4) at
    stage 3 and two threads slept 236 times a step on its training thread."""
    bert = model_spec(load_workload("bert-tiny", seq_len=128))
    forward, backward = wake_ups(bert, cpu(make_hardware, 2), TrainConfig(stage=3, micro_batch_size=4, precision="fp32"))
    assert 0.8 * 236 <= forward + backward <= 1.2 * 236
    assert backward > forward


def test_element_wise_kernels_below_the_grain_size_wake_no_one(make_hardware):
    bert = model_spec(load_workload("bert-tiny", seq_len=128))
    hw = cpu(make_hardware, 2)
    assert bert.hidden_size * bert.seq_len * 1 < GRAIN_ELEMENTS <= bert.hidden_size * bert.seq_len * 2
    one = sum(wake_ups(bert, hw, TrainConfig(stage=3, micro_batch_size=1, precision="fp32")))
    two = sum(wake_ups(bert, hw, TrainConfig(stage=3, micro_batch_size=2, precision="fp32")))
    four = sum(wake_ups(bert, hw, TrainConfig(stage=3, micro_batch_size=4, precision="fp32")))
    assert one < two == four


def test_checkpointing_wakes_the_pool_again_for_the_recomputed_layers(gpt2, make_hardware):
    hw = cpu(make_hardware, 2)
    plain = wake_ups(gpt2, hw, TrainConfig(stage=3, micro_batch_size=1, precision="fp32"))
    recomputed = wake_ups(gpt2, hw, TrainConfig(stage=3, micro_batch_size=1, precision="fp32",
                                                activation_checkpointing=True))
    assert recomputed[0] == plain[0] and recomputed[1] > plain[1]


def test_the_step_pays_each_micro_steps_wake_ups_in_its_forward_and_backward(gpt2, make_hardware):
    config = TrainConfig(stage=3, micro_batch_size=1, dp_degree=2, precision="fp32", gradient_accumulation_steps=3)
    woken, quiet = cpu(make_hardware, 2), cpu(make_hardware, 2, wake=None)
    forward, backward = pool_wake_s(gpt2, woken, config)
    assert forward > 0 and backward > 0
    a, b = estimate_time(gpt2, woken, config), estimate_time(gpt2, quiet, config)
    assert a.thread_pool_s == pytest.approx(3 * (forward + backward)) and b.thread_pool_s == 0.0
    assert a.step_s - b.step_s == pytest.approx(a.thread_pool_s)
    assert a.forward_phase_s - b.forward_phase_s == pytest.approx(3 * forward)
    assert a.backward_phase_s - b.backward_phase_s == pytest.approx(3 * backward)


def test_matrix_products_pay_their_own_measured_wake_and_the_other_kernels_the_copys(make_hardware):
    """A product's wake is timed beside the copy's (simtune.calib.thread_pool). bert-tiny under a
    fused attention kernel (no BLAS product) runs 6 products a layer forward (q, k, v, output, two
    MLP) and 2 outside its 2 layers (the MLM transform and head); backward twice as many."""
    bert = model_spec(load_workload("bert-tiny", seq_len=128))
    config = TrainConfig(stage=3, micro_batch_size=4, precision="fp32")
    copy_only, both = cpu(make_hardware, 2), dataclasses.replace(cpu(make_hardware, 2), pool_product_wake_s=4 * WAKE)
    products = product_wake_ups(bert, both, config)
    assert products[0] == 2 * 6 + 2 and products[1] == 2 * products[0]
    assert all(p < k for p, k in zip(products, wake_ups(bert, both, config)))
    for plain, more, count in zip(pool_wake_s(bert, copy_only, config), pool_wake_s(bert, both, config), products):
        assert more - plain == pytest.approx(count * 3 * WAKE)
    recomputing = dataclasses.replace(config, activation_checkpointing=True)
    assert product_wake_ups(bert, both, recomputing)[1] == products[1] + 2 * 6  # the layers' forward again
    assert product_wake_ups(bert, both, dataclasses.replace(config, stage=0)) == (0, 0)


def test_one_rank_of_the_calibrated_two_pays_where_they_did_not(make_hardware):
    measured = dataclasses.replace(cpu(make_hardware, 1), ranks_per_node=2)
    config = TrainConfig(stage=3, micro_batch_size=1, dp_degree=1, precision="fp32")
    bert = model_spec(load_workload("bert-tiny", seq_len=128))
    assert pool_wake_s(bert, measured, config) == (0.0, 0.0)
    alone = measured.with_ranks_per_node(1, 1)
    assert alone.threads_per_rank == 2 and alone.pool_wake_s == WAKE
    assert sum(pool_wake_s(bert, alone, config)) == pytest.approx(WAKE * sum(wake_ups(bert, alone, config)))


def test_the_time_terms_still_add_up_to_the_step(gpt2, make_hardware):
    from simtune.commands.estimate import TIME_TERMS

    config = TrainConfig(stage=3, micro_batch_size=2, dp_degree=2, precision="fp32", gradient_accumulation_steps=2)
    t = estimate_time(gpt2, cpu(make_hardware, 2), config)
    assert t.thread_pool_s > 0
    terms = {term: getattr(t, f"{term}_s") for term in TIME_TERMS}
    assert sum(terms.values()) - 2 * terms["hidden_comm"] == pytest.approx(t.step_s)
    assert sum(t.terms()) == pytest.approx(t.step_s)  # the capacity report's bars
