"""Stale build locks of torch's JIT-compiled extensions (DeepSpeed's ops: ``fused_adam``,
``cpu_adam``, ``deepspeed_shm_comm``, ...).

torch builds an extension under a plain lock file, ``<extensions dir>/<op>/lock``, created with
``O_CREAT | O_EXCL`` and held open by the building process until it removes it; every other
process that loads the op waits, without a time limit, until the file is gone. A build stopped
by a time-out or an interrupt leaves the file behind, and every later launch on that home then
hangs until its own time-out. A lock that no live process has open is such a leftover:
:func:`remove_stale_build_locks` removes it, before a launch and after one is stopped.

The extensions folder is ``$TORCH_EXTENSIONS_DIR/<op>`` when set, else
``${XDG_CACHE_HOME:-~/.cache}/torch_extensions/<py311_cpu, py311_cu121, ...>/<op>``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Mapping

LOCK_NAME = "lock"
EXTENSIONS_DIR_ENV = "TORCH_EXTENSIONS_DIR"


def build_locks(env: Mapping[str, str]) -> list[Path]:
    """Every build lock present in the extensions folder the environment ``env`` gives torch."""
    explicit = env.get(EXTENSIONS_DIR_ENV)
    if explicit:
        return sorted(Path(explicit).expanduser().glob(f"*/{LOCK_NAME}"))
    home = Path(env.get("HOME") or Path.home())
    cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
    return sorted((cache / "torch_extensions").glob(f"*/*/{LOCK_NAME}"))


def files_open_by_live_processes(proc: Path = Path("/proc")) -> set[str]:
    """The paths of the files some process of this machine has open (that this process can see)."""
    paths: set[str] = set()
    for fd_dir in proc.glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                paths.add(os.readlink(fd))
            except OSError:
                continue
    return paths


def remove_stale_build_locks(env: Mapping[str, str], *, why: str) -> list[Path]:
    """Remove the build locks no live process holds, warn about each (``why``: what left it);
    return them."""
    locks = build_locks(env)
    if not locks:
        return []
    held = files_open_by_live_processes()
    removed = []
    for lock in locks:
        if os.path.realpath(lock) in held:
            continue
        try:
            lock.unlink()
        except OSError:
            continue
        removed.append(lock)
        warnings.warn(f"removed the build lock {lock}, which no running process holds ({why}); "
                      f"every launch that loads the op {lock.parent.name} would wait for it forever.", stacklevel=2)
    return removed
