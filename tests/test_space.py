import copy
import dataclasses
import json
import warnings

import pytest

from simtune.dsconfig import AutotuningConfig, ConfigWarning
from simtune.errors import ConfigError
from simtune.knobs import deepspeed_defaults, default_space
from simtune.space import Trial, TuningSpace, dead_knobs

MBS = "train_micro_batch_size_per_gpu"
GAS = "gradient_accumulation_steps"


def space(config=None, world_size=2, user_args=(), **autotuning):
    config = dict(config or {})
    if autotuning:
        config["autotuning"] = {**config.get("autotuning", {}), **autotuning}
    return TuningSpace.from_config(config, world_size=world_size, user_args=user_args)


# ---------------------------------------------------------------- Trial
def test_trial_fields_in_order_and_defaults():
    names = [f.name for f in dataclasses.fields(Trial)]
    assert names == [
        "stage", "micro_batch_size", "gradient_accumulation_steps", "zero_knobs",
        "offload_optimizer", "offload_param", "activation_checkpointing",
    ]
    t = Trial(2, 8)
    assert (t.gradient_accumulation_steps, t.zero_knobs, t.offload_optimizer, t.offload_param,
            t.activation_checkpointing) == (1, (), "none", "none", False)


def test_trial_knobs_sorted_frozen_hashable_ordered():
    a = Trial(1, 4, 1, {"reduce_bucket_size": 5e7, "allgather_bucket_size": 5e8})
    b = Trial(1, 4, 1, (("allgather_bucket_size", 5e8), ("reduce_bucket_size", 5e7)))
    assert a.zero_knobs == (("allgather_bucket_size", 5e8), ("reduce_bucket_size", 5e7))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.stage = 2  # type: ignore[misc]
    assert sorted([Trial(2, 1), Trial(1, 8), Trial(1, 2)]) == [Trial(1, 2), Trial(1, 8), Trial(2, 1)]
    assert a.knobs == {"allgather_bucket_size": 5e8, "reduce_bucket_size": 5e7}
    assert a.replace(micro_batch_size=8).micro_batch_size == 8


def test_trial_round_trip():
    t = Trial(3, 4, 2, {"overlap_comm": False}, "cpu", "cpu", True)
    data = json.loads(json.dumps(t.to_dict()))
    assert Trial.from_dict(data) == t


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(stage=4, micro_batch_size=1),
        dict(stage=True, micro_batch_size=1),
        dict(stage=1, micro_batch_size=0),
        dict(stage=1, micro_batch_size=2, gradient_accumulation_steps=0),
        dict(stage=1, micro_batch_size=2.0),
        dict(stage=1, micro_batch_size=2, offload_optimizer="gpu"),
        dict(stage=1, micro_batch_size=2, zero_knobs=(("a", 1), ("a", 2))),
    ],
)
def test_trial_rejects_bad_fields(kwargs):
    with pytest.raises(ValueError):
        Trial(**kwargs)


# ---------------------------------------------------------------- stages
def test_no_zero_section_means_stage_0_only():
    assert space({}).stages == (0,)
    assert space({"zero_optimization": {"reduce_bucket_size": 5e8}}).stages == (0,)


@pytest.mark.parametrize(
    "stage,expected",
    [("all", (0, 1, 2, 3)), ("ALL", (0, 1, 2, 3)), ([3, 1], (1, 3)), ([2], (2,)), (2, (2,)), (0, (0,))],
)
def test_stage_forms(stage, expected):
    assert space({"zero_optimization": {"stage": stage}}).stages == expected


@pytest.mark.parametrize("stage", [4, -1, "two", [], [1, 5], True, 1.5, None])
def test_bad_stage(stage):
    with pytest.raises(ConfigError, match="stage"):
        space({"zero_optimization": {"stage": stage}})


def test_zero_section_not_an_object():
    with pytest.raises(ConfigError, match="zero_optimization"):
        space({"zero_optimization": [1, 2]})


# ---------------------------------------------------------------- micro-batch size
def test_integer_mbs_is_the_smallest_to_try():
    s = space({MBS: 4})
    assert s.micro_batch_sizes is None and s.min_micro_batch_size == 4
    assert s.max_micro_batch_size == 1024


