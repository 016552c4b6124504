"""TORCH_CUDA_ARCH_LIST in the form DeepSpeed's op builder parses, in every launch's environment."""

import pytest

from simtune.calibration.launch import build_env
from simtune.runner.arch_list import deepspeed_arch_list, with_readable_arch_list
from simtune.runner.launcher import launch_env
from simtune.runner.resources import Resources


@pytest.mark.parametrize("given, readable", [
    ("9.0a", "9.0"),
    ("8.0 9.0a+PTX", "8.0;9.0+PTX"),
    ("9.0;9.0a", "9.0"),
    ("10.0f;12.0a", "10.0;12.0"),
    ("8.0;9.0", None),
    ("", None),
    (None, None),
])
def test_letter_suffixes_are_dropped(given, readable):
    assert deepspeed_arch_list(given) == readable


@pytest.mark.parametrize("given", ["9.0a", "8.0 9.0a+PTX", "10.0f;12.0a"])
def test_deepspeeds_builder_reads_the_readable_form(given):
    from deepspeed.ops.op_builder.fused_adam import FusedAdamBuilder

    builder = FusedAdamBuilder()
    builder.jit_mode = True
    builder._jit_arch_list = deepspeed_arch_list(given)  # what jit_load sets from the variable
    builder.compute_capability_args()  # raised "invalid literal for int()" on the given form


def test_launches_and_calibration_get_the_readable_form(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert launch_env(Resources.local(num_gpus=1, accelerator="cpu"), tmp_path)["TORCH_CUDA_ARCH_LIST"] == "9.0"
    assert build_env(1, "cuda")["TORCH_CUDA_ARCH_LIST"] == "9.0"
    untouched = {"TORCH_CUDA_ARCH_LIST": "8.0;9.0"}
    assert with_readable_arch_list(untouched) == {"TORCH_CUDA_ARCH_LIST": "8.0;9.0"}
