import json
import warnings

import pytest

from simtune.dsconfig import (
    AutotuningConfig,
    ConfigWarning,
    load_ds_config,
    parse_size_bytes,
)
from simtune.errors import ConfigError, SimtuneError


def _one_sentence(message: str) -> bool:
    body = message.rstrip(".")
    return message.endswith(".") and ". " not in body and "\n" not in message


# ---------------------------------------------------------------- load_ds_config
def test_load_reads_object(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}}))
    assert load_ds_config(path) == {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}}


def test_load_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as err:
        load_ds_config(path)
    assert str(path) in str(err.value) and "does not exist" in str(err.value)
    assert _one_sentence(str(err.value))


def test_load_malformed_json_gives_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "train_micro_batch_size_per_gpu": 4,\n  "fp16": {"enabled": true,}\n}\n')
    with pytest.raises(ConfigError) as err:
        load_ds_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "line 3" in message and "column" in message
    assert _one_sentence(message)
    assert isinstance(err.value, SimtuneError)


@pytest.mark.parametrize("text,kind", [("[1, 2]", "a list"), ("3", "a number"), ("null", "null")])
def test_load_rejects_non_object_top_level(tmp_path, text, kind):
    path = tmp_path / "list.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=kind) as err:
        load_ds_config(path)
    assert str(path) in str(err.value)


def test_load_directory(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        load_ds_config(tmp_path)


# ---------------------------------------------------------------- defaults
def test_defaults_match_spec():
    cfg = AutotuningConfig.from_dict(None)
    assert cfg == AutotuningConfig()
    assert cfg.enabled is False
    assert cfg.results_dir == "autotuning_results"
    assert cfg.exps_dir == "autotuning_exps"
    assert cfg.overwrite is False
    assert cfg.metric == "throughput"
    assert (cfg.start_profile_step, cfg.end_profile_step) == (3, 5)
    assert cfg.fast is True
    assert cfg.max_train_batch_size is None
    assert cfg.mp_size == 1
    assert cfg.num_tuning_micro_batch_sizes == 3
    assert cfg.tuner_type == "gridsearch"
    assert (cfg.tuner_early_stopping, cfg.tuner_num_trials) == (5, 50)
    assert cfg.arg_mappings is None
    assert (cfg.min_train_micro_batch_size_per_gpu, cfg.max_train_micro_batch_size_per_gpu) == (1, 1024)
    assert cfg.verify_top == 3
    assert cfg.profile is None
    assert cfg.search_trials == 200
    assert cfg.experiment_timeout_s == 600
    assert cfg.memory_budget_bytes is None
    assert cfg.tune_offload is False and cfg.tune_activation_checkpointing is False


def test_values_are_read():
    cfg = AutotuningConfig.from_dict(
        {
            "enabled": True,
            "fast": False,
            "metric": "latency",
            "start_profile_step": 2,
            "end_profile_step": 4,
            "max_train_batch_size": 512,
            "mp_size": 2,
            "tuner_type": "model_based",
            "verify_top": 5,
            "memory_budget_bytes": "800MiB",
            "tune_offload": True,
            "experiment_timeout_s": 30,
        }
    )
    assert cfg.enabled and not cfg.fast
    assert cfg.metric == "latency" and cfg.metric_higher_is_better is False
    assert (cfg.start_profile_step, cfg.end_profile_step) == (2, 4)
    assert cfg.max_train_batch_size == 512 and cfg.mp_size == 2
    assert cfg.tuner_type == "model_based"
    assert cfg.verify_top == 5
    assert cfg.memory_budget_bytes == 800 * 2**20
    assert cfg.tune_offload
    assert cfg.experiment_timeout_s == 30.0


def test_config_is_frozen_and_hashable():
    cfg = AutotuningConfig.from_dict({"arg_mappings": {"gradient_accumulation_steps": "--gas"}})
    with pytest.raises(AttributeError):
        cfg.metric = "latency"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.arg_mappings["x"] = "--x"  # type: ignore[index]
    assert hash(cfg) == hash(AutotuningConfig.from_dict({"arg_mappings": {"gradient_accumulation_steps": "--gas"}}))


# ---------------------------------------------------------------- metric
@pytest.mark.parametrize(
    "given,expected,higher,key",
    [
        ("throughput", "throughput", True, "throughput"),
        ("Latency", "latency", False, "latency"),
        ("flops", "FLOPS", True, "FLOPS_per_gpu"),
        ("FLOPS", "FLOPS", True, "FLOPS_per_gpu"),
        ("Flops", "FLOPS", True, "FLOPS_per_gpu"),
    ],
)
def test_metric_names(given, expected, higher, key):
    cfg = AutotuningConfig.from_dict({"metric": given})
    assert cfg.metric == expected
    assert cfg.metric_higher_is_better is higher
    assert cfg.metric_key == key


def test_unknown_metric():
    with pytest.raises(ConfigError, match="metric 'speed' is unknown") as err:
        AutotuningConfig.from_dict({"metric": "speed"})
    assert _one_sentence(str(err.value))


def test_unknown_tuner_type():
    with pytest.raises(ConfigError, match="tuner_type 'bayes' is unknown") as err:
        AutotuningConfig.from_dict({"tuner_type": "bayes"})
    assert _one_sentence(str(err.value))


@pytest.mark.parametrize("tuner", ["gridsearch", "random", "model_based", "Random"])
def test_known_tuner_types(tuner):
    assert AutotuningConfig.from_dict({"tuner_type": tuner}).tuner_type == tuner.lower()


# ---------------------------------------------------------------- profile steps and counts
def test_end_before_start():
    with pytest.raises(ConfigError, match=r"end_profile_step \(2\) must not be smaller than start_profile_step \(4\)"):
        AutotuningConfig.from_dict({"start_profile_step": 4, "end_profile_step": 2})


def test_equal_steps_allowed():
    cfg = AutotuningConfig.from_dict({"start_profile_step": 4, "end_profile_step": 4})
    assert cfg.start_profile_step == cfg.end_profile_step == 4


def test_start_step_must_be_at_least_one():
    with pytest.raises(ConfigError, match="start_profile_step must be a positive integer"):
        AutotuningConfig.from_dict({"start_profile_step": 0})


@pytest.mark.parametrize(
    "key", ["num_tuning_micro_batch_sizes", "tuner_num_trials", "tuner_early_stopping", "mp_size",
            "search_trials", "max_train_batch_size"]
)
@pytest.mark.parametrize("bad", [0, -3, 2.5, "4", True])
def test_non_positive_counts(key, bad):
    with pytest.raises(ConfigError, match=f"{key} must be a positive integer"):
        AutotuningConfig.from_dict({key: bad})


def test_verify_top_may_be_zero_but_not_negative():
    assert AutotuningConfig.from_dict({"verify_top": 0}).verify_top == 0
    for bad in (-1, 2.5, "4", True):
        with pytest.raises(ConfigError, match="verify_top must be a whole number of at least 0"):
            AutotuningConfig.from_dict({"verify_top": bad})


def test_confirm_close_calls_defaults_to_none_and_may_not_be_negative():
    assert AutotuningConfig.from_dict({}).confirm_close_calls == 0
    assert AutotuningConfig.from_dict({"confirm_close_calls": 2}).confirm_close_calls == 2
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ConfigError, match="confirm_close_calls must be a whole number of at least 0"):
            AutotuningConfig.from_dict({"confirm_close_calls": bad})