@pytest.mark.parametrize("args", [["--bs", "6"], ["--bs=6"], ["--x", "1", "--bs", "2", "--bs", "6"]])
def test_auto_mbs_takes_the_mapped_script_value(args):
    s = space({MBS: "auto"}, user_args=args, arg_mappings={MBS + " ": " --bs"})
    assert s.micro_batch_sizes is None and s.min_micro_batch_size == 6


def test_auto_mbs_without_mapping_or_flag_is_one():
    assert space({MBS: "auto"}).min_micro_batch_size == 1
    assert space({MBS: "auto"}, user_args=["--lr", "3"], arg_mappings={MBS: "--bs"}).min_micro_batch_size == 1
    assert space({}).min_micro_batch_size == 1


def test_auto_mbs_bad_script_value():
    with pytest.raises(ConfigError, match="--bs .* 'four'"):
        space({MBS: "auto"}, user_args=["--bs", "four"], arg_mappings={MBS: "--bs"})


def test_mbs_list_is_explored_exactly():
    s = space({MBS: [8, 2, 4, 2]})
    assert s.micro_batch_sizes == (2, 4, 8)
    assert s.min_micro_batch_size == 2 and s.max_micro_batch_size == 8
    assert not s.fixed_micro_batch_size


def test_one_element_list_fixes_mbs():
    s = space({MBS: [4]})
    assert s.micro_batch_sizes == (4,) and s.fixed_micro_batch_size
    assert s.min_micro_batch_size == s.max_micro_batch_size == 4
    assert Trial(0, 8) not in s and Trial(0, 4) in s


@pytest.mark.parametrize("bad", [[4, 0], [2, -1], [2.5], ["4"], [], [True]])
def test_mbs_list_rejects_bad_values(bad):
    with pytest.raises(ConfigError, match=MBS) as err:
        space({MBS: bad})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [0, -2, 2.5, "4", "big", None, True])
def test_mbs_rejects_bad_scalars(bad):
    with pytest.raises(ConfigError, match=MBS):
        space({MBS: bad})


def test_mbs_list_above_the_maximum():
    with pytest.raises(ConfigError, match="exceeds max_train_micro_batch_size_per_gpu 16"):
        space({MBS: [4, 32]}, max_train_micro_batch_size_per_gpu=16)


# ---------------------------------------------------------------- gradient accumulation
def test_gas_forms():
    assert space({GAS: 4}).gradient_accumulation_steps == 4
    assert space({GAS: "auto"}).gradient_accumulation_steps == 1
    assert space({}).gradient_accumulation_steps == 1
    s = space({GAS: "auto"}, user_args=["--gradient_accumulation_steps", "8"],
              arg_mappings={"gradient_accumulation_steps ": "--gradient_accumulation_steps"})
    assert s.gradient_accumulation_steps == 8


def test_gas_list_not_supported():
    with pytest.raises(ConfigError, match="list.*not supported") as err:
        space({GAS: [1, 2]})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two"])
def test_bad_gas(bad):
    with pytest.raises(ConfigError, match=GAS):
        space({GAS: bad})


# ---------------------------------------------------------------- batch sizes and degrees
def test_train_batch_size_ignored_with_a_warning():
    with pytest.warns(ConfigWarning, match="train_batch_size 64 is ignored"):
        s = space({"train_batch_size": 64, MBS: 4})
    assert s.user_train_batch_size == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = space({"train_batch_size": "auto", MBS: 4, GAS: 2})
    assert s.user_train_batch_size == 4 * 2 * 2


def test_global_batch_and_degrees():
    s = space({}, world_size=8, mp_size=2)
    assert s.dp_size == 4 and s.mp_size == 2
    assert s.global_batch(Trial(0, 3, 5)) == 3 * 5 * 8 // 2


