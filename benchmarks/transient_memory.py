"""Transient memory the memory model charges to the backend and the optimizer, measured on CPU.

Run from the repository root (no GPU needed):

    python benchmarks/transient_memory.py > benchmarks/results/transient_memory.txt

1. gloo's collectives (``torch.distributed`` over two processes on this machine, and one): the
   peak resident memory a ``reduce_scatter_tensor`` and an ``all_reduce`` add above their input
   and output, in units of the input. simtune charges stage 3's reduce-scatter on a staging
   backend (1 + 1/n) inputs (``HardwareSpec.reduce_scatter_staging``, docs/cost-model.md 4).
2. torch's AdamW step (for-loop, foreach and fused implementations) on one flat fp32 tensor, as
   DeepSpeed's stages 1-3 hand it over, and on the same elements in 8 tensors: the peak above the
   parameters, gradients and moments, in units of the largest tensor and of all elements
   (``memory_buffers.OPTIMIZER_TEMPORARIES``).

3. A copy of 64 MiB into a tensor allocated for it (``clone``: above glibc's 32 MiB mmap ceiling,
   mapped afresh) beside a copy into one that exists, on one rank of two threads and on two ranks
   of one thread at once: the difference is the page faults, which simtune charges per byte to
   every allocation of 32 MiB or more (``HardwareSpec.first_touch_s_per_byte``,
   docs/cost-model.md 3.5); calibration measures the same on every rank.

Sections 1 and 2 read the growth of the process's peak resident set (VmHWM, reset before the
region) after freed heap pages are given back; it counts what the region allocates and writes.
Section 3 reads the fastest of 5 repeats after 2 untimed ones.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import sys
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from simtune.calib.workload_measure import PeakMemory

MIB = 2**20
CPU = torch.device("cpu")


def peak_above(region: Callable[[], Any]) -> int:
    with PeakMemory(CPU) as peak:
        region()
    return peak.peak_bytes


def _collective_rank(rank: int, world: int, port: int, elements: int, out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x = torch.ones(elements)
        shard = torch.empty(elements // world)
        dist.barrier()
        scatter = peak_above(lambda: dist.reduce_scatter_tensor(shard, x))
        dist.barrier()
        reduce = peak_above(lambda: dist.all_reduce(x))
        if rank == 0:
            out.put((scatter, reduce))
    finally:
        dist.destroy_process_group()


def collectives(world: int, elements: int) -> tuple[int, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_collective_rank, args=(r, world, port, elements, queue)) for r in range(world)]
    for p in procs:
        p.start()
    result = queue.get(timeout=300)
    for p in procs:
        p.join()
    return result


FRESH_BYTES = 2**26


def _fresh_copy_rank(rank: int, world: int, port: int, threads: int, out: Any) -> None:
    import time

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        src = torch.ones(FRESH_BYTES, dtype=torch.uint8)
        dst = torch.empty_like(src)

        def fastest(fn: Callable[[], Any]) -> float:
            times = []
            for _ in range(7):
                dist.barrier()
                started = time.perf_counter()
                fn()
                times.append(time.perf_counter() - started)
            return min(times[2:])

        copy = fastest(lambda: dst.copy_(src))
        fresh = fastest(lambda: src.clone())
        if rank == 0:
            out.put((copy, fresh))
    finally:
        dist.destroy_process_group()


def fresh_copy(world: int, threads: int) -> tuple[float, float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_fresh_copy_rank, args=(r, world, port, threads, queue)) for r in range(world)]
    for p in procs:
        p.start()
    result = queue.get(timeout=300)
    for p in procs:
        p.join()
    return result


def adamw_step(variant: str, tensors: int, elements: int) -> int:
    params = [torch.nn.Parameter(torch.randn(elements // tensors)) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn_like(p)
    flags = {"for_loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[variant]
    optimizer = torch.optim.AdamW(params, lr=1e-4, **flags)
    optimizer.step()  # the moments are allocated at the first step
    return peak_above(optimizer.step)


def main() -> int:
    print("# command: python benchmarks/transient_memory.py")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}; {datetime.datetime.now().isoformat(timespec='seconds')}")
    print("\n1. gloo collectives: peak resident memory above input and output (rank 0)\n")
    print(f"{'ranks':>5} {'input MiB':>9} | {'reduce_scatter_tensor':>21} {'x input':>8} {'(1+1/n)':>8} | "
          f"{'all_reduce':>10} {'x input':>8}")
    for world in (1, 2):
        for elements in (2**25, 2**27):
            scatter, reduce = collectives(world, elements)
            size = 4 * elements
            print(f"{world:>5} {size // MIB:>9} | {scatter / MIB:>17.0f} MiB {scatter / size:>8.2f} "
                  f"{1 + 1 / world:>8.2f} | {reduce / MIB:>6.0f} MiB {reduce / size:>8.2f}")
    print("\n2. torch AdamW step: peak resident memory above parameters, gradients and moments\n")
    elements = 2**26
    print(f"{'implementation':<14} {'tensors':>7} | {'peak MiB':>8} {'x largest tensor':>16} {'x all elements':>14}")
    for variant in ("for_loop", "foreach", "fused"):
        for tensors in (1, 8):
            extra = adamw_step(variant, tensors, elements)
            print(f"{variant:<14} {tensors:>7} | {extra / MIB:>8.0f} {extra / (4 * elements / tensors):>16.2f} "
                  f"{extra / (4 * elements):>14.2f}")
    print(f"\n3. a {FRESH_BYTES // MIB} MiB copy into a new tensor and into one that exists (rank 0, fastest of 5)\n")
    print(f"{'ranks x threads':>15} | {'copy ms':>8} {'ns/B':>6} | {'fresh ms':>8} {'ns/B':>6} | {'first touch ns/B':>16}")
    for world, threads in ((1, 2), (2, 1)):
        copy, fresh = fresh_copy(world, threads)
        print(f"{f'{world} x {threads}':>15} | {copy * 1e3:>8.2f} {copy / FRESH_BYTES * 1e9:>6.3f} | {fresh * 1e3:>8.2f} "
              f"{fresh / FRESH_BYTES * 1e9:>6.3f} | {(fresh - copy) / FRESH_BYTES * 1e9:>16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
