"""The precision label of a DeepSpeed config: its 16-bit sections, or its torch_autocast."""

import pytest

from simtune.precision import autocast_label, autocast_parts, precision_of, torch_autocast_precision


def test_deepspeeds_16_bit_sections_win_over_autocast_and_fp32_is_the_rest():
    assert precision_of({"bf16": {"enabled": True}}) == "bf16"
    assert precision_of({"fp16": {"enabled": "auto"}}) == "fp16"
    assert precision_of({"fp16": {"enabled": False}}) == "fp32"
    assert precision_of({}) == "fp32"
    assert precision_of({"bf16": {"enabled": True}, "torch_autocast": {"enabled": True}}) == "bf16"


@pytest.mark.parametrize("dtype, label", [("bfloat16", "bf16+autocast"), ("torch.bfloat16", "bf16+autocast"),
                                          ("bf16", "bf16+autocast"), ("float16", "fp16+autocast"),
                                          ("half", "fp16+autocast"), ("float32", "fp32")])
def test_torch_autocast_names_its_dtype_as_deepspeed_reads_it(dtype, label):
    assert precision_of({"torch_autocast": {"enabled": True, "dtype": dtype}}) == label


def test_without_a_dtype_autocast_takes_torchs_default_for_the_device():
    section = {"torch_autocast": {"enabled": True}}
    assert (precision_of(section, "cuda"), precision_of(section, "cpu")) == ("fp16+autocast", "bf16+autocast")
    assert torch_autocast_precision({"torch_autocast": {"enabled": False, "dtype": "bf16"}}) is None


def test_a_label_comes_apart_into_the_dtype_and_the_switch():
    assert autocast_parts("bf16+autocast") == ("bf16", True) and autocast_parts("fp16") == ("fp16", False)
    assert autocast_label("bf16", True) == "bf16+autocast" and autocast_label("fp32", False) == "fp32"


def test_communication_data_type_is_read_as_deepspeed_reads_it():
    from simtune.errors import ConfigError
    from simtune.precision import communication_precision_of

    assert communication_precision_of({"communication_data_type": "FP32"}) == "fp32"
    assert communication_precision_of({"communication_data_type": None}) is None
    assert communication_precision_of({}) is None and communication_precision_of(None) is None
    with pytest.raises(ConfigError, match="communication_data_type must be one of fp32, fp16, bf16, not 'int8'"):
        communication_precision_of({"communication_data_type": "int8"})
