"""What a DeepSpeed config's offload sections say about swapping to NVMe (``device: nvme``):
the settings ZeRO-Infinity's swappers run with, DeepSpeed 0.19.8's defaults where a key is
absent (deepspeed/runtime/zero/offload_config.py), read by the cost model
(:mod:`simtune.model.nvme_swap`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from simtune.errors import ConfigError

_COUNTS = {"optimizer_buffer_count": ("offload_optimizer", "buffer_count"),
           "param_buffer_count": ("offload_param", "buffer_count"),
           "param_buffer_size": ("offload_param", "buffer_size"),
           "max_in_cpu": ("offload_param", "max_in_cpu")}
_FLAGS = {"pipeline_read": ("offload_optimizer", "pipeline_read"),
          "pipeline_write": ("offload_optimizer", "pipeline_write")}


@dataclass(frozen=True)
class NvmeSwapSettings:
    """The offload sections' swap settings, with DeepSpeed 0.19.8's defaults."""

    optimizer_buffer_count: int = 4
    """``offload_optimizer.buffer_count``: page-locked fp32 swap buffers, each the size of the
    largest optimizer sub-group."""
    pipeline_read: bool = False
    """``offload_optimizer.pipeline_read``: read the next sub-group while this one steps."""
    pipeline_write: bool = False
    """``offload_optimizer.pipeline_write``: write a stepped sub-group back while the next one is
    read and stepped."""
    param_buffer_count: int = 5
    param_buffer_size: int = 100_000_000
    """``offload_param.buffer_count`` and ``buffer_size`` (elements): its page-locked swap buffers."""
    max_in_cpu: int = 1_000_000_000
    """``offload_param.max_in_cpu``: partition elements kept in host memory, the rest on NVMe."""

    def __post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"NvmeSwapSettings.{name} must be a whole number of at least 0, got {value!r}.")

    @classmethod
    def from_ds_config(cls, ds_config: Mapping[str, Any] | None) -> NvmeSwapSettings:
        """The settings a DeepSpeed config's ``zero_optimization`` offload sections give; a value
        of the wrong kind is refused in one sentence naming its key."""
        zero = (ds_config or {}).get("zero_optimization")
        values: dict[str, Any] = {}
        for name in (f.name for f in fields(cls)):
            section, key = _COUNTS.get(name) or _FLAGS[name]
            block = zero.get(section) if isinstance(zero, Mapping) else None
            if not isinstance(block, Mapping) or key not in block:
                continue
            value = block[key]
            if name in _FLAGS:
                if not isinstance(value, bool):
                    raise ConfigError(f"zero_optimization.{section}.{key} must be true or false, not {value!r}.")
            else:
                whole = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
                if not whole or value < 0:
                    raise ConfigError(f"zero_optimization.{section}.{key} must be a whole number of at least 0, "
                                      f"not {value!r}.")
                value = int(value)
            values[name] = value
        return cls(**values)