def test_world_size_must_divide_by_mp_size():
    with pytest.raises(ConfigError, match="multiple of mp_size"):
        space({}, world_size=3, mp_size=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_world_size(bad):
    with pytest.raises(ConfigError, match="processes"):
        TuningSpace.from_config({}, world_size=bad)


def test_max_train_batch_size_caps_mbs_and_global_batch():
    s = space({MBS: 2}, world_size=4, max_train_batch_size=64)
    assert s.max_micro_batch_size == 16
    assert s.why_not(Trial(0, 16, 1)) is None
    assert "exceeds max_train_batch_size 64" in s.why_not(Trial(0, 16, 2))


def test_max_train_batch_size_cap_accounts_for_user_gas():
    s = space({MBS: 2, GAS: 4}, world_size=4, max_train_batch_size=64)
    assert s.max_micro_batch_size == 4
    assert s.why_not(s.trial(0, s.max_micro_batch_size)) is None


def test_max_train_batch_size_below_smallest_batch():
    with pytest.raises(ConfigError, match="max_train_batch_size 4 is smaller"):
        space({MBS: 4}, world_size=2, max_train_batch_size=4)
    with pytest.raises(ConfigError, match="max_train_batch_size 8 is smaller"):
        space({MBS: 1, GAS: 8}, world_size=2, max_train_batch_size=8)


def test_mbs_list_above_max_train_batch_size():
    with pytest.raises(ConfigError, match="Micro-batch size 8 in the list gives a global batch above"):
        space({MBS: [2, 8]}, world_size=2, max_train_batch_size=8)


def test_autotuning_argument_wins_over_section():
    config = {"autotuning": {"fast": True}, "zero_optimization": {"stage": 1}}
    s = TuningSpace.from_config(config, AutotuningConfig(fast=False), world_size=2)
    assert s.tunes_knobs and len(s.knob_grid(1)) == 9


# ---------------------------------------------------------------- tuning list (DeepSpeed 1.7(c))
def test_tuning_list_without_max_batch():
    s = space({})
    assert s.tuning_micro_batch_sizes(1, 64) == (32, 64)  # as observed with DeepSpeed
    assert s.gas_for(32, 64) == 2 and s.gas_for(64, 64) == 1


def test_tuning_list_holds_global_batch_with_user_gas():
    s = space({GAS: 2})
    assert s.batch_per_gpu(64) == 128
    assert s.tuning_micro_batch_sizes(1, 64) == (32, 42, 64)
    assert [s.gas_for(m, 64) for m in (32, 42, 64)] == [4, 3, 2]


def test_tuning_list_with_max_train_batch_size():
    s = space({}, world_size=2, max_train_batch_size=200)
    assert s.batch_per_gpu(64) == 100
    sizes = s.tuning_micro_batch_sizes(4, 64)
    assert sizes == (32, 42, 64)  # 52 has the same gas (1) as 64
    assert all(s.global_batch(Trial(0, m, s.gas_for(m, 64))) <= 200 for m in sizes)


def test_tuning_list_edge_cases():
    s = space({}, num_tuning_micro_batch_sizes=5)
    assert s.tuning_micro_batch_sizes(0, 8) == ()
    assert s.tuning_micro_batch_sizes(3, -1) == ()
    assert s.tuning_micro_batch_sizes(1, 1) == (1,)
    assert s.tuning_micro_batch_sizes(6, 8) == (8,)  # 6 would run with the same gas as 8
    assert s.tuning_micro_batch_sizes(2, 8) == (4, 8)
    assert s.gas_for(8) == 1
    with pytest.raises(ValueError):
        s.gas_for(0)


# ---------------------------------------------------------------- ZeRO knobs
def test_fast_mode_tunes_no_knobs():
    s = space({"zero_optimization": {"stage": "all"}})
    assert not s.tunes_knobs
    assert all(s.knob_grid(stage) == [()] for stage in s.stages)


def test_full_mode_default_spaces_match_deepspeed():
    s = space({"zero_optimization": {"stage": "all"}}, fast=False)
    assert [len(s.knob_grid(stage)) for stage in (0, 1, 2, 3)] == [1, 9, 72, 144]
    assert dict(s.knob_space(2)) == dict(default_space(2))
    assert dict(s.knob_space(1))["reduce_bucket_size"] == (50_000_000, 500_000_000, 1_000_000_000)


def test_knob_grid_lexical_order():
    s = space({"zero_optimization": {"stage": 1}}, fast=False)
    grid = s.knob_grid(1)
    assert grid[0] == (("allgather_bucket_size", 50_000_000), ("reduce_bucket_size", 50_000_000))
    assert grid[1] == (("allgather_bucket_size", 50_000_000), ("reduce_bucket_size", 500_000_000))
    assert grid[-1] == (("allgather_bucket_size", 1_000_000_000), ("reduce_bucket_size", 1_000_000_000))
    assert grid == s.knob_grid(1)  # deterministic
    assert len(set(grid)) == len(grid)


def test_user_list_replaces_default_in_every_stage_that_has_the_key():
    config = {"zero_optimization": {"stage": "all", "overlap_comm": [False, True], "reduce_bucket_size": [2e8, 4e8]}}
    s = space(config, fast=False)
    assert "overlap_comm" not in dict(s.knob_space(1))  # stage 1's default space has no overlap_comm
    for stage in (2, 3):
        assert dict(s.knob_space(stage))["overlap_comm"] == (False, True)
    for stage in (1, 2, 3):
        assert dict(s.knob_space(stage))["reduce_bucket_size"] == (200_000_000, 400_000_000)
    assert len(s.knob_grid(1)) == 2 * 3


def test_user_list_applies_to_a_fixed_stage_even_outside_its_default_space():
    s = space({"zero_optimization": {"stage": 1, "overlap_comm": [True, False]}}, fast=False)
    assert dict(s.knob_space(1))["overlap_comm"] == (True, False)


def test_user_scalar_fixes_a_knob():
    s = space({"zero_optimization": {"stage": 2, "overlap_comm": True, "reduce_bucket_size": "auto"}}, fast=False)
    keys = dict(s.knob_space(2))
    assert "overlap_comm" not in keys and "reduce_bucket_size" not in keys
    assert len(s.knob_grid(2)) == 2 * 3 * 2
    values = s.knob_values(s.trial(2, 1))
    assert values["overlap_comm"] is True and values["reduce_bucket_size"] is None
    rendered = s.render(s.trial(2, 1))
    assert rendered["zero_optimization"]["reduce_bucket_size"] == "auto"


def test_stage3_knobs_only_from_user_lists():
    s = space({"zero_optimization": {"stage": "all"}}, fast=False)
    assert not {"stage3_prefetch_bucket_size", "stage3_max_live_parameters"} & set(dict(s.knob_space(3)))
    s = space({"zero_optimization": {"stage": "all", "stage3_prefetch_bucket_size": [5e7, 2e8],
                                     "stage3_max_live_parameters": [1e8, 1e9],
                                     "stage3_param_persistence_threshold": [1e4, 1e5]}}, fast=False)
    assert len(s.knob_grid(3)) == 144 * 8
    assert "stage3_prefetch_bucket_size" not in dict(s.knob_space(2))


def test_single_value_list_is_not_a_dimension():
    s = space({"zero_optimization": {"stage": 1, "reduce_bucket_size": [2e8]}}, fast=False)
    assert [k for k, _ in s.knob_space(1)] == ["allgather_bucket_size"]
    assert s.render(s.trial(1, 1))["zero_optimization"]["reduce_bucket_size"] == 200_000_000


def test_fast_mode_lists_warn_and_run_first_value():
    config = {"zero_optimization": {"stage": 2, "reduce_bucket_size": [2e8, 4e8]}}
    with pytest.warns(ConfigWarning, match="reduce_bucket_size are not explored.*fast"):
        s = space(config)
    assert s.knob_grid(2) == [()]
    assert s.render(s.trial(2, 1))["zero_optimization"]["reduce_bucket_size"] == 200_000_000


def test_list_for_a_knob_no_tuned_stage_uses_warns():
    with pytest.warns(ConfigWarning, match="stage3_prefetch_bucket_size are not explored"):
        s = space({"zero_optimization": {"stage": [1, 2], "stage3_prefetch_bucket_size": [1, 2]}}, fast=False)
    assert s.render(s.trial(1, 1))["zero_optimization"]["stage3_prefetch_bucket_size"] == 1


def test_list_for_an_untunable_key():
    with pytest.raises(ConfigError, match="sub_group_size is a list"):
        space({"zero_optimization": {"stage": 3, "sub_group_size": [1e9, 1e12]}})


@pytest.mark.parametrize(
    "key,bad", [("overlap_comm", ["yes", False]), ("reduce_bucket_size", [-1, 5e8]), ("reduce_bucket_size", [1.5])]
)
def test_bad_knob_values(key, bad):
    with pytest.raises(ConfigError, match=key):
        space({"zero_optimization": {"stage": 2, key: bad}}, fast=False)


def test_dead_knobs_and_pruning():
    assert "allgather_partitions" in dead_knobs(3) and "allgather_bucket_size" in dead_knobs(3)
    import torch.distributed as dist

    assert ("allgather_bucket_size" in dead_knobs(1)) == hasattr(dist, "all_gather_into_tensor")
    assert dead_knobs(0) == frozenset({"allgather_partitions"})
    s = space({"zero_optimization": {"stage": "all"}}, fast=False)
    assert [len(s.knob_grid(stage, prune_dead=True)) for stage in (1, 2, 3)] == [3, 24, 24]
    # the measured strategy still sees DeepSpeed's full space
    assert [len(s.knob_grid(stage)) for stage in (1, 2, 3)] == [9, 72, 144]


def test_knob_values_fill_in_deepspeed_defaults():
    s = space({"zero_optimization": {"stage": [2, 3]}}, fast=False)
    assert s.knob_values(s.trial(3, 1))["overlap_comm"] is True
    assert s.knob_values(s.trial(2, 1))["overlap_comm"] is False
    t = s.trial(2, 1, zero_knobs={"overlap_comm": True})
    assert s.knob_values(t)["overlap_comm"] is True
    assert deepspeed_defaults(1)["reduce_bucket_size"] == 500_000_000


# ---------------------------------------------------------------- simtune's additions
def test_offload_off_unless_asked():
    s = space({"zero_optimization": {"stage": "all"}})
    assert all(s.offload_optimizer_choices(st) == ("none",) for st in s.stages)
    assert all(s.offload_param_choices(st) == ("none",) for st in s.stages)


def test_tune_offload_flag():
    s = space({"zero_optimization": {"stage": "all"}}, tune_offload=True)
    assert s.offload_optimizer_choices(0) == ("none",)
    assert s.offload_optimizer_choices(1) == ("none", "cpu")
    assert s.offload_param_choices(2) == ("none",)
    assert s.offload_param_choices(3) == ("none", "cpu")
    assert len(s.variants(3, 1)) == 4 and len(s.variants(1, 1)) == 2 and len(s.variants(0, 1)) == 1


def test_offload_device_list_in_config():
    config = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": ["none", "cpu"], "pin_memory": True}}}
    s = space(config)
    assert s.offload_optimizer_choices(3) == ("none", "cpu")
    assert s.offload_param_choices(3) == ("none",)
    cpu = s.render(s.trial(3, 2, offload_optimizer="cpu"))["zero_optimization"]
    assert cpu["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    none = s.render(s.trial(3, 2, offload_optimizer="none"))["zero_optimization"]
    assert "offload_optimizer" not in none


def test_fixed_user_offload_is_kept():
    config = {"zero_optimization": {"stage": [1, 3], "offload_optimizer": {"device": "cpu", "pin_memory": False},
                                    "offload_param": {"device": "nvme", "nvme_path": "/local"}}}
    s = space(config)
    z3 = s.render(s.trial(3, 1))["zero_optimization"]
    assert z3["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert z3["offload_param"] == {"device": "nvme", "nvme_path": "/local"}
    z1 = s.render(s.trial(1, 1))["zero_optimization"]
    assert z1["offload_optimizer"]["device"] == "cpu" and "offload_param" not in z1


@pytest.mark.parametrize(
    "section,match",
    [({"device": "gpu"}, "'gpu' is not one of"), ({"device": []}, "empty list"), ("cpu", "JSON object"),
     ({"device": "cpu", "ratio": [0.5, 1.0]}, "only the offload device")],
)
def test_bad_offload(section, match):
    with pytest.raises(ConfigError, match=match):
        space({"zero_optimization": {"stage": 3, "offload_optimizer": section}})


def test_an_nvme_offload_at_stage_3_needs_its_path():
    with pytest.raises(ConfigError, match="offload_param.device nvme needs nvme_path"):
        space({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}})
    with pytest.raises(ConfigError, match="offload_optimizer.device nvme needs nvme_path"):
        space({"zero_optimization": {"stage": [2, 3], "offload_optimizer": {"device": ["cpu", "nvme"]}}})
    # stages 1/2 offload to host memory whatever the device, and read no path
    assert space({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "nvme"}}}) \
        .offload_optimizer_choices(2) == ("nvme",)


