"""Collective timings on all ranks, through deepspeed.comm (what ZeRO calls).

Operations: all_reduce, all_gather_into_tensor, reduce_scatter_tensor and broadcast. The message
size of a point is the TOTAL array in elements (for allgather the gathered output, for
reduce-scatter the input that is scattered), as nccl-tests counts it. Each repeat starts after a
barrier and ends when this rank's call returns and the device is synchronised; rank 0 later keeps,
per repeat, the time of the rank that entered the collective last (see ``run_all``).
"""

from __future__ import annotations

import torch

from simtune.calib.device import TORCH_DTYPES, Device
from simtune.calib.timing import samples_in_turn

CPU_ELEMENTS = [2**15, 2**16, 2**17, 2**18, 2**19, 2**20, 2**21, 2**22]
CPU_ELEMENTS_QUICK = [2**16, 2**18, 2**20, 2**22]
CPU_TAIL_ELEMENTS = 2**25
"""On CPU, one larger message (128 MiB of fp32) for the ops ZeRO sends whole gradients and
parameters through, timed after the others with fewer repeats: beyond the caches and DeepSpeed's
shared-memory buffers a byte costs more than the fitted line says (its own points, ``tail``)."""
TAIL_OPS = ("allreduce", "allgather", "reduce_scatter")
TAIL_OPS_QUICK = ("allreduce",)
CUDA_ELEMENTS = [10**6, 10**7, 5 * 10**7, 10**8, 5 * 10**8, 10**9]
CUDA_ELEMENTS_QUICK = [10**7, 5 * 10**7, 5 * 10**8, 10**9]

OPS = ("allreduce", "allgather", "reduce_scatter", "broadcast")


def _call(dist, op: str, elements: int, dtype: torch.dtype, device: torch.device, group, ranks: int):
    per_rank = elements // ranks
    if op == "allreduce":
        buf = torch.ones(elements, dtype=dtype, device=device)
        return lambda: dist.all_reduce(buf, group=group)
    if op == "allgather":
        out = torch.empty(per_rank * ranks, dtype=dtype, device=device)
        inp = torch.ones(per_rank, dtype=dtype, device=device)
        return lambda: dist.all_gather_into_tensor(out, inp, group=group)
    if op == "reduce_scatter":
        inp = torch.ones(per_rank * ranks, dtype=dtype, device=device)
        out = torch.empty(per_rank, dtype=dtype, device=device)
        return lambda: dist.reduce_scatter_tensor(out, inp, group=group)
    if op == "broadcast":
        buf = torch.ones(elements, dtype=dtype, device=device)
        src = dist.get_global_rank(group, 0) if group is not None else 0
        return lambda: dist.broadcast(buf, src, group=group)
    raise ValueError(op)


def run_group(dist, device: Device, group, ranks: int, dtype_name: str, quick: bool) -> dict:
    """Per-rank samples for every op and size in one process group (combined on rank 0 later)."""
    cuda = device.kind == "cuda"
    if cuda:
        sizes = CUDA_ELEMENTS_QUICK if quick else CUDA_ELEMENTS
    else:
        sizes = CPU_ELEMENTS_QUICK if quick else CPU_ELEMENTS
    warmup, repeats = (2, 10) if quick else (3, 30)
    dtype = TORCH_DTYPES[dtype_name]
    itemsize = torch.empty((), dtype=dtype).element_size()
    counts = [(elements // ranks) * ranks for elements in sizes]
    ops: dict[str, list[dict]] = {}

    def barrier() -> None:
        dist.barrier(group=group)

    for op in OPS:
        calls = [_call(dist, op, elements, dtype, device.torch_device, group, ranks) for elements in counts]
        # sizes in turn within each round, a barrier before each call
        samples = samples_in_turn(calls, device.sync, warmup, repeats, before=barrier)
        ops[op] = [
            {"elements": elements, "bytes": elements * itemsize, "samples_s": series}
            for elements, series in zip(counts, samples)
        ]
        del calls
        if not cuda and op in (TAIL_OPS_QUICK if quick else TAIL_OPS):
            elements = (CPU_TAIL_ELEMENTS // ranks) * ranks
            call = _call(dist, op, elements, dtype, device.torch_device, group, ranks)
            (series,) = samples_in_turn([call], device.sync, 1, 2 if quick else 5, before=barrier)
            ops[op].append({"elements": elements, "bytes": elements * itemsize, "samples_s": series, "tail": True})
            del call
        if cuda:
            torch.cuda.empty_cache()
    return {"ranks": ranks, "dtype": dtype_name, "ops": ops}


def collective_dtype(device: Device) -> str:
    """fp32 on CPU (gloo's fastest reduce path); bf16 on GPUs that have it, else fp16."""
    if device.kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"

