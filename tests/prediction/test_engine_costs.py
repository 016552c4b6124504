import dataclasses

import pytest

from simtune.errors import WorkloadError
from simtune.hardware import load_profile
from simtune.model.adapters import hardware_spec as spec_of, model_spec
from simtune.model.inputs import FrameworkCosts, MeasuredCompute, TrainConfig
from simtune.model.step_time import estimate_time, framework_costs, gradient_copy_s
from simtune.prediction.engine_costs import framework_costs_of, param_pass_costs
from simtune.workloads import load_workload


def gpt2_spec(**overrides):
    return dataclasses.replace(model_spec(load_workload("gpt2-tiny")), **overrides)


def hardware_spec(**overrides):
    return dataclasses.replace(spec_of(load_profile("dgx-a100-80gb")), framework=FrameworkCosts(), **overrides)

TRUE = FrameworkCosts(forward_kernel_s=5e-6, backward_kernel_s=3e-6, zero3_module_s=2e-4, zero3_module_backward_s=5e-5,
                      reduce_bucket_s=3e-4,
                      gradient_hook_s=4e-5, engine_step_s=2e-3, engine_micro_step_s=1e-3, gather_call_s=7e-4)


def measured_engines(model, hardware, mbs=2):
    """What real engines would show per stage if the engine costs were TRUE: each stage's
    framework costs as its measured (forward, backward, step, loop) overheads."""
    truth = dataclasses.replace(hardware, framework=TRUE)
    rows = []
    for stage in range(4):
        fwd, bwd, step = framework_costs(model, truth, TrainConfig(stage=stage, micro_batch_size=mbs, precision="fp32",
                                                                        dp_degree=2))
        rows.append((stage, mbs, fwd, bwd, step, 0.0))
    compute = MeasuredCompute(((1, 0.01, 0.02), (4, 0.04, 0.08)), stage_overheads=tuple(rows),
                              reduce_call_overheads=((2, mbs, TRUE.reduce_bucket_s),))
    return dataclasses.replace(model, measured_compute=compute)


def test_per_unit_costs_come_back_from_the_engines_of_one_workload():
    hardware = dataclasses.replace(hardware_spec(streaming_bytes_per_s=1e11),
                                   framework=FrameworkCosts(forward_kernel_s=5e-6, backward_kernel_s=3e-6))
    got = framework_costs_of(measured_engines(gpt2_spec(), hardware), hardware, "fp32")
    for field in ("zero3_module_s", "zero3_module_backward_s", "reduce_bucket_s", "gradient_hook_s", "engine_step_s",
                  "engine_micro_step_s", "gather_call_s"):
        assert getattr(got, field) == pytest.approx(getattr(TRUE, field)), field
    assert got.forward_kernel_s == 5e-6  # the machine's own measurement is kept


def test_costs_read_off_one_model_scale_with_another_models_counts():
    hardware = hardware_spec(streaming_bytes_per_s=1e11)
    got = framework_costs_of(measured_engines(gpt2_spec(), hardware), hardware, "fp32")
    small, other = gpt2_spec(), model_spec(load_workload("bert-tiny"))
    config = TrainConfig(stage=3, micro_batch_size=2, precision="fp32")
    with_costs = dataclasses.replace(hardware, framework=got)
    extra = [a - b for a, b in zip(framework_costs(other, with_costs, config),
                                   framework_costs(small, with_costs, config))]
    more = other.hooked_modules - small.hooked_modules
    assert more != 0 and other.layout.numels != small.layout.numels
    assert extra[0] == pytest.approx(more * TRUE.zero3_module_s)
    hooks = (len(other.layout.numels) - len(small.layout.numels)) * TRUE.gradient_hook_s
    copies = gradient_copy_s(other, with_costs, config) - gradient_copy_s(small, with_costs, config)
    assert extra[1] == pytest.approx(more * TRUE.zero3_module_backward_s + hooks + copies)


