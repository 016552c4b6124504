"""Usable memory, the fixed overhead training cannot use, and copy bandwidth.

CUDA: total device memory, free memory after the CUDA context and the process group exist (what
training can still use), and the caching allocator's slack (reserved minus allocated) after an
allocation pattern of mixed sizes. Copy bandwidth: pinned and pageable host memory to device and
back, and a copy within host memory.

CPU: total RAM, available RAM, and this process's resident set size (RSS) after importing torch
and deepspeed and initialising the process group (the baseline every rank pays before training).
There is no host-device link, so the bandwidth recorded is that of a memory copy in RAM; a copy
into a freshly allocated 64 MiB tensor beside it gives what mapping fresh memory costs, and a copy
whose two buffers take half of one rank's share of the last-level cache (``host_memcpy_cached``)
what a kernel moves over data that stays there.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import torch

from simtune.calib.device import Device
from simtune.calib.timing import measure

CUDA_COPY_BYTES = [2**24, 2**27, 2**29]
CPU_COPY_BYTES = [2**22, 2**24, 2**26]
CPU_FRESH_BYTES = 2**26
"""A copy into a tensor allocated for it (``clone``), beside the copy into one that exists: at 64 MiB,
above glibc's 32 MiB mmap ceiling, every allocation is mapped afresh and pays its page faults."""


CACHED_COPY_BYTES = (2**16, 2**24)
"""Bounds of the cached copy's size (each of its two buffers): a quarter of one rank's share of the
last-level cache, as a power of two, within these."""
CPU_CACHES = Path("/sys/devices/system/cpu")


