"""What a search request resolves from the command line, before anything runs (the errors it
raises are asserted end to end in tests/test_cli.py)."""

import warnings

import pytest

from simtune.cli import build_parser
from simtune.search.request import (CPU_MAX_MICRO_BATCH_SIZE, CPU_PROFILE_STEPS, DEFAULT_MODEL, DEFAULT_SEQ_LEN,
                                    SearchFlags, SearchRequest, config_path_in)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def request_of(*argv):
    return SearchRequest.from_flags(SearchFlags.from_namespace(build_parser().parse_args(["search", *argv])))


def test_flags_take_every_search_option_and_nothing_else():
    args = build_parser().parse_args(["search", "--gpus", "2", "--no-fast", "--slurm_option", "qos=high",
                                      "train.py", "--deepspeed", "ds.json"])
    flags = SearchFlags.from_namespace(args)
    assert flags.num_gpus == 2 and flags.fast is False
    assert flags.slurm_options == ("qos=high",) and flags.script == ("train.py", "--deepspeed", "ds.json")
    assert flags.strategy == "simulate" and flags.launcher == "pdsh"


def test_the_default_search_is_the_tiny_model_on_two_cpu_processes(workdir):
    request = request_of("--num_gpus", "2", "--verify-top", "1", "--results_dir", "res")
    assert request.program.mode == "model" and request.program.config_path is None
    assert request.program.args[:4] == ("--model", DEFAULT_MODEL, "--seq-len", str(DEFAULT_SEQ_LEN))
    assert request.program.workload().name == DEFAULT_MODEL
    assert request.resources.world_size == 2
    autotuning = request.autotuning
    assert (autotuning.start_profile_step, autotuning.end_profile_step) == CPU_PROFILE_STEPS
    assert request.space.max_micro_batch_size == CPU_MAX_MICRO_BATCH_SIZE
    assert request.space.stages == (0, 1, 2, 3) and request.precision == "fp32"
    assert autotuning.arg_mappings["activation_checkpointing"] == "--gradient_checkpointing"
    assert not request.predicted_only and request.executor() is not None


def test_predictions_for_a_spec_profile_take_its_hardware_not_this_machines(workdir):
    request = request_of("--verify-top", "0", "--profile", "dgx2-v100-32gb", "--num_nodes", "2",
                         "--results_dir", "res")
    assert request.predicted_only and request.executor() is None
    assert request.resources.accelerator == "cuda"
    assert (request.resources.num_gpus, request.resources.num_nodes, request.resources.world_size) == (16, 2, 32)
    assert request.precision == "fp16"  # V100s have no bf16: the built-in config asks for fp16


def test_the_flags_win_over_the_configs_autotuning_section(workdir):
    (workdir / "ds.json").write_text('{"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 1},'
                                     ' "autotuning": {"metric": "latency", "results_dir": "from_file"}}')
    request = request_of("--deepspeed", "ds.json", "--metric", "throughput", "--num_gpus", "2")
    assert request.autotuning.metric == "throughput" and request.autotuning.results_dir == "from_file"
    assert request.space.stages == (1,)


def test_deepspeeds_torch_autocast_is_the_requests_precision(workdir):
    (workdir / "ds.json").write_text('{"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 1},'
                                     ' "torch_autocast": {"enabled": true}}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the search predicts it
        request = request_of("--deepspeed", "ds.json", "--num_gpus", "2")
    assert request.precision == "bf16+autocast"  # no dtype: torch's default on this CPU machine


@pytest.mark.parametrize("args,expected", [
    (["--deepspeed", "a.json", "--x", "1"], "a.json"),
    (["--deepspeed=b.json"], "b.json"),
    (["--deepspeed", "--deepspeed_config", "c.json"], "c.json"),
    (["--lr", "1"], None),
])
def test_config_path_in_script_args(args, expected):
    assert config_path_in(args) == expected


def test_only_the_simulated_search_of_the_built_in_program_shares_a_launch(workdir):
    (workdir / "ds.json").write_text('{"train_micro_batch_size_per_gpu": 1}')
    (workdir / "train.py").write_text("")
    assert request_of("--num_gpus", "2").shares_launch()
    assert not request_of("--num_gpus", "2", "--no-shared-launch").shares_launch()
    assert not request_of("--num_gpus", "2", "--strategy", "measure").shares_launch()
    assert not request_of("--num_gpus", "2", "train.py", "--deepspeed", "ds.json").shares_launch()


def test_lion_is_refused_where_deepspeeds_cpu_accelerator_would_build_it_on_the_device(workdir):
    """FusedLion has no CPU kernel: on CPU processes Lion runs only offloaded; predicting a GPU
    profile is fine."""
    from simtune.errors import InputError

    (workdir / "ds.json").write_text('{"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "Lion"}}')
    with pytest.raises(InputError, match=r"^Optimizer 'Lion' runs on DeepSpeed's CPU accelerator only offloaded "
                                         r"\(DeepSpeedCPULion\)"):
        request_of("--deepspeed", "ds.json", "--num_gpus", "2")
    request = request_of("--deepspeed", "ds.json", "--verify-top", "0", "--profile", "dgx-a100-80gb")
    assert request.space.optimizer.algorithm == "lion"
    (workdir / "off.json").write_text('{"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "Lion"}, '
                                      '"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}')
    assert request_of("--deepspeed", "off.json", "--num_gpus", "2").space.optimizer.algorithm == "lion"


def test_another_optimizers_verified_errors_are_kept_apart_from_adamws():
    from simtune.search.model_inputs import residual_workload

    assert residual_workload("gpt2@64/fp32#ab12cd34", "adamw") == "gpt2@64/fp32#ab12cd34"
    assert residual_workload("gpt2@64/fp32#ab12cd34", "sgd_momentum") == "gpt2@64/fp32#ab12cd34+sgd_momentum"
