"""The copy timings of the calibration: on CUDA, pinned and pageable host memory side by side."""

import pytest

from simtune.calib.device import current_device
from simtune.calib.memory import CUDA_COPY_BYTES, copy_bandwidth


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
    assert {p["direction"] for p in copies["points"]} == {"host_memcpy", "host_fresh"}