def test_a_workload_without_measured_engines_is_refused():
    with pytest.raises(WorkloadError):
        framework_costs_of(gpt2_spec(), hardware_spec(), "fp32")


PER_PARAM = ((1e-10, 4e-9, 8e-9), (0.0, 1.1e-8, 1.2e-8), (2e-10, 9e-9, 1.2e-8), (8e-9, 1e-8, 7e-9))
"""Seconds per parameter per stage (forward, backward, step), of the order DeepSpeed shows on CPU."""


def test_costs_per_parameter_come_back_from_a_pair_of_one_shape():
    hardware = hardware_spec(streaming_bytes_per_s=1e11, ranks_per_node=2)  # where the pair ran
    truth = dataclasses.replace(TRUE, param_pass_s=PER_PARAM)
    small = gpt2_spec()
    large = dataclasses.replace(small, parameter_count=small.parameter_count + 8_388_608)

    def engines(model):
        with_truth = dataclasses.replace(hardware, framework=truth)
        rows = tuple((stage, 2) + framework_costs(model, with_truth, TrainConfig(
            stage=stage, micro_batch_size=2, precision="fp32", dp_degree=2)) + (0.0,) for stage in range(4))
        return dataclasses.replace(model, measured_compute=MeasuredCompute(
            ((1, 0.01, 0.02), (4, 0.04, 0.08)), stage_overheads=rows, reduce_call_overheads=((2, 2, 3e-4),)))

    per_param = param_pass_costs(engines(small), engines(large), 2)
    for got, want in zip(per_param, PER_PARAM):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-15)
    # what is left per unit is the truth's, the per-parameter work taken off first
    got = framework_costs_of(engines(small), hardware, "fp32", per_param)
    for field in ("zero3_module_s", "zero3_module_backward_s", "gradient_hook_s", "engine_step_s",
                  "engine_micro_step_s", "gather_call_s"):
        assert getattr(got, field) == pytest.approx(getattr(TRUE, field), rel=1e-6), field
    assert got.param_pass_s == per_param


def test_stage_3s_forward_cost_per_parameter_is_read_over_what_it_fetches():
    """The tensors ZeRO-3 keeps whole are never fetched: a twin whose extra parameters sit in
    fetched tensors gives a forward cost per fetched parameter, and a model whose tensors are all
    persistent pays none of it."""
    hardware = hardware_spec(streaming_bytes_per_s=1e11, ranks_per_node=2)
    truth = dataclasses.replace(hardware, framework=dataclasses.replace(TRUE, param_pass_s=PER_PARAM))
    small = gpt2_spec()
    threshold = TrainConfig(stage=3, micro_batch_size=2, precision="fp32").stage3_param_persistence_threshold
    kept, tensors = small.layout.persistent(threshold)
    assert 0 < kept < small.parameter_count and tensors < len(small.layout.numels)
    # the twin: every tensor 16 times larger, so more of them are fetched
    large = dataclasses.replace(small, param_tensor_numels=tuple(16 * n for n in small.layout.numels),
                                parameter_count=16 * small.parameter_count)
    assert large.layout.persistent(threshold)[1] < tensors

    def engines(model):
        rows = tuple((stage, 2) + framework_costs(model, truth, TrainConfig(
            stage=stage, micro_batch_size=2, precision="fp32", dp_degree=2)) + (0.0,) for stage in range(4))
        return dataclasses.replace(model, measured_compute=MeasuredCompute(
            ((1, 0.01, 0.02), (4, 0.04, 0.08)), stage_overheads=rows, reduce_call_overheads=((2, 2, 3e-4),)))

    per_param = param_pass_costs(engines(small), engines(large), 2)
    assert per_param[3][:2] == pytest.approx(PER_PARAM[3][:2], rel=1e-6)  # (its step also gathers fewer tensors)
    got = framework_costs_of(engines(small), hardware, "fp32", per_param)
    assert got.zero3_module_s == pytest.approx(TRUE.zero3_module_s, rel=1e-6)
    config = TrainConfig(stage=3, micro_batch_size=2, precision="fp32", dp_degree=2)
    all_kept = dataclasses.replace(config, stage3_param_persistence_threshold=10**12)
    with_costs = dataclasses.replace(hardware, framework=got)
    saved = framework_costs(small, with_costs, config)[0] - framework_costs(small, with_costs, all_kept)[0]
    assert saved == pytest.approx((small.parameter_count - kept) * PER_PARAM[3][0], rel=1e-6)


