"""The training precision a DeepSpeed config asks for, as one label.

DeepSpeed trains in 16-bit two ways. Its ``bf16``/``fp16`` sections cast the model to that dtype
and keep fp32 master weights in the optimizer: the label is ``"bf16"`` or ``"fp16"``. Its
``torch_autocast`` section (``{"enabled": true, "dtype": "bfloat16"}``) keeps the model in fp32
and runs its forward inside ``torch.autocast``: the label is the dtype with
:data:`AUTOCAST_SUFFIX`, ``"bf16+autocast"``. Without either it is ``"fp32"``. The label keys
everything measured in that precision (a workload's calibration, the engine costs a profile
learns), so that one precision's measurements never stand in for another's; the cost model
takes the dtype and the autocast switch apart (:func:`autocast_parts`).
"""

from __future__ import annotations

from typing import Any, Mapping

from simtune.errors import ConfigError

AUTOCAST_SUFFIX = "+autocast"

AUTOCAST_DTYPES = {"bf16": ("bf16", "bfloat16", "torch.bfloat16"),
                   "fp16": ("fp16", "float16", "half", "torch.float16")}
"""The dtype names DeepSpeed's ``torch_autocast`` section accepts for each 16-bit precision
(``deepspeed/runtime/config.py`` ``DtypeEnum``)."""

TORCH_DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
"""torch's name of each precision's dtype."""

DEFAULT_AUTOCAST = {"cuda": "fp16", "cpu": "bf16"}
"""The dtype of ``torch.autocast`` when the section names none (``torch.get_autocast_dtype``)."""


COMMUNICATION_PRECISIONS = ("fp32", "fp16", "bf16")
"""The values DeepSpeed's ``communication_data_type`` accepts, in any case
(``deepspeed/runtime/config.py`` ``get_communication_data_type``)."""


def communication_precision_of(ds_config: Mapping[str, Any] | None) -> str | None:
    """The precision a DeepSpeed config reduces gradients in (its top-level
    ``communication_data_type``), None where it sets none (DeepSpeed's default: the gradients' own)."""
    value = (ds_config or {}).get("communication_data_type")
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in COMMUNICATION_PRECISIONS:
        raise ConfigError(f"communication_data_type must be one of {', '.join(COMMUNICATION_PRECISIONS)}, "
                          f"not {value!r}.")
    return value.lower()


def autocast_parts(label: str) -> tuple[str, bool]:
    """``"bf16+autocast"`` -> ``("bf16", True)``; ``"bf16"`` -> ``("bf16", False)``."""
    if label.endswith(AUTOCAST_SUFFIX):
        return label[:-len(AUTOCAST_SUFFIX)], True
    return label, False


def autocast_label(precision: str, deepspeed_autocast: bool) -> str:
    """The label of ``precision`` run through DeepSpeed's ``torch_autocast`` (or not)."""
    return precision + AUTOCAST_SUFFIX if deepspeed_autocast else precision


def torch_autocast_precision(ds_config: Mapping[str, Any], device: str = "cuda") -> str | None:
    """The 16-bit precision of an enabled ``torch_autocast`` section ("bf16" or "fp16"), None
    when there is no such section or it is off or asks for no 16-bit dtype."""
    section = ds_config.get("torch_autocast")
    if not isinstance(section, Mapping) or section.get("enabled") in (None, False, "false"):
        return None
    dtype = section.get("dtype")
    if dtype is None:
        return DEFAULT_AUTOCAST.get(device, "bf16")
    for precision, names in AUTOCAST_DTYPES.items():
        if str(dtype) in names:
            return precision
    return None


def precision_of(ds_config: Mapping[str, Any], device: str = "cuda") -> str:
    """The label of the precision a DeepSpeed config asks for: "bf16" or "fp16" when that section
    is enabled (``"auto"`` counts as enabled, as DeepSpeed's autotuner reads it), else the
    ``torch_autocast`` label on ``device`` ("cuda" or "cpu") when that section is enabled, else
    "fp32"."""
    for name in ("bf16", "fp16"):
        section = ds_config.get(name)
        if isinstance(section, Mapping) and section.get("enabled") not in (None, False, "false"):
            return name
    if isinstance(ds_config.get("bfloat16"), Mapping) and ds_config["bfloat16"].get("enabled"):
        return "bf16"
    autocast = torch_autocast_precision(ds_config, device)
    return autocast_label(autocast, True) if autocast else "fp32"
