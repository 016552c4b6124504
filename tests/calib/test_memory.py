"""The copy timings of the calibration: on CUDA, pinned and pageable host memory side by side; on
CPU a copy within RAM and one inside a rank's share of the last-level cache."""

import pytest

from simtune.calib.device import current_device
from simtune.calib.memory import (CACHED_COPY_BYTES, CUDA_COPY_BYTES, cached_copy_bytes, copy_bandwidth,
                                  last_level_cache_bytes)


@pytest.mark.gpu
def test_cuda_copies_are_timed_from_pinned_and_pageable_host_memory():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    copies = copy_bandwidth(current_device(0), quick=True)
    assert copies["kind"] == "pinned_host_device"
    by_direction = {(p["direction"], p["bytes"]): p for p in copies["points"]}
    for nbytes in CUDA_COPY_BYTES:
        for direction in ("h2d", "d2h", "d2d", "h2d_pageable", "d2h_pageable"):
            assert by_direction[(direction, nbytes)]["min_s"] > 0, direction
    largest = CUDA_COPY_BYTES[-1]
    # the driver stages a pageable copy through pinned memory: never faster than a pinned one
    assert by_direction[("h2d_pageable", largest)]["min_s"] >= 0.9 * by_direction[("h2d", largest)]["min_s"]


def test_cpu_copies_record_no_pageable_points():
    copies = copy_bandwidth(current_device(0), quick=True)
    if copies["kind"] != "cpu_memcpy":
        pytest.skip("a CUDA device is present")
    directions = {p["direction"] for p in copies["points"]}
    assert directions - {"host_memcpy_cached"} == {"host_memcpy", "host_fresh"}
    assert ("host_memcpy_cached" in directions) == (copies["cache_bytes"] > 0)


def _cache(root, cpu: int, index: int, level: int, kind: str, size: str, shared: str) -> None:
    folder = root / f"cpu{cpu}" / "cache" / f"index{index}"
    folder.mkdir(parents=True)
    for name, text in (("level", str(level)), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        (folder / name).write_text(text + "\n")


def test_the_last_level_cache_sums_its_instances_once_each(tmp_path):
    # two sockets of two cores: a private L1 (data and instruction) and L2 per core, an L3 per socket
    for cpu in range(4):
        socket = "0-1" if cpu < 2 else "2-3"
        _cache(tmp_path, cpu, 0, 1, "Data", "32K", str(cpu))
        _cache(tmp_path, cpu, 1, 1, "Instruction", "32K", str(cpu))
        _cache(tmp_path, cpu, 2, 2, "Unified", "1024K", str(cpu))
        _cache(tmp_path, cpu, 3, 3, "Unified", "16M", socket)
    assert last_level_cache_bytes(tmp_path) == 2 * 16 * 2**20
    assert last_level_cache_bytes(tmp_path / "none") == 0


def test_the_cached_copy_fills_half_a_ranks_share_within_bounds():
    low, high = CACHED_COPY_BYTES
    assert cached_copy_bytes(32 * 2**20, 2) == 4 * 2**20  # 16 MiB each: two 4 MiB buffers
    assert cached_copy_bytes(30 * 2**20, 2) == 2 * 2**20  # a power of two at most a quarter
    assert cached_copy_bytes(2**20, 64) == low and cached_copy_bytes(2**30, 1) == high
    assert cached_copy_bytes(0, 2) == 0
