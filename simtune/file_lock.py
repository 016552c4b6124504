"""Locks that several simtune processes take on one file (POSIX record locks, ``fcntl.lockf``):
held while the process runs and released by the kernel when it ends, even by SIGKILL, so no lock
outlives its holder; unlike ``flock`` a lock is not inherited by a forked child (the study's
writer), which would hold it after its parent is killed. The holder's pid is written in the
file, for the message of the one refused. A process must not open a lock file it holds a second
time: closing that other handle would release the lock."""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class Busy(Exception):
    """The lock is held by another process (``pid``, None when it wrote none)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is held by pid {pid}")
        self.path = path
        self.pid = pid


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


@contextmanager
def exclusive(path: str | os.PathLike, *, wait: bool = True,
              on_wait: Callable[[int | None], None] | None = None) -> Iterator[Path]:
    """Hold the lock file ``path`` (made with its folder when missing) for the ``with`` block;
    with ``wait=False`` raise :class:`Busy` at once when another process holds it, else wait for
    it, after calling ``on_wait(holder's pid)`` when it is held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            if not wait:
                raise Busy(path, _holder(path)) from None
            if on_wait is not None:
                on_wait(_holder(path))
            fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk: the lock holds all the same, only its holder goes unnamed
            pass
        yield path
    finally:
        os.close(handle)  # releases the lock