def test_integral_float_counts_accepted():
    assert AutotuningConfig.from_dict({"max_train_batch_size": 1e3}).max_train_batch_size == 1000


def test_min_above_max_micro_batch():
    with pytest.raises(ConfigError, match="max_train_micro_batch_size_per_gpu"):
        AutotuningConfig.from_dict({"min_train_micro_batch_size_per_gpu": 8, "max_train_micro_batch_size_per_gpu": 4})


@pytest.mark.parametrize("key", ["fast", "overwrite", "enabled", "tune_offload"])
def test_booleans_must_be_booleans(key):
    with pytest.raises(ConfigError, match=f"{key} must be true or false"):
        AutotuningConfig.from_dict({key: "yes"})


def test_empty_results_dir():
    with pytest.raises(ConfigError, match="results_dir must be a non-empty folder path"):
        AutotuningConfig.from_dict({"results_dir": ""})


@pytest.mark.parametrize("bad", [0, -1, "soon", True])
def test_bad_timeout(bad):
    with pytest.raises(ConfigError, match="experiment_timeout_s"):
        AutotuningConfig.from_dict({"experiment_timeout_s": bad})


def test_section_not_an_object():
    with pytest.raises(ConfigError, match="must be a JSON object, not a list"):
        AutotuningConfig.from_dict([1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------- arg_mappings
def test_arg_mappings_keys_and_values_stripped():
    cfg = AutotuningConfig.from_dict(
        {
            "arg_mappings": {
                "train_micro_batch_size_per_gpu": " --per_device_train_batch_size",
                "gradient_accumulation_steps ": "--gradient_accumulation_steps ",
            }
        }
    )
    assert dict(cfg.arg_mappings) == {
        "train_micro_batch_size_per_gpu": "--per_device_train_batch_size",
        "gradient_accumulation_steps": "--gradient_accumulation_steps",
    }
    assert cfg.arg_flag("gradient_accumulation_steps") == "--gradient_accumulation_steps"
    assert cfg.arg_flag("zero_optimization") is None


@pytest.mark.parametrize(
    "bad",
    [
        ["--bs"],
        "--bs",
        {"train_micro_batch_size_per_gpu": 4},
        {"train_micro_batch_size_per_gpu": "bs"},
        {"train_micro_batch_size_per_gpu": "--a --b"},
        {"  ": "--bs"},
    ],
)
def test_arg_mappings_must_map_names_to_flags(bad):
    with pytest.raises(ConfigError, match="arg_mappings") as err:
        AutotuningConfig.from_dict({"arg_mappings": bad})
    assert "\n" not in str(err.value)


def test_arg_mappings_conflicting_duplicate_after_strip():
    with pytest.raises(ConfigError, match="maps \"gradient_accumulation_steps\" twice"):
        AutotuningConfig.from_dict(
            {"arg_mappings": {"gradient_accumulation_steps": "--gas", "gradient_accumulation_steps ": "--ga"}}
        )


def test_section_keys_with_stray_whitespace():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = AutotuningConfig.from_dict({" metric ": "latency", "fast ": False})
    assert cfg.metric == "latency" and cfg.fast is False


# ---------------------------------------------------------------- unknown keys
def test_unknown_keys_warn_and_are_ignored():
    with pytest.warns(ConfigWarning, match="Unknown key \"tuner_tipe\""):
        cfg = AutotuningConfig.from_dict({"tuner_tipe": "random"})
    assert cfg.tuner_type == "gridsearch"


def test_deepspeed_only_keys_accepted_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutotuningConfig.from_dict({"metric_path": "/x/metrics.json", "model_info": {"profile": True},
                                    "model_info_path": "/x/mi.json", "min_train_batch_size": 1})


# ---------------------------------------------------------------- overrides
def test_cli_value_wins_over_file():
    cfg = AutotuningConfig.from_dict({"metric": "latency", "verify_top": 2, "overwrite": True})
    out = cfg.with_overrides(metric="flops", verify_top=None, overwrite=False, memory_budget_bytes="1.5GB")
    assert out.metric == "FLOPS"
    assert out.verify_top == 2  # None: flag not given, the file's value stays
    assert out.overwrite is False
    assert out.memory_budget_bytes == 1_500_000_000
    assert cfg.metric == "latency"  # the original is unchanged


def test_overrides_are_validated():
    with pytest.raises(ConfigError, match="unknown"):
        AutotuningConfig().with_overrides(metric="speed")
    with pytest.raises(ConfigError, match="end_profile_step"):
        AutotuningConfig().with_overrides(start_profile_step=9)


def test_override_of_unknown_field_is_a_programming_error():
    with pytest.raises(TypeError):
        AutotuningConfig().with_overrides(metrik="latency")


def test_to_dict_round_trip():
    cfg = AutotuningConfig.from_dict({"arg_mappings": {"a": "--a"}, "metric": "flops", "tune_offload": True})
    data = cfg.to_dict()
    json.dumps(data)
    assert AutotuningConfig.from_dict(data) == cfg


# ---------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    "text,expected",
    [
        ("1.5GB", 1_500_000_000),
        ("800MiB", 800 * 2**20),
        ("2 GiB", 2 * 2**30),
        ("512kb", 512_000),
        ("1000", 1000),
        ("1e9", 1_000_000_000),
        (123456, 123456),
        (2e9, 2_000_000_000),
        ("1TiB", 2**40),
    ],
)
def test_parse_size(text, expected):
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize("bad", ["1.5 parsecs", "GB", "", "-1GB", 0, -5, True, None, [1]])
def test_parse_size_rejects(bad):
    with pytest.raises(ConfigError, match="memory_budget_bytes"):
        parse_size_bytes(bad)


def test_gradient_clipping_is_on_above_zero_or_auto():
    from simtune.dsconfig import clips_gradients

    assert clips_gradients({"gradient_clipping": 1.0}) and clips_gradients({"gradient_clipping": "auto"})
    assert not clips_gradients({"gradient_clipping": 0}) and not clips_gradients({}) and not clips_gradients(None)
    for bad in (-1, "yes", True):
        with pytest.raises(ConfigError, match="gradient_clipping must be a number of at least 0"):
            clips_gradients({"gradient_clipping": bad})


def test_offload_pins_its_host_memory_unless_the_section_says_false():
    from simtune.dsconfig import pins_offload_memory

    zero = {"offload_optimizer": {"device": "cpu", "pin_memory": False}, "offload_param": {"device": "cpu"}}
    config = {"zero_optimization": zero}
    assert not pins_offload_memory(config, "offload_optimizer") and pins_offload_memory(config, "offload_param")
    assert pins_offload_memory({}, "offload_optimizer") and pins_offload_memory(None, "offload_param")
    with pytest.raises(ConfigError, match="zero_optimization.offload_param.pin_memory must be true or false, not 'yes'"):
        pins_offload_memory({"zero_optimization": {"offload_param": {"pin_memory": "yes"}}}, "offload_param")
