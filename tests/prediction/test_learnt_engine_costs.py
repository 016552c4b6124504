"""Engine costs per unit saved from one workload's engines and used for the next workload."""

import dataclasses
import json

import pytest

from simtune.hardware import load_profile
from simtune.hardware.serialize import profile_fingerprint
from simtune.model.inputs import FrameworkCosts
from simtune.prediction.learnt_engine_costs import (LEARNT, learnt_engine_costs, record_engine_costs,
                                                    with_learnt_engine_costs)
from simtune.prediction.predictor import Predictor
from simtune.space import Trial
from simtune.workloads import load_workload

from tests.prediction.test_predictor import calibration_of

COSTS = FrameworkCosts(forward_kernel_s=9.0, backward_kernel_s=9.0, zero3_module_s=2e-4, zero3_module_backward_s=1e-4,
                       reduce_bucket_s=3e-4,
                       gradient_hook_s=4e-5, engine_step_s=2e-3, engine_micro_step_s=1e-3, engine_boundary_s=6e-3,
                       forward_module_s=5e-5, gather_call_s=7e-4)


@pytest.fixture(scope="module")
def a100():
    return load_profile("dgx-a100-80gb")


def test_saved_costs_come_back_for_the_same_profile_and_precision(a100, tmp_path):
    path = tmp_path / "costs.json"
    assert record_engine_costs(a100, "gpt2-tiny@64/fp32#1", "fp32", COSTS, buckets_measured=True, path=path) == path
    learnt = learnt_engine_costs(a100, "fp32", path=path)
    assert learnt is not None and learnt.sources == ("gpt2-tiny@64/fp32#1",)
    assert learnt.costs == {name: getattr(COSTS, name) for name in LEARNT}
    assert learnt.covers(bucket_engines=True)
    # saving the same costs again leaves the file as it was
    assert record_engine_costs(a100, "gpt2-tiny@64/fp32#1", "fp32", COSTS, buckets_measured=True, path=path) is None


def test_each_cost_is_the_median_over_the_workloads_of_the_precision(a100, tmp_path):
    path = tmp_path / "costs.json"
    for key, module_s in (("a", 1e-4), ("b", 2e-4), ("c", 6e-4)):
        record_engine_costs(a100, key, "fp32", dataclasses.replace(COSTS, zero3_module_s=module_s),
                            buckets_measured=False, path=path)
    record_engine_costs(a100, "d", "bf16", dataclasses.replace(COSTS, zero3_module_s=9e-3), buckets_measured=True,
                        path=path)
    fp32 = learnt_engine_costs(a100, "fp32", path=path)
    assert fp32 is not None and fp32.sources == ("a", "b", "c")
    assert fp32.costs["zero3_module_s"] == pytest.approx(2e-4)
    # no fp32 workload measured small buckets: the bucket cost is not known, so engines are still wanted
    assert "reduce_bucket_s" not in fp32.costs
    assert not fp32.covers(bucket_engines=True) and fp32.covers(bucket_engines=False)
    # a precision none was measured in takes every workload
    fp16 = learnt_engine_costs(a100, "fp16", path=path)
    assert fp16 is not None and fp16.sources == ("a", "b", "c", "d")


def test_costs_saved_against_other_numbers_of_the_profile_are_ignored(a100, tmp_path):
    path = tmp_path / "costs.json"
    record_engine_costs(a100, "a", "fp32", COSTS, buckets_measured=True, path=path)
    recalibrated = dataclasses.replace(a100, name=a100.name,
                                       device=dataclasses.replace(a100.device, usable_memory_bytes=1 << 30))
    assert profile_fingerprint(recalibrated) != profile_fingerprint(a100)
    assert learnt_engine_costs(recalibrated, "fp32", path=path) is None


