"""Bad inputs refused with one sentence before anything is launched, calibrated or written."""

import json
import time

import pytest

from simtune.cli import main


def error_of(capsys, argv):
    """Run main, require exit code 2 and one error sentence; return it."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("simtune: error: ")]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    return errors[0][len("simtune: error: "):]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


PLANNED = ["search", "--verify-top", "0", "--profile", "dgx-a100-80gb"]


def test_search_refuses_more_gpus_per_node_than_the_profile_has(workdir, capsys):
    message = error_of(capsys, [*PLANNED, "--num_gpus", "100000"])
    assert "has 8 devices per node" in message and "--num_gpus 100000" in message
    assert not (workdir / "autotuning_results").exists()


def test_a_hidden_size_not_divisible_by_the_heads_is_refused(workdir, capsys):
    config = {"model_type": "gpt2", "vocab_size": 1000, "n_layer": 2, "n_embd": 100, "n_head": 3,
              "n_positions": 128}
    (workdir / "config.json").write_text(json.dumps(config))
    for argv in ([*PLANNED, "--model", str(workdir / "config.json")],
                 ["estimate", "--profile", "dgx-a100-80gb", "--model", str(workdir / "config.json")]):
        message = error_of(capsys, argv)
        assert "hidden size 100 is not divisible by the 3 attention heads" in message


def test_report_refuses_an_empty_gpu_count(workdir, capsys):
    message = error_of(capsys, ["report", "--model", "gpt2", "--profile", "dgx-a100-80gb", "--gpus", "8,,16"])
    assert "'8,,16'" in message
    assert not (workdir / "simtune_report").exists()


def test_a_corrupt_profile_is_named_corrupt_with_the_reason(workdir, capsys, monkeypatch):
    folder = workdir / "profiles"
    folder.mkdir()
    (folder / "broken.json").write_text("{not json")
    monkeypatch.setenv("SIMTUNE_PROFILE_PATH", str(folder))
    message = error_of(capsys, ["estimate", "--profile", "broken"])
    assert "'broken' is corrupt" in message and "not valid JSON" in message and "No hardware profile" not in message
    assert main(["profiles"]) == 0
    captured = capsys.readouterr()
    assert "broken.json" in captured.err and "broken.json" not in captured.out


def test_run_with_predictions_for_other_hardware_is_refused_before_the_search(workdir, capsys):
    message = error_of(capsys, [*PLANNED, "--run"])
    assert "--run trains on this machine" in message
    assert not (workdir / "autotuning_results").exists()


# -- calibrate: every check before the launch ----------------------------------------------------
def calibrate_error(capsys, *argv):
    started = time.monotonic()
    message = error_of(capsys, ["calibrate", "--quick", "--gpus", "1", *argv])
    assert time.monotonic() - started < 3.0, "the calibration was launched before the input was checked"
    return message


def test_calibrate_refuses_an_out_that_is_an_existing_file_before_launching(workdir, capsys):
    (workdir / "notes.txt").write_text("x")
    message = calibrate_error(capsys, "--out", str(workdir / "notes.txt"))
    assert "is a file, not a folder" in message


def test_calibrate_refuses_a_malformed_hostfile_before_launching(workdir, capsys):
    (workdir / "hostfile").write_text("localhost slotz=2\n")
    message = calibrate_error(capsys, "--hostfile", str(workdir / "hostfile"))
    assert "line 1 is not 'hostname slots=N'" in message


def test_calibrate_refuses_a_zero_timeout_before_launching(workdir, capsys):
    message = calibrate_error(capsys, "--timeout", "0")
    assert "--timeout must be a positive number of seconds, not 0" in message


def test_calibrate_refuses_an_nvme_path_that_is_not_a_folder_before_launching(workdir, capsys):
    message = calibrate_error(capsys, "--nvme-path", str(workdir / "missing"))
    assert "is not a folder" in message


def test_calibrate_refuses_zero_ranks_without_announcing_a_calibration(workdir, capsys):
    assert main(["calibrate", "--gpus", "0"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["simtune: error: --gpus must be a whole number of at least 1, not 0."]


def test_an_unknown_communication_data_type_is_refused(workdir, capsys):
    config = {"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True}, "communication_data_type": "int8",
              "zero_optimization": {"stage": "all"}}
    (workdir / "ds.json").write_text(json.dumps(config))
    message = error_of(capsys, [*PLANNED, "--model", "gpt2", "--deepspeed", str(workdir / "ds.json")])
    assert message == "communication_data_type must be one of fp32, fp16, bf16, not 'int8'."
    assert not (workdir / "autotuning_results").exists()


def test_an_nvme_offload_at_stage_3_without_its_folder_is_refused(workdir, capsys):
    config = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme"}}}
    (workdir / "ds.json").write_text(json.dumps(config))
    message = error_of(capsys, [*PLANNED, "--model", "gpt2", "--deepspeed", str(workdir / "ds.json")])
    assert message.startswith("zero_optimization.offload_optimizer.device nvme needs nvme_path")
    assert not (workdir / "autotuning_results").exists()


def test_a_pipelined_nvme_swap_short_of_buffers_is_refused(workdir, capsys):
    offload = {"device": "nvme", "nvme_path": str(workdir), "pipeline_read": True}
    config = {"zero_optimization": {"stage": 3, "sub_group_size": 2_000_000, "offload_optimizer": offload}}
    (workdir / "ds.json").write_text(json.dumps(config))
    message = error_of(capsys, [*PLANNED, "--model", "gpt2", "--num_gpus", "8", "--deepspeed", str(workdir / "ds.json")])
    assert message.startswith("zero_optimization.offload_optimizer.buffer_count 4 is too few at stage 3")
    assert message.endswith("so set it to at least 8.")
    assert not (workdir / "autotuning_results").exists()


def test_parameters_on_nvme_short_of_swap_buffers_are_refused(workdir, capsys):
    offload = {"device": "nvme", "nvme_path": str(workdir), "max_in_cpu": 0}
    config = {"zero_optimization": {"stage": 3, "offload_param": offload}}
    (workdir / "ds.json").write_text(json.dumps(config))
    argv = [*PLANNED, "--model", "gpt2", "--num_gpus", "8", "--deepspeed", str(workdir / "ds.json")]
    # gpt2's 25 partitions of 1 MiB or more per rank all stay gathered from forward to backward
    message = error_of(capsys, argv)
    assert message.startswith("zero_optimization.offload_param.buffer_count 5 is too few: DeepSpeed's parameter "
                              "swapper holds 25 partitions at once here")
    assert message.endswith("so set it to at least 25.")
    # with prefetch on (DeepSpeed's default) a spare buffer stops the second step too
    config["zero_optimization"]["offload_param"] = {**offload, "buffer_count": 26}
    (workdir / "ds.json").write_text(json.dumps(config))
    assert "is too many" in error_of(capsys, argv) and "exactly 25" in error_of(capsys, argv)
    # buffers smaller than the largest partition (the token table's 4,824,672 elements) stop it as it starts
    config["zero_optimization"]["offload_param"] = {**offload, "buffer_count": 25, "buffer_size": 1_000_000}
    (workdir / "ds.json").write_text(json.dumps(config))
    assert error_of(capsys, argv).startswith("zero_optimization.offload_param.buffer_size 1,000,000 is too small")
    assert not (workdir / "autotuning_results").exists()


def test_nvme_offload_where_deepspeeds_async_io_op_cannot_be_built_is_refused(workdir, capsys, monkeypatch):
    offload = {"device": "nvme", "nvme_path": str(workdir)}
    config = {"zero_optimization": {"stage": 3, "offload_optimizer": offload}}
    (workdir / "ds.json").write_text(json.dumps(config))
    # the op's builder compiles and links a call of libaio's io_submit with the compiler CC names
    monkeypatch.setenv("CC", "/nonexistent/cc")
    message = error_of(capsys, ["search", "--model", "gpt2-tiny", "--deepspeed", str(workdir / "ds.json")])
    assert message.startswith("Offload to NVMe at stage 3 swaps through DeepSpeed's async_io op, which cannot be "
                              "built here")
    assert message.endswith("or predict without running anything: --verify-top 0.")
    assert not (workdir / "autotuning_results").exists()