def test_activation_checkpointing_choices():
    assert space({}).activation_checkpointing_choices == (False,)
    assert space({}, tune_activation_checkpointing=True).activation_checkpointing_choices == (False, True)
    mapped = dict(arg_mappings={"activation_checkpointing": "--gradient_checkpointing"})
    assert space({}, user_args=["--gradient_checkpointing", "true"], **mapped).activation_checkpointing_choices == (True,)
    with pytest.raises(ConfigError, match="not true or false"):
        space({}, user_args=["--gradient_checkpointing", "maybe"], **mapped)


def test_activation_checkpointing_leaves_config_untouched():
    s = space({MBS: 2}, tune_activation_checkpointing=True)
    on, off = s.render(s.trial(0, 2, activation_checkpointing=True)), s.render(s.trial(0, 2))
    assert on == off


# ---------------------------------------------------------------- render
USER_CONFIG = {
    MBS: "auto",
    GAS: "auto",
    "train_batch_size": "auto",
    "fp16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "betas": [0.9, 0.999]}},
    "zero_optimization": {
        "stage": "all",
        "reduce_bucket_size": [5e7, 5e8],
        "sub_group_size": 1e9,
        "offload_optimizer": {"device": ["none", "cpu"], "pin_memory": True},
    },
    "autotuning": {"enabled": True, "fast": False, "arg_mappings": {MBS: "--per_device_train_batch_size"}},
}