def last_level_cache_bytes(root: Path = CPU_CACHES) -> int:
    """The host's last-level data cache: the sizes of its distinct instances (one per set of CPUs
    that share it) summed, from Linux's sysfs; 0 where it cannot be read."""
    level_seen, instances = 0, {}
    for index in sorted(root.glob("cpu[0-9]*/cache/index[0-9]*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            size = _cache_size((index / "size").read_text())
            shared = (index / "shared_cpu_list").read_text().strip()
        except (OSError, ValueError):
            continue
        if level > level_seen:
            level_seen, instances = level, {}
        if level == level_seen:
            instances[shared] = size
    return sum(instances.values())


def _cache_size(text: str) -> int:
    """sysfs's size ("32768K", "2M", "512")."""
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    return int(text[:-1] if scale > 1 else text) * scale


def cached_copy_bytes(cache_bytes: int, ranks_per_host: int) -> int:
    """Each buffer of the cached copy: a quarter of one rank's share of the cache (source and
    destination then fill half of it), a power of two within :data:`CACHED_COPY_BYTES`; 0 without
    a cache size."""
    share = cache_bytes // max(1, ranks_per_host)
    if share <= 0:
        return 0
    low, high = CACHED_COPY_BYTES
    return max(low, min(high, 1 << max(0, (share // 4).bit_length() - 1)))


def baseline(device: Device) -> dict:
    """Memory figures taken before any benchmark allocates."""
    vm = psutil.virtual_memory()
    out = {
        "host_total_bytes": vm.total,
        "host_available_bytes": vm.available,
        "rss_bytes": psutil.Process().memory_info().rss,
    }
    if device.kind == "cuda":
        free, total = torch.cuda.mem_get_info(device.torch_device)
        out.update({"device_total_bytes": total, "device_free_bytes": free})
        out["allocator_slack_bytes"] = _allocator_slack(device)
    return out


def _allocator_slack(device: Device) -> int:
    """Reserved-minus-allocated bytes left by a mix of transformer-like tensor sizes."""
    torch.cuda.empty_cache()
    sizes = [3 * 2**20 + 512, 2**20 + 4096, 7 * 2**18, 2**22 + 13, 5 * 2**19] * 8
    kept = []
    for i, numel in enumerate(sizes):
        t = torch.empty(numel, dtype=torch.float16, device=device.torch_device)
        if i % 3:
            kept.append(t)
    slack = torch.cuda.memory_reserved(device.torch_device) - torch.cuda.memory_allocated(device.torch_device)
    del kept
    torch.cuda.empty_cache()
    return int(slack)


def copy_bandwidth(device: Device, quick: bool, ranks_per_host: int = 1) -> dict:
    """Copy timings: pinned host<->device on CUDA, RAM->RAM on CPU. On CUDA also the same copies
    from and to pageable host memory (``h2d_pageable``, ``d2h_pageable``): DeepSpeed's offload
    allocates its host buffers pageable where a config sets ``pin_memory: false`` (0.19.8 defaults
    to true: runtime/zero/offload_config.py), to spare host memory, a blocking copy that changes
    dtype on the way up casts on the host into a new pageable tensor (ZeRO-3's updated partition),
    and a pageable copy goes through the driver's staging buffer; and a RAM->RAM copy
    (``host_memcpy``), the rate of the host's own side of offload (casts of the partition). On
    CPU also the last-level cache's size (``cache_bytes``, the host's) and a copy inside one rank's
    share of it (``host_memcpy_cached``, :func:`cached_copy_bytes`, repeated until each timing
    spans 2 ms; every rank copies at once)."""
    warmup, repeats = (1, 3) if quick else (2, 5)
    points = []
    if device.kind == "cuda":
        points += _host_copies(device, CPU_COPY_BYTES[1:], warmup, repeats)
        for nbytes in CUDA_COPY_BYTES:
            host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            dev = torch.empty(nbytes, dtype=torch.uint8, device=device.torch_device)
            h2d = measure(lambda: dev.copy_(host, non_blocking=True), device.sync, warmup, repeats)
            d2h = measure(lambda: host.copy_(dev, non_blocking=True), device.sync, warmup, repeats)
            d2d_dst = torch.empty_like(dev)
            d2d = measure(lambda: d2d_dst.copy_(dev), device.sync, warmup, repeats)
            pageable = torch.empty(nbytes, dtype=torch.uint8)
            h2d_pageable = measure(lambda: dev.copy_(pageable), device.sync, warmup, repeats)
            d2h_pageable = measure(lambda: pageable.copy_(dev), device.sync, warmup, repeats)
            points += [
                {"direction": "h2d", "bytes": nbytes, **h2d},
                {"direction": "d2h", "bytes": nbytes, **d2h},
                {"direction": "d2d", "bytes": nbytes, **d2d},
                {"direction": "h2d_pageable", "bytes": nbytes, **h2d_pageable},
                {"direction": "d2h_pageable", "bytes": nbytes, **d2h_pageable},
            ]
            del host, dev, d2d_dst, pageable
        torch.cuda.empty_cache()
        return {"kind": "pinned_host_device", "points": points}
    sizes = CPU_COPY_BYTES[1:] if quick else CPU_COPY_BYTES
    points = _host_copies(device, sizes, warmup, repeats, fresh=True)
    cache = last_level_cache_bytes()
    cached = cached_copy_bytes(cache, ranks_per_host)
    if cached:
        src = torch.ones(cached, dtype=torch.uint8)
        dst = torch.empty_like(src)
        stats = measure(lambda: dst.copy_(src), device.sync, warmup, repeats, min_repeat_s=2e-3)
        points.append({"direction": "host_memcpy_cached", "bytes": cached, **stats})
    return {"kind": "cpu_memcpy", "points": points, "cache_bytes": cache}


def _host_copies(device: Device, sizes: list[int], warmup: int, repeats: int, fresh: bool = False) -> list[dict]:
    """RAM->RAM copies (``host_memcpy``) of each size, and with ``fresh`` a copy into a newly
    allocated tensor at :data:`CPU_FRESH_BYTES` (``host_fresh``)."""
    points = []
    for nbytes in sizes:
        src = torch.ones(nbytes, dtype=torch.uint8)
        dst = torch.empty_like(src)
        stats = measure(lambda: dst.copy_(src), device.sync, warmup, repeats)
        points.append({"direction": "host_memcpy", "bytes": nbytes, **stats})
        if fresh and nbytes == CPU_FRESH_BYTES:
            clone = measure(lambda: src.clone(), device.sync, warmup, repeats)
            points.append({"direction": "host_fresh", "bytes": nbytes, **clone})
    return points
