"""The offload sections' NVMe swap settings as a DeepSpeed config gives them (simtune.nvme_settings)."""

from __future__ import annotations

import pytest

from simtune.errors import ConfigError
from simtune.nvme_settings import NvmeSwapSettings
from simtune.space import TuningSpace


def test_absent_keys_take_deepspeeds_defaults():
    assert NvmeSwapSettings.from_ds_config(None) == NvmeSwapSettings()
    defaults = NvmeSwapSettings.from_ds_config({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme"}}})
    assert defaults == NvmeSwapSettings(optimizer_buffer_count=4, pipeline_read=False, pipeline_write=False,
                                        param_buffer_count=5, param_buffer_size=100_000_000, max_in_cpu=1_000_000_000)


def test_each_key_is_read_from_its_own_section():
    config = {"zero_optimization": {
        "offload_optimizer": {"device": "nvme", "buffer_count": 8, "pipeline_read": True, "pipeline_write": False},
        "offload_param": {"device": "nvme", "buffer_count": 6, "buffer_size": 2e8, "max_in_cpu": 0}}}
    settings = NvmeSwapSettings.from_ds_config(config)
    assert settings == NvmeSwapSettings(optimizer_buffer_count=8, pipeline_read=True, param_buffer_count=6,
                                        param_buffer_size=200_000_000, max_in_cpu=0)
    assert isinstance(settings.param_buffer_size, int)
    # the same key in the other section is not read
    only_param = NvmeSwapSettings.from_ds_config({"zero_optimization": {"offload_param": {"buffer_count": 9}}})
    assert only_param.optimizer_buffer_count == 4 and only_param.param_buffer_count == 9


@pytest.mark.parametrize(("section", "key", "value", "says"), [
    ("offload_optimizer", "pipeline_read", "yes", "zero_optimization.offload_optimizer.pipeline_read must be true or false"),
    ("offload_optimizer", "buffer_count", -1, "zero_optimization.offload_optimizer.buffer_count must be a whole number"),
    ("offload_param", "buffer_size", 1.5, "zero_optimization.offload_param.buffer_size must be a whole number"),
    ("offload_param", "max_in_cpu", True, "zero_optimization.offload_param.max_in_cpu must be a whole number"),
])
def test_a_value_of_the_wrong_kind_is_refused_in_one_sentence(section, key, value, says):
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        NvmeSwapSettings.from_ds_config({"zero_optimization": {section: {key: value}}})


def test_the_tuning_space_carries_them():
    config = {"zero_optimization": {"stage": 3, "offload_optimizer": {
        "device": "nvme", "nvme_path": "/local_nvme", "pipeline_write": True}}}
    space = TuningSpace.from_config(config, world_size=8)
    assert space.nvme_swap.pipeline_write and space.swaps_optimizer_to_nvme
    plain = TuningSpace.from_config({"zero_optimization": {"stage": 3}}, world_size=8)
    assert plain.nvme_swap == NvmeSwapSettings() and not plain.swaps_optimizer_to_nvme
    # stages 1/2 take an NVMe device as host memory: nothing swaps
    staged = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "nvme"}}}
    assert not TuningSpace.from_config(staged, world_size=8).swaps_optimizer_to_nvme