def test_a_missing_or_damaged_file_holds_nothing(a100, tmp_path):
    assert learnt_engine_costs(a100, "fp32", path=tmp_path / "none.json") is None
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{not json")
    assert learnt_engine_costs(a100, "fp32", path=damaged) is None
    # a damaged file is replaced by the next save
    record_engine_costs(a100, "a", "fp32", COSTS, buckets_measured=True, path=damaged)
    assert set(json.loads(damaged.read_text())["entries"]) == {"a"}


def test_the_profile_carries_the_learnt_costs_and_keeps_its_dispatch(a100, tmp_path):
    path = tmp_path / "costs.json"
    record_engine_costs(a100, "a", "fp32", COSTS, buckets_measured=True, path=path)
    learnt = learnt_engine_costs(a100, "fp32", path=path)
    merged = with_learnt_engine_costs(a100, learnt)
    assert merged.framework is not None and a100.framework is not None
    assert merged.framework.zero3_module_s == COSTS.zero3_module_s
    assert merged.framework.forward_kernel_s == a100.framework.forward_kernel_s != COSTS.forward_kernel_s
    assert "learnt from a" in merged.provenance.notes[-1]
    assert with_learnt_engine_costs(a100, None) is a100


def test_a_workload_measured_without_engines_is_costed_per_unit(a100):
    """Its own forward and backward are measured; the engine's work is the profile's cost per unit
    times this model's counts (without the learnt costs, a ZeRO-3 step would cost as little as
    ZeRO-0's beyond communication)."""
    calibration = calibration_of(load_workload("gpt2-tiny"), a100.name)
    assert not calibration.engines
    trial3, trial0 = Trial(stage=3, micro_batch_size=2), Trial(stage=0, micro_batch_size=2)

    def engine_s(profile, trial):
        p = Predictor.from_parts(None, calibration, profile, world_size=8, precision="bf16")
        assert p.measured_compute_used and p.model.measured_compute is not None
        assert not p.model.measured_compute.engines_measured
        return p, p.predict(trial).time.engine_overhead_s

    fw = a100.framework
    slow = dataclasses.replace(a100, framework=dataclasses.replace(fw, zero3_module_s=1e-3))
    slower = dataclasses.replace(a100, framework=dataclasses.replace(fw, zero3_module_s=1e-3,
                                                                     zero3_module_backward_s=2e-3))
    p, fast_s = engine_s(a100, trial3)
    _, slow_s = engine_s(slow, trial3)
    _, slower_s = engine_s(slower, trial3)
    assert slow_s - fast_s == pytest.approx(p.model.hooked_modules * (1e-3 - fw.zero3_module_s))
    assert slower_s - slow_s == pytest.approx(p.model.hooked_modules * (2e-3 - fw.zero3_module_backward_s))
    assert engine_s(slower, trial0)[1] == pytest.approx(engine_s(a100, trial0)[1])


def test_an_entry_saved_with_one_cost_for_both_passes_gives_it_to_each(a100, tmp_path):
    """Entries saved before stage 3's passes were read apart held one cost per module and pass."""
    path = tmp_path / "costs.json"
    record_engine_costs(a100, "new", "fp32", COSTS, buckets_measured=True, path=path)
    data = json.loads(path.read_text())
    old = dict(data["entries"]["new"], costs={k: v for k, v in data["entries"]["new"]["costs"].items()
                                              if k != "zero3_module_backward_s"})
    old["costs"]["zero3_module_s"] = 3e-4
    path.write_text(json.dumps({"profile": a100.name, "entries": {"old": old}}))
    learnt = learnt_engine_costs(a100, "fp32", path=path)
    assert learnt is not None and learnt.costs["zero3_module_backward_s"] == learnt.costs["zero3_module_s"] == 3e-4


def test_an_entry_saved_with_the_backwards_meeting_in_the_micro_step_cost_does_not_give_it(a100, tmp_path):
    """Entries saved before the backward's work where the ranks meet was kept apart held it in
    engine_micro_step_s, which every micro-step would pay: that cost is not read from them."""
    path = tmp_path / "costs.json"
    record_engine_costs(a100, "new", "fp32", COSTS, buckets_measured=True, path=path)
    data = json.loads(path.read_text())
    old = dict(data["entries"]["new"], costs={k: v for k, v in data["entries"]["new"]["costs"].items()
                                              if k != "engine_boundary_s"})
    path.write_text(json.dumps({"profile": a100.name, "entries": {"old": old, "new": data["entries"]["new"]}}))
    learnt = learnt_engine_costs(a100, "fp32", path=path)
    assert learnt is not None
    assert learnt.costs["engine_micro_step_s"] == COSTS.engine_micro_step_s  # the new entry's alone
    assert learnt.costs["engine_boundary_s"] == COSTS.engine_boundary_s
    assert learnt.costs["engine_step_s"] == COSTS.engine_step_s  # the old entry's other costs still count


def test_costs_per_parameter_are_kept_and_taken_as_a_median_where_learnt(a100, tmp_path):
    path = tmp_path / "costs.json"
    table = ((0.0, 4e-9, 8e-9), (0.0, 1e-8, 1.2e-8), (0.0, 9e-9, 1.2e-8), (8e-9, 1e-8, 7e-9))
    record_engine_costs(a100, "per-unit only", "fp32", COSTS, buckets_measured=True, path=path)
    assert learnt_engine_costs(a100, "fp32", path=path).param_pass_s == ()
    for key, scale in (("a", 1.0), ("b", 3.0)):
        record_engine_costs(a100, key, "fp32", dataclasses.replace(
            COSTS, param_pass_s=tuple(tuple(v * scale for v in row) for row in table)), buckets_measured=True, path=path)
    learnt = learnt_engine_costs(a100, "fp32", path=path)
    assert learnt.param_pass_s[1] == pytest.approx((0.0, 2e-8, 2.4e-8))  # the entry without a table is left out
    assert "per parameter" in learnt.describe()
    merged = with_learnt_engine_costs(a100, learnt)
    assert merged.framework.param_pass_s == learnt.param_pass_s
    # the model's hardware carries them, and a ZeRO-1 step costs its parameters times the step's cost
    plain = Predictor.from_parts(None, load_workload("gpt2"), a100, world_size=8, precision="bf16")
    costed = Predictor.from_parts(None, load_workload("gpt2"), merged, world_size=8, precision="bf16")
    extra = (costed.predict(Trial(stage=1, micro_batch_size=2)).time.step_phase_s
             - plain.predict(Trial(stage=1, micro_batch_size=2)).time.step_phase_s)
    assert extra == pytest.approx(costed.model.parameter_count * 2.4e-8
                                  + merged.framework.engine_step_s - a100.framework.engine_step_s, rel=1e-6)
