"""Sequential writes and reads of the storage ZeRO-Infinity swaps to, as it swaps.

Every rank of the node at once (between barriers) overwrites, then reads back, its own file of
``FILE_BYTES`` under the given folder, as DeepSpeed's swappers give each rank a folder of its own
on one ``nvme_path``. The file is written once before the timed write: a swap file is created in
the first step and overwritten in place at every later one, and a first write also allocates the
file's blocks (on this project's VM it took 1.5-1.8x an overwrite's time:
benchmarks/results/storage_overwrite.txt). Both move blocks of ``BLOCK_BYTES`` (the aio
``block_size``, 1 MiB) from ``QUEUE_DEPTH`` threads at once (the aio ``queue_depth``, 8), with
``O_DIRECT`` where the file system takes it (DeepSpeed opens its swap files so: no page cache;
and it never calls ``fsync``, so neither does this: a flush of the device's own write cache is
not part of a swap) and otherwise through the page cache, written back with ``fsync`` and dropped
(``POSIX_FADV_DONTNEED``) before the read. The node's rate is the bytes its ranks moved over the
slowest rank's time. The files are removed.
"""

from __future__ import annotations

import mmap
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

BLOCK_BYTES = 1 << 20
QUEUE_DEPTH = 8
FILE_BYTES = 1 << 30
QUICK_FILE_BYTES = 256 << 20


def _open(path: Path, flags: int) -> tuple[int, bool]:
    """The file opened with ``O_DIRECT`` where the file system takes it, and whether it did."""
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, flags | direct, 0o600), True
        except OSError:  # tmpfs and some others refuse O_DIRECT
            pass
    return os.open(path, flags, 0o600), False


def _in_threads(work: Callable[[int, mmap.mmap], None]) -> None:
    """``work(thread index, its page-aligned block buffer)`` on QUEUE_DEPTH threads at once."""
    errors: list[BaseException] = []

    def run(index: int) -> None:
        buffer = mmap.mmap(-1, BLOCK_BYTES)  # page-aligned, as O_DIRECT wants
        buffer.write(os.urandom(BLOCK_BYTES))
        try:
            work(index, buffer)
        except BaseException as exc:  # noqa: BLE001 - re-raised below on the calling thread
            errors.append(exc)
        finally:
            buffer.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(QUEUE_DEPTH)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _blocks(index: int, total_blocks: int) -> range:
    """The blocks thread ``index`` moves: a contiguous share of the file."""
    share = -(-total_blocks // QUEUE_DEPTH)
    return range(index * share, min(total_blocks, (index + 1) * share))


def measure_rank(folder: Path, file_bytes: int, barrier: Callable[[], None]) -> dict:
    """This rank's write and read of ``file_bytes`` under ``folder``, each timed from a barrier
    every rank passes to the end of its own I/O."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"swap-{os.getpid()}.bin"
    total_blocks = max(1, file_bytes // BLOCK_BYTES)
    try:
        fd, direct = _open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            write = lambda i, buf: [os.pwrite(fd, buf, b * BLOCK_BYTES) for b in _blocks(i, total_blocks)]  # noqa: E731
            _in_threads(write)  # the first write allocates the file's blocks, as a swap's first step does
            if not direct:
                os.fsync(fd)
            barrier()
            started = time.perf_counter()
            _in_threads(write)  # what every later step does: overwrite the blocks in place
            if not direct:  # through the page cache: until written back, nothing reached the device
                os.fsync(fd)
            write_s = time.perf_counter() - started
        finally:
            os.close(fd)
        fd, _ = _open(path, os.O_RDONLY)
        try:
            if not direct and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read from the device, not the cache
            barrier()
            started = time.perf_counter()
            _in_threads(lambda i, buf: [os.preadv(fd, [buf], b * BLOCK_BYTES) for b in _blocks(i, total_blocks)])
            read_s = time.perf_counter() - started
        finally:
            os.close(fd)
    finally:
        path.unlink(missing_ok=True)
    return {"bytes": total_blocks * BLOCK_BYTES, "write_s": write_s, "read_s": read_s, "direct": direct}


def run(path: str, quick: bool, rank: int, barrier: Callable[[], None]) -> dict:
    """This rank's measurement in a folder of its own under ``path`` (removed after)."""
    folder = Path(path) / f"simtune-nvme-rank{rank}-{os.getpid()}"
    try:
        return measure_rank(folder, QUICK_FILE_BYTES if quick else FILE_BYTES, barrier)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def node_rates(per_rank: list[dict]) -> dict:
    """The node's read and write rates from its ranks' measurements: their bytes over the slowest
    rank's time."""
    moved = sum(r["bytes"] for r in per_rank)
    return {"read_bytes_per_s": moved / max(r["read_s"] for r in per_rank),
            "write_bytes_per_s": moved / max(r["write_s"] for r in per_rank),
            "direct": all(r["direct"] for r in per_rank), "ranks": len(per_rank),
            "bytes_per_rank": per_rank[0]["bytes"]}
