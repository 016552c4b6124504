"""The knob table: DeepSpeed's own defaults, and one entry changing the space, the experiment name
and the cost model's input together."""

import dataclasses
import itertools
import math

import pytest

from simtune import knobs
from simtune.dsconfig import AutotuningConfig
from simtune.hardware.registry import load_profile
from simtune.naming import experiment_name
from simtune.prediction.predictor import Predictor
from simtune.space import Trial, TuningSpace
from simtune.workloads import load_workload


@pytest.mark.parametrize("stage", knobs.STAGES)
def test_defaults_are_those_of_the_installed_deepspeed(stage):
    config = pytest.importorskip("deepspeed.runtime.zero.config").DeepSpeedZeroConfig
    zero = config(stage=stage)
    field_of = {(field.alias or name): name for name, field in config.model_fields.items()}
    for row in knobs.KNOBS:  # stage3_* keys are aliases of DeepSpeed's field names
        assert row.default_for(stage) == getattr(zero, field_of[row.key]), row.key


def test_the_default_spaces_are_deepspeeds_autotuner_spaces():
    sizes = {stage: math.prod(len(values) for _, values in knobs.default_space(stage)) for stage in knobs.STAGES}
    assert sizes == {0: 1, 1: 9, 2: 72, 3: 144}  # DEFAULT_TUNING_SPACE_ZERO_0..3
    assert [key for key, _ in knobs.default_space(3)] == [k for k in knobs.name_order() if k in dict(
        knobs.default_space(3))]


def test_abbreviations_are_distinct():
    names = [row.abbreviation for row in knobs.KNOBS]
    assert len(set(names)) == len(names)


def test_one_entry_changes_the_space_the_name_and_the_model_input_together(monkeypatch):
    rows = {row.key: row for row in knobs.KNOBS}
    changed = dataclasses.replace(rows["allgather_bucket_size"], default=300_000_000, tried=(2_000_000, 4_000_000))
    # first in the table: first in names
    monkeypatch.setattr(knobs, "KNOBS", (changed, *(r for r in knobs.KNOBS if r.key != changed.key)))

    space = TuningSpace.from_config({"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 1}},
                                    AutotuningConfig(fast=False), world_size=2)
    assert dict(space.knob_space(1))["allgather_bucket_size"] == (2_000_000, 4_000_000)
    trial = Trial(stage=1, micro_batch_size=1, zero_knobs={"reduce_bucket_size": 50_000_000,
                                                           "allgather_bucket_size": 2_000_000})
    assert experiment_name(trial).startswith("z1_abs2.0e+06_rbs5.0e+07_")

    predictor = Predictor.from_parts(None, load_workload("gpt2-tiny"), load_profile("dgx-a100-80gb"),
                                     world_size=2, precision="fp32")
    assert predictor.config(Trial(stage=1, micro_batch_size=1)).allgather_bucket_size == 300_000_000
    assert predictor.config(trial).allgather_bucket_size == 2_000_000


def test_every_combination_of_the_default_space_is_named_apart():
    names = set()
    for stage in (1, 2, 3):
        keys, values = zip(*knobs.default_space(stage))
        for combination in itertools.product(*values):
            names.add(experiment_name(Trial(stage=stage, micro_batch_size=1, zero_knobs=dict(zip(keys, combination)))))
    assert len(names) == 9 + 72 + 144
