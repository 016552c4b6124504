"""Built-in workloads: model presets as data, closed-form counts, and the training program.

``TRAIN_PROGRAM`` is the path of the script the DeepSpeed launcher runs in model mode.
"""

from pathlib import Path

from simtune.workloads.analysis import (
    ForwardFlops,
    ModuleParams,
    flops_per_sample,
    forward_flops,
    idle_elements,
    largest_layer_params,
    module_parameters,
    parameter_count,
    parameter_tensor_numels,
)
from simtune.workloads.presets import (Workload, build_hf_config, build_model, list_presets, load_workload,
                                      workload_from_config)

TRAIN_PROGRAM: Path = Path(__file__).with_name("train.py")

DEFAULT_OPTIMIZER = {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.0}}
"""The optimizer section the training program adds to a config without one, and simtune's own
configs (the search's default, the calibration's engines) use; copy it before changing it."""

__all__ = [
    "DEFAULT_OPTIMIZER",
    "TRAIN_PROGRAM",
    "ForwardFlops",
    "ModuleParams",
    "Workload",
    "build_hf_config",
    "build_model",
    "flops_per_sample",
    "forward_flops",
    "idle_elements",
    "largest_layer_params",
    "list_presets",
    "load_workload",
    "module_parameters",
    "parameter_count",
    "parameter_tensor_numels",
    "workload_from_config",
]
