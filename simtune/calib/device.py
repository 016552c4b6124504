"""The device a rank measures on: CUDA when the launcher gave this rank a GPU, else the CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

from simtune.runner.resources import cpu_model_name


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" or "cpu"
    torch_device: torch.device
    name: str
    sync: Callable[[], None]


def _no_sync() -> None:
    """CPU kernels are synchronous: nothing to wait for."""


def current_device(local_rank: int) -> Device:
    """The device of this rank; DS_ACCELERATOR=cpu forces the CPU even where CUDA exists."""
    use_cuda = os.environ.get("DS_ACCELERATOR", "") != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        return Device(
            kind="cuda",
            torch_device=torch.device("cuda", local_rank),
            name=torch.cuda.get_device_name(local_rank),
            sync=torch.cuda.synchronize,
        )
    return Device(kind="cpu", torch_device=torch.device("cpu"), name=f"CPU {cpu_model_name()}", sync=_no_sync)


def dtype_support(device: Device) -> dict[str, str]:
    """Training dtypes this device runs: "ok" or "unsupported: <why>" per dtype name."""
    support = {"fp32": "ok"}
    if device.kind == "cuda":
        support["fp16"] = "ok"
        support["bf16"] = "ok" if torch.cuda.is_bf16_supported() else "unsupported: no bf16 on this GPU"
        return support
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        bf16_fast = bool(mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bf16_fast = False
    support["bf16"] = "ok" if bf16_fast else "unsupported: oneDNN reports no bf16 support on this CPU"
    try:
        fp16_fast = bool(mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        fp16_fast = False
    # DeepSpeed's CPU accelerator offers fp16 only where oneDNN supports it (same test).
    support["fp16"] = "ok" if fp16_fast else "unsupported: oneDNN reports no fp16 support on this CPU"
    return support


TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
