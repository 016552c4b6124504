import dataclasses

import pytest

from simtune.errors import WorkloadError
from simtune.hardware import load_profile
from simtune.model.adapters import hardware_spec as spec_of, model_spec
from simtune.model.inputs import FrameworkCosts, MeasuredCompute, TrainConfig
from simtune.model.step_time import framework_costs
from simtune.prediction.engine_costs import framework_costs_of
from simtune.workloads import load_workload


def gpt2_spec(**overrides):
    return dataclasses.replace(model_spec(load_workload("gpt2-tiny")), **overrides)


def hardware_spec(**overrides):
    return dataclasses.replace(spec_of(load_profile("dgx-a100-80gb")), framework=FrameworkCosts(), **overrides)

TRUE = FrameworkCosts(forward_kernel_s=5e-6, backward_kernel_s=3e-6, zero3_module_s=2e-4, reduce_bucket_s=3e-4,
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
    for field in ("zero3_module_s", "reduce_bucket_s", "gradient_hook_s", "engine_step_s", "engine_micro_step_s",
                  "gather_call_s"):
        assert getattr(got, field) == pytest.approx(getattr(TRUE, field)), field
    assert got.forward_kernel_s == 5e-6  # the machine's own measurement is kept


def test_costs_read_off_one_model_scale_with_another_models_counts():
    hardware = hardware_spec(streaming_bytes_per_s=1e11)
    got = framework_costs_of(measured_engines(gpt2_spec(), hardware), hardware, "fp32")
    small, other = gpt2_spec(), model_spec(load_workload("bert-tiny"))
    config = TrainConfig(stage=3, micro_batch_size=2, precision="fp32")
    with_costs = dataclasses.replace(hardware, framework=got)
    extra = framework_costs(other, with_costs, config)[0] - framework_costs(small, with_costs, config)[0]
    assert other.hooked_modules != small.hooked_modules
    assert extra == pytest.approx((other.hooked_modules - small.hooked_modules) * TRUE.zero3_module_s)


def test_a_workload_without_measured_engines_is_refused():
    with pytest.raises(WorkloadError):
        framework_costs_of(gpt2_spec(), hardware_spec(), "fp32")
