import itertools
import re

import pytest

from simtune.naming import abbreviation, experiment_name, format_value
from simtune.space import TuningSpace, Trial


def test_plain_mbs_experiment_name():
    assert experiment_name(Trial(0, 4, 1)) == "z0_gas1_tmbspg4"
    assert experiment_name(Trial(3, 64, 2)) == "z3_gas2_tmbspg64"


def test_spec_example():
    trial = Trial(1, 11, 1, {"reduce_bucket_size": 50_000_000, "allgather_bucket_size": 1_000_000_000})
    assert experiment_name(trial) == "z1_rbs5.0e+07_abs1.0e+09_gas1_tmbspg11"


def test_float_values_named_like_ints():
    trial = Trial(1, 11, 1, {"reduce_bucket_size": 5e7, "allgather_bucket_size": 1e9})
    assert experiment_name(trial) == "z1_rbs5.0e+07_abs1.0e+09_gas1_tmbspg11"


def test_abbreviations():
    assert abbreviation("reduce_bucket_size") == "rbs"
    assert abbreviation("allgather_bucket_size") == "abs"
    assert abbreviation("overlap_comm") == "oc"
    assert abbreviation("reduce_scatter") == "rs"
    assert abbreviation("contiguous_gradients") == "cg"
    assert abbreviation("allgather_partitions") == "ap"
    assert abbreviation("train_micro_batch_size_per_gpu") == "tmbspg"


def test_all_knobs_in_fixed_order_and_bools():
    trial = Trial(
        3,
        2,
        4,
        {
            "contiguous_gradients": True,
            "allgather_partitions": False,
            "overlap_comm": True,
            "reduce_scatter": False,
            "reduce_bucket_size": 500_000_000,
            "allgather_bucket_size": 50_000_000,
            "stage3_prefetch_bucket_size": 5e7,
            "stage3_param_persistence_threshold": 1000,
            "stage3_max_live_parameters": 1e9,
        },
    )
    assert experiment_name(trial) == (
        "z3_ocT_rsF_rbs5.0e+08_apF_abs5.0e+07_cgT_spbs5.0e+07_sppt1000_smlp1.0e+09_gas4_tmbspg2"
    )


def test_additions():
    trial = Trial(3, 8, 1, offload_optimizer="cpu", offload_param="cpu", activation_checkpointing=True)
    assert experiment_name(trial) == "z3_oocpu_opcpu_acT_gas1_tmbspg8"
    assert experiment_name(Trial(2, 8, 1, offload_optimizer="cpu")) == "z2_oocpu_gas1_tmbspg8"
    assert experiment_name(Trial(2, 8, 1, activation_checkpointing=True)) == "z2_acT_gas1_tmbspg8"


def test_default_knobs_left_out():
    trial = Trial(1, 4, 1, {"reduce_bucket_size": 500_000_000, "allgather_bucket_size": 50_000_000})
    defaults = {"reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8}
    assert experiment_name(trial, default_knobs=defaults) == "z1_abs5.0e+07_gas1_tmbspg4"
    assert experiment_name(trial) == "z1_rbs5.0e+08_abs5.0e+07_gas1_tmbspg4"


def test_bool_default_is_not_an_int_default():
    trial = Trial(2, 4, 1, {"overlap_comm": True})
    assert experiment_name(trial, default_knobs={"overlap_comm": 1}) == "z2_ocT_gas1_tmbspg4"
    assert experiment_name(trial, default_knobs={"overlap_comm": True}) == "z2_gas1_tmbspg4"


@pytest.mark.parametrize(
    "value,text",
    [
        (True, "T"),
        (False, "F"),
        (9000, "9000"),
        (9001, "9.001e+03"),
        (50_000_000, "5.0e+07"),
        (123_456_789, "1.23456789e+08"),
        (5.04e7, "5.04e+07"),
        (0.5, "0.5"),
        (100.0, "100"),
        ("cpu", "cpu"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_close_values_do_not_merge():
    a = Trial(1, 4, 1, {"reduce_bucket_size": 50_000_000})
    b = Trial(1, 4, 1, {"reduce_bucket_size": 50_400_000})
    assert experiment_name(a) != experiment_name(b)


def test_unsafe_value_rejected():
    with pytest.raises(ValueError):
        format_value("a/b")


def test_names_unique_and_folder_safe_over_a_full_space():
    config = {
        "zero_optimization": {
            "stage": "all",
            "stage3_prefetch_bucket_size": [5e7, 1e8],
            "offload_optimizer": {"device": ["none", "cpu"]},
            "offload_param": {"device": ["none", "cpu"]},
        },
        "autotuning": {"fast": False, "tune_activation_checkpointing": True},
    }
    space = TuningSpace.from_config(config, world_size=2)
    trials = [
        t
        for stage in space.stages
        for mbs, gas in itertools.product((1, 2, 16), (1, 3))
        for t in space.variants(stage, mbs, gas)
    ]
    names = [experiment_name(t) for t in trials]
    assert len(trials) == len(set(trials))
    assert len(names) == len(set(names))
    assert len(names) > 3000
    assert all(re.fullmatch(r"[A-Za-z0-9._+-]+", n) for n in names)
    assert all(len(n) < 200 for n in names)