def test_a_pair_that_is_not_larger_or_not_measured_is_refused():
    hardware = hardware_spec(streaming_bytes_per_s=1e11)
    measured = measured_engines(gpt2_spec(), hardware)
    with pytest.raises(WorkloadError, match="larger"):
        param_pass_costs(measured, measured, 2)
    with pytest.raises(WorkloadError, match="measured engines"):
        param_pass_costs(measured, gpt2_spec(), 2)


def test_costs_per_parameter_replace_the_modelled_bucket_copies():
    model = gpt2_spec()
    plain = hardware_spec(streaming_bytes_per_s=1e9)
    learnt = dataclasses.replace(plain, framework=FrameworkCosts(param_pass_s=PER_PARAM))
    for stage in range(4):
        config = TrainConfig(stage=stage, micro_batch_size=2, precision="fp32", dp_degree=2)
        fwd, bwd, step = framework_costs(model, learnt, config)
        k_f, k_b, k_s = PER_PARAM[stage]
        p = model.parameter_count
        fetched = p - (model.layout.persistent(config.stage3_param_persistence_threshold)[0] if stage == 3 else 0)
        assert (fwd, bwd, step) == pytest.approx((fetched * k_f, p * k_b, p * k_s / (2 if stage == 3 else 1)))
        # without them, stages 2/3 copy each gradient into a bucket
        assert (framework_costs(model, plain, config)[1] > 0) == (stage >= 2)
    # stages 0/1 still accumulate from the second micro-step on, and their backward's engine work
    # runs once a step: a second micro-step adds its forward's work and the accumulation only
    one, two = (estimate_time(model, learnt, TrainConfig(stage=1, micro_batch_size=2, precision="fp32", dp_degree=2,
                                                         gradient_accumulation_steps=gas)) for gas in (1, 2))
    config = TrainConfig(stage=1, micro_batch_size=2, precision="fp32", dp_degree=2, gradient_accumulation_steps=2)
    accumulation = 2 * gradient_copy_s(model, learnt, config)
    assert accumulation > 0
    assert two.engine_overhead_s - one.engine_overhead_s == pytest.approx(
        framework_costs(model, learnt, config)[0] + accumulation)


def test_costs_per_parameter_follow_what_each_rank_holds_and_gathers():
    """Stage 3's step works on the rank's shard, so it falls with the data-parallel degree; the
    others' step copies the update into the whole model and does not. At one rank there is nothing
    to gather, so the forward's cost per parameter is gone."""
    model = gpt2_spec()
    learnt = dataclasses.replace(hardware_spec(streaming_bytes_per_s=1e9), framework=FrameworkCosts(
        param_pass_s=PER_PARAM))

    def costs(stage, dp):
        return framework_costs(model, learnt, TrainConfig(stage=stage, micro_batch_size=2, precision="fp32",
                                                          dp_degree=dp))

    for stage in range(4):
        two, eight, one = costs(stage, 2), costs(stage, 8), costs(stage, 1)
        assert eight[2] == pytest.approx(two[2] / 4 if stage == 3 else two[2])
        assert (eight[0], eight[1]) == pytest.approx((two[0], two[1]))
        assert one[0] == 0.0 and one[1] == pytest.approx(two[1])
    assert costs(3, 2)[0] > 0
