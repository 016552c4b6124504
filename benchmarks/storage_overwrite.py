"""A file's first write against an overwrite of it, as simtune's storage calibration times them.

ZeRO-Infinity creates its swap files in the first step and overwrites them in place at every
later one, so the calibration (:mod:`simtune.calib.nvme`) writes its file once before the timed
write. This times both on this machine, one process, in the calibration's 1 MiB blocks from 8
threads with ``O_DIRECT`` where the file system takes it: the first write of a new file (it
allocates its blocks as it goes) and a second write of the same bytes; then, where DeepSpeed's
async_io op is built, its ``aio_handle`` (DeepSpeed's default aio settings: 1 MiB blocks, queue
depth 8, one thread) writing the same file over and reading it back, from a pageable tensor and
from a page-locked one (``new_cpu_locked_tensor``, as DeepSpeed's swappers allocate their buffers).

    python benchmarks/storage_overwrite.py --folder /tmp [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> int:
    from simtune.calib import nvme

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp", help="a folder on the storage to time")
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib << 20
    blocks = size // nvme.BLOCK_BYTES
    path = Path(args.folder) / f"simtune-overwrite-{os.getpid()}.bin"
    print(f"Command: python benchmarks/storage_overwrite.py --folder {args.folder} --mib {args.mib} "
          f"--rounds {args.rounds}")
    print(f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        for round_index in range(args.rounds):
            path.unlink(missing_ok=True)
            fd, direct = nvme._open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                def write(i: int, buffer) -> None:  # type: ignore[no-untyped-def]
                    for b in nvme._blocks(i, blocks):
                        os.pwrite(fd, buffer, b * nvme.BLOCK_BYTES)

                started = time.perf_counter()
                nvme._in_threads(write)
                first = time.perf_counter() - started
                started = time.perf_counter()
                nvme._in_threads(write)
                second = time.perf_counter() - started
            finally:
                os.close(fd)
            print(f"round {round_index + 1}: O_DIRECT {direct}, {args.mib} MiB: first write {size / first / 1e9:.2f} "
                  f"GB/s, overwrite {size / second / 1e9:.2f} GB/s ({first / second:.2f}x the time)")
        aio_rounds(path, size, args.rounds)
    finally:
        path.unlink(missing_ok=True)
    return 0


def aio_rounds(path: Path, size: int, rounds: int) -> None:
    """DeepSpeed's aio_handle over the same file, where its async_io op is built."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch
    from deepspeed.ops.op_builder import AsyncIOBuilder

    from simtune.calib.optimizer import _op_prebuilt

    reason = _op_prebuilt(AsyncIOBuilder())
    if reason:
        print(f"aio_handle not timed: {reason}")
        return
    handle = AsyncIOBuilder().load(verbose=False).aio_handle(1 << 20, 8, False, True, 1)
    pageable = torch.randint(0, 255, (size,), dtype=torch.uint8)
    locked = handle.new_cpu_locked_tensor(size, torch.empty(0, dtype=torch.uint8))  # as the swappers' buffers
    locked.copy_(pageable)
    for round_index in range(rounds):
        for kind, tensor in (("pageable", pageable), ("page-locked", locked)):
            started = time.perf_counter()
            handle.sync_pwrite(tensor, str(path))
            written = time.perf_counter() - started
            started = time.perf_counter()
            handle.sync_pread(tensor, str(path))
            read = time.perf_counter() - started
            print(f"aio_handle round {round_index + 1}, {kind} tensor: overwrite {size / written / 1e9:.2f} GB/s, "
                  f"read {size / read / 1e9:.2f} GB/s")
    handle.free_cpu_locked_tensor(locked)


if __name__ == "__main__":
    sys.exit(main())
