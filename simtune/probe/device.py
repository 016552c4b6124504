"""The accelerator the engine runs on: synchronising, timing a call, reading peak memory.

Two kinds:

- :class:`CudaDevice`: calls are timed with CUDA events (recorded around the call, read after a
  device synchronise at the next step boundary, so timing never serialises the stream); peak
  memory is ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``) since the process
  started.
- :class:`HostDevice` (CPU and other synchronous devices): calls are timed with
  ``time.perf_counter``; peak memory is the process's peak resident set size, ``VmHWM`` in
  ``/proc/self/status`` (what DeepSpeed's CPU accelerator calls ``max_memory_allocated``), since
  the process started. It is never reset, so like the CUDA peak it includes building the model
  and ``deepspeed.initialize``.

A shared launch (:mod:`simtune.probe.serve`) runs several scripts in one process and calls
``reset_peak`` before each: CUDA empties the allocator's cache and restarts its peaks; the host
hands freed heap pages back (glibc ``malloc_trim``) and writes ``5`` to ``/proc/self/clear_refs``,
which sets ``VmHWM`` to the current resident size.
"""

from __future__ import annotations

import ctypes
import resource
import time
from typing import Any


def peak_rss_bytes() -> int:
    """The process's peak resident set size (``VmHWM``), in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def release_free_heap() -> None:
    """Give freed heap pages back to the system (glibc ``malloc_trim``), so that a region's peak
    resident size counts the pages it needs rather than pages an earlier region left behind."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the freed pages stay resident
        pass


def reset_rss_peak() -> None:
    """Start a new peak resident size: freed heap handed back, then ``VmHWM`` set to the current
    resident size (``5`` written to ``/proc/self/clear_refs``)."""
    release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass


class HostDevice:
    kind = "cpu"
    memory_kind = "rss_peak"

    def synchronize(self) -> None:
        pass

    def begin(self) -> float:
        return time.perf_counter()

    def finish(self, token: float) -> float:
        return time.perf_counter() - token

    def seconds(self, handle: float) -> float:
        return handle

    def peak_bytes(self) -> int:
        return peak_rss_bytes()

    def peak_reserved_bytes(self) -> int | None:
        return None

    def allocated_bytes(self) -> int | None:
        """None: the resident set keeps freed heap, so it cannot say what a run left behind."""
        return None

    def reset_peak(self) -> None:
        reset_rss_peak()


class CudaDevice:
    kind = "cuda"
    memory_kind = "cuda_max_allocated"

    def __init__(self) -> None:
        import torch

        self._cuda = torch.cuda

    def synchronize(self) -> None:
        self._cuda.synchronize()

    def begin(self) -> Any:
        event = self._cuda.Event(enable_timing=True)
        event.record()
        return event

    def finish(self, token: Any) -> Any:
        event = self._cuda.Event(enable_timing=True)
        event.record()
        return token, event

    def seconds(self, handle: Any) -> float:
        begin, end = handle
        return begin.elapsed_time(end) / 1000.0

    def peak_bytes(self) -> int:
        return int(self._cuda.max_memory_allocated())

    def peak_reserved_bytes(self) -> int | None:
        return int(self._cuda.max_memory_reserved())

    def allocated_bytes(self) -> int | None:
        """What tensors hold on the device now (the caching allocator's count)."""
        return int(self._cuda.memory_allocated())

    def reset_peak(self) -> None:
        self._cuda.synchronize()
        self._cuda.empty_cache()
        self._cuda.reset_peak_memory_stats()


def current_device() -> HostDevice | CudaDevice:
    """The device DeepSpeed's accelerator runs the engine on."""
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cuda":
        return CudaDevice()
    return HostDevice()