def test_render_sets_tuned_values_and_keeps_the_rest():
    user = copy.deepcopy(USER_CONFIG)
    s = TuningSpace.from_config(user, world_size=4, user_args=["--per_device_train_batch_size", "4"])
    assert s.min_micro_batch_size == 4
    trial = s.trial(2, 8, 3, {"overlap_comm": True, "reduce_bucket_size": 500_000_000,
                              "reduce_scatter": False, "allgather_bucket_size": 1_000_000_000,
                              "contiguous_gradients": True}, offload_optimizer="cpu")
    out = s.render(trial)
    assert "autotuning" not in out
    assert (out[MBS], out[GAS]) == (8, 3)
    assert "train_batch_size" not in out  # DeepSpeed derives it: 8 * 3 * 4
    assert out["fp16"] == {"enabled": "auto"}
    assert out["optimizer"]["params"]["betas"] == [0.9, 0.999]
    zero = out["zero_optimization"]
    assert zero["stage"] == 2 and zero["sub_group_size"] == 1e9
    assert zero["reduce_bucket_size"] == 500_000_000 and zero["overlap_comm"] is True
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert user == USER_CONFIG  # the user's dict is untouched


def test_render_base_trial_resolves_lists_to_their_first_value():
    s = TuningSpace.from_config(USER_CONFIG, world_size=2)
    zero = s.render(s.trial(1, 2))["zero_optimization"]
    assert zero["reduce_bucket_size"] == 50_000_000
    assert "offload_optimizer" not in zero  # first of ["none", "cpu"]
    stage0 = s.render(s.trial(0, 2))
    assert stage0["zero_optimization"]["stage"] == 0 and "offload_optimizer" not in stage0["zero_optimization"]


