"""How fast this machine runs now: a fixed single-thread matmul and GELU loop.

A VM's speed drifts between hours and days (the 2-core VMs of benchmarks/results read 46-64 ms,
others two and a half times that), and every time measured on it moves with it. The benchmarks
time the probe around their runs (benchmarks/transfer.py) and the test suite prints it in its
summary (tests/conftest.py), so that times taken on different days can be compared:

    python benchmarks/machine_speed.py
"""

from __future__ import annotations

import statistics
import time


def speed_probe(repeats: int = 5) -> float:
    """Seconds of 100 products of two 256 x 256 fp32 matrices and 100 GELUs over 262,144
    elements at one thread (the median of ``repeats``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, x = torch.randn(256, 256), torch.randn(1 << 18)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(100):
                a @ a
                torch.nn.functional.gelu(x)
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    print(f"machine speed probe: {speed_probe() * 1e3:.1f} ms")
