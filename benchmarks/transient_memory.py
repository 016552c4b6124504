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

Each reading is the growth of the process's peak resident set (VmHWM, reset before the region)
after freed heap pages are given back; it counts what the region allocates and writes.
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