def test_render_returns_independent_copies():
    s = TuningSpace.from_config(USER_CONFIG, world_size=2)
    first = s.render(s.trial(1, 2))
    first["optimizer"]["params"]["lr"] = 99
    first["zero_optimization"]["stage"] = 3
    second = s.render(s.trial(1, 2))
    assert second["optimizer"]["params"]["lr"] == 1e-4 and second["zero_optimization"]["stage"] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.stages = (0,)  # type: ignore[misc]


def test_render_without_zero_section():
    out = space({MBS: 4, "bf16": {"enabled": True}}).render(Trial(0, 4))
    assert out["zero_optimization"] == {"stage": 0}
    assert out["bf16"] == {"enabled": True}


def test_render_rejects_trials_outside_the_space():
    s = space({"zero_optimization": {"stage": 1}})
    with pytest.raises(ValueError, match="stage 2 is not among"):
        s.render(Trial(2, 1))
    with pytest.raises(ValueError, match="reduce_bucket_size is not tuned"):
        s.render(Trial(1, 1, 1, {"reduce_bucket_size": 5}))
    with pytest.raises(ValueError, match="optimizer offload 'cpu'"):
        s.render(Trial(1, 1, offload_optimizer="cpu"))
    with pytest.raises(ValueError, match="exceeds max_train_micro_batch_size_per_gpu"):
        s.render(Trial(1, 2048))


