"""Ends a launch whose simtune process died: ``python -m simtune.watchdog PID PGID PORT``.

A launch runs in its own session, so nothing ends it when simtune itself is killed (SIGKILL, a
crash): the launcher and its ranks would run on, finish, write their metrics under an exp.json
that still says ``running``, and leave DeepSpeed's /dev/shm buffers behind. The runner starts
this watchdog beside every launch. Every :data:`POLL_S` it checks both: once simtune (``PID``) is
gone it kills the launch's process group (``PGID``) and removes the buffers of its rendezvous
``PORT``; once the group is gone by itself it exits. Imports nothing but the standard library.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

POLL_S = 0.5
SHM_DIR = Path("/dev/shm")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) != "Z"


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[0]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_members(pgid: int) -> bool:
    """Whether a process of the group is alive (not a zombie)."""
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        try:
            if os.getpgid(pid) == pgid and _state(pid) not in ("Z", ""):
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def remove_shm_buffers(port: int, shm_dir: Path = SHM_DIR) -> int:
    """Remove DeepSpeed's shared-memory allreduce buffers of the run on ``port``
    (``deepspeed_allreduce_buffer_<n>_<addr>_<port>_<rank>``, 66 MiB each); returns how many."""
    removed = 0
    for path in shm_dir.glob(f"deepspeed_allreduce_buffer_*_{port}_*"):
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def end_launch(pgid: int, port: int) -> None:
    """Kill what is left of the launch and, once its ranks are gone, remove its buffers."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + 10
    while live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if port:
        remove_shm_buffers(port)


def watch(pid: int, pgid: int, port: int) -> None:
    while group_alive(pgid):
        if not alive(pid):
            end_launch(pgid, port)
            return
        time.sleep(POLL_S)


if __name__ == "__main__":
    watch(*(int(arg) for arg in sys.argv[1:4]))
