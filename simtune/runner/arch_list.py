"""``TORCH_CUDA_ARCH_LIST`` as DeepSpeed's JIT op builder can read it.

DeepSpeed (0.19) sorts the list's entries by ``int`` of each dotted part before it builds an op
(``op_builder/builder.py``, ``compute_capability_args``), so an architecture-specific entry such
as ``9.0a`` or a family one such as ``10.0f`` stops every build of FusedAdam, CPUAdam and the
rest with "invalid literal for int() with base 10: '0a'". CUDA images for Hopper set exactly
that (an H200 image here had ``TORCH_CUDA_ARCH_LIST=9.0a``), and every experiment then fails
before its first step. The plain ``9.0`` builds the same kernels for these ops (none uses the
``a``-only instructions). This module only reads the standard library: the GPU kit loads it
before any package is installed.
"""

from __future__ import annotations

from typing import MutableMapping, Optional

ARCH_LIST_ENV = "TORCH_CUDA_ARCH_LIST"
PTX = "+PTX"


def deepspeed_arch_list(given: Optional[str]) -> Optional[str]:
    """``given`` with each entry's letter suffixes dropped, duplicates removed and ``;`` between
    entries (``"8.0 9.0a+PTX"`` -> ``"8.0;9.0+PTX"``); None when ``given`` is unset, empty or
    already reads as DeepSpeed needs it."""
    if not given or not given.strip():
        return None
    used: list[str] = []
    for entry in given.replace(" ", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        ptx = entry.endswith(PTX)
        parts = (entry[: -len(PTX)] if ptx else entry).split(".")
        plain = ".".join("".join(ch for ch in part if ch.isdigit()) for part in parts) + (PTX if ptx else "")
        if plain not in used:
            used.append(plain)
    readable = ";".join(used)
    return None if readable == given else readable


def with_readable_arch_list(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """``env`` (changed in place and returned) with :func:`deepspeed_arch_list`'s form of its
    ``TORCH_CUDA_ARCH_LIST``, where that differs."""
    readable = deepspeed_arch_list(env.get(ARCH_LIST_ENV))
    if readable is not None:
        env[ARCH_LIST_ENV] = readable
    return env