def test_trial_helper_uses_user_values():
    s = space({GAS: 4, "zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}})
    t = s.trial(3, 2)
    assert t.gradient_accumulation_steps == 4 and t.offload_param == "cpu"
    with pytest.raises(TypeError):
        s.trial(3, 2, offload="cpu")


def test_variants_cover_all_dimensions_once():
    s = space({"zero_optimization": {"stage": 3}}, fast=False, tune_offload=True, tune_activation_checkpointing=True)
    trials = s.variants(3, 2, 1)
    assert len(trials) == 144 * 2 * 2 * 2 == len(set(trials))
    assert all(t in s for t in trials)
    assert len(s.variants(3, 2, 1, prune_dead=True)) == 24 * 8


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_rendered_configs_pass_deepspeeds_own_validation(stage, monkeypatch):
    """Every rendered config is accepted by DeepSpeed's config parser (one process)."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from deepspeed.runtime.config import DeepSpeedConfig

    config = {
        MBS: [1, 2],
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {"stage": "all", "offload_optimizer": {"device": ["none", "cpu"], "pin_memory": False},
                              "offload_param": {"device": ["none", "cpu"]},
                              "stage3_prefetch_bucket_size": [1e6, 5e7]},
        "autotuning": {"fast": False},
    }
    s = TuningSpace.from_config(config, world_size=1)
    trials = s.variants(stage, 2, 3)
    for trial in trials[:: max(1, len(trials) // 12)] + [trials[-1]]:
        rendered = s.render(trial)
        ds = DeepSpeedConfig(rendered)
        assert ds.zero_optimization_stage == stage
        assert (ds.train_batch_size, ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps) == (6, 2, 3)
        zero = ds.zero_config
        for key, value in trial.zero_knobs:
            assert getattr(zero, key.removeprefix("stage3_")) == value
        expect_oo = trial.offload_optimizer != "none"
        assert (zero.offload_optimizer is not None and zero.offload_optimizer.device == "cpu") == expect_oo


def test_a_scalar_fixes_a_knob_no_list_can_tune():
    """stage3_max_reuse_distance and sub_group_size are not tuned from lists, but a config's value
    is what the engine runs with, so the model takes it."""
    space = TuningSpace.from_config({"train_micro_batch_size_per_gpu": 1, "zero_optimization": {
        "stage": 3, "stage3_max_reuse_distance": 0, "sub_group_size": 1e8}}, world_size=2)
    fixed = dict(dict(space.fixed_knobs)[3])
    assert (fixed["stage3_max_reuse_distance"], fixed["sub_group_size"]) == (0, 100_000_000)
    with pytest.raises(ConfigError, match="zero_optimization.sub_group_size value -1"):
        TuningSpace.from_config({"zero_optimization": {"stage": 3, "sub_group_size": -1}}, world_size=2)


def test_zero_plus_plus_is_said_to_be_outside_the_model():
    with pytest.warns(ConfigWarning, match=r"ZeRO\+\+ \(zero_hpz_partition_size, zero_quantized_weights\) is not in"):
        space({MBS: 1, "zero_optimization": {"stage": 3, "zero_quantized_weights": True,
                                             "zero_hpz_partition_size": 8}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space({MBS: 1, "zero_optimization": {"stage": 3, "zero_hpz_partition_size": 1,
                                             "zero_quantized_gradients": False}})


def test_the_configs_optimizer_is_the_spaces_and_one_deepspeed_refuses_under_zero_is_said_so():
    sgd = {MBS: 1, "optimizer": {"type": "SGD", "params": {"lr": 0.1, "momentum": 0.9}},
           "zero_optimization": {"stage": "all"}}
    with pytest.raises(ConfigError, match=r"^DeepSpeed refuses optimizer 'SGD' at ZeRO stage 1 unless the config "
                                          r"sets \"zero_allow_untested_optimizer\": true"):
        space(sgd)
    assert space({**sgd, "zero_optimization": {"stage": 0}}).optimizer.algorithm == "sgd_momentum"
    allowed = space({**sgd, "zero_allow_untested_optimizer": True})
    assert allowed.stages == (0, 1, 2, 3) and allowed.optimizer.algorithm == "sgd_momentum"
    assert space({MBS: 1, "optimizer": {"type": "Adagrad"}}).optimizer.algorithm == "adagrad"
    assert space({MBS: 1}).optimizer.algorithm == "adamw"


def test_an_optimizer_outside_the_model_is_predicted_as_adamw_with_a_warning():
    with pytest.warns(ConfigWarning, match="Optimizer 'Lamb' is not in the cost model"):
        assert space({MBS: 1, "optimizer": {"type": "Lamb"}}).optimizer.algorithm == "adamw"
    with pytest.raises(ConfigError, match="needs a \"type\""):
        space({MBS: 1, "optimizer": {"params": {"lr": 1}}})
