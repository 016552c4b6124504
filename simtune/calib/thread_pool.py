"""What waking a throttled OpenMP pool adds to a parallel CPU kernel.

torch's CPU kernels split work above its grain size (32,768 elements) over GNU OpenMP
(libgomp) threads. An idle libgomp worker spins about 300,000 iterations before it sleeps, unless
the process has more OpenMP threads than CPUs: then it spins 100 and sleeps (``do_spin`` in
libgomp's config/linux/wait.h, the counts in env.c for an unset OMP_WAIT_POLICY). A gloo
all-gather of a tensor above the grain size runs torch copies on the process group's own
thread, which gives that thread an OpenMP team of its own for as long as it lives: from then on
each parallel kernel of a rank with two or more threads wakes its worker from a futex sleep.
ZeRO-3 all-gathers parameters in every step (benchmarks/results/openmp_wakeups.txt).

A matrix product pays more than the copy (benchmarks/results/openmp_wakeups.txt, part 1b: at two
threads, in fresh processes, bert-tiny's products 111-180 us, a 512^3 one 323-340, the copy about
40; openmp_wakeups_calibration.txt gives this function's own reading), so both are timed.

On rank 0, at two threads: a 65,536-element copy and the products of :data:`PRODUCT_SHAPES`, each
after a busy gap of 20 us (a kernel's dispatch) or 200 us (a hook's Python between two kernels),
the gaps in turn, timed alone and after one all-gather on a group of rank 0 alone (the medians
over both gaps). The other ranks wait at the barrier. Rank 0 returns to its own thread count and
drops the group (its thread, and the team with it, end).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch

from simtune.calib.device import Device
from simtune.calib.timing import stats

THREADS = 2
ELEMENTS = 1 << 16
GAPS_S = (20e-6, 200e-6)
COPIES = 200
PRODUCT_SHAPES = ((512, 128, 128), (512, 128, 512), (512, 512, 512))
"""(rows, depth, cols) of the products timed: a small transformer's linear layers at 512 tokens
(hidden 128, MLP 512) and a larger one, 4.2 to 134 MFLOPs."""
PRODUCTS = 100


def timed_calls(call: Callable[[], object], count: int, gaps_s: tuple[float, ...] = GAPS_S) -> list[float]:
    """Seconds of ``count`` calls of ``call``, each after a busy gap (``gaps_s`` in turn)."""
    times = []
    for i in range(count):
        end = time.perf_counter() + gaps_s[i % len(gaps_s)]
        while time.perf_counter() < end:
            pass
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def timed_copies(x: torch.Tensor, y: torch.Tensor, count: int, gaps_s: tuple[float, ...] = GAPS_S) -> list[float]:
    """Seconds of ``count`` copies of ``y`` into ``x``, each after a busy gap (``gaps_s`` in turn)."""
    return timed_calls(lambda: x.copy_(y), count, gaps_s)


def _products() -> list[tuple[tuple[int, int, int], Callable[[], object]]]:
    """Each shape of :data:`PRODUCT_SHAPES` and a call running it as a linear layer does."""
    calls = []
    for rows, depth, cols in PRODUCT_SHAPES:
        a, w = torch.randn(rows, depth), torch.randn(cols, depth)
        calls.append(((rows, depth, cols), lambda a=a, w=w: torch.mm(a, w.t())))
    return calls


def _timed_products(calls: list, count: int) -> list[list[float]]:
    """Each product's seconds over ``count`` calls, after 10 untimed ones."""
    out = []
    for _, call in calls:
        timed_calls(call, 10)
        out.append(timed_calls(call, count))
    return out


def wake_cost(dist: Any, device: Device, rank: int, quick: bool) -> Optional[dict]:
    """Every rank calls this (the group is created collectively); rank 0 returns
    ``{"threads", "elements", "alone", "throttled", "products"}`` (each a :func:`stats` of the
    copy's seconds; ``products`` a list of ``{"rows", "depth", "cols", "alone", "throttled"}``),
    the others None. Only on CPU, and where rank 0 may run on two CPUs or more."""
    if device.kind != "cpu":
        return None
    from simtune.runner.launcher import usable_cores  # a rank bound to one core would time the sharing

    group = dist.new_group([0])
    result = None
    if rank == 0 and usable_cores() >= THREADS:
        threads = torch.get_num_threads()
        torch.set_num_threads(THREADS)
        try:
            count, product_count = (COPIES // 2, PRODUCTS // 2) if quick else (COPIES, PRODUCTS)
            x, y = torch.ones(ELEMENTS), torch.ones(ELEMENTS)
            calls = _products()
            timed_copies(x, y, 20)
            alone = timed_copies(x, y, count)
            products_alone = _timed_products(calls, product_count)
            out = torch.empty(ELEMENTS)
            dist.all_gather_into_tensor(out, torch.ones(ELEMENTS), group=group)
            timed_copies(x, y, 20)
            throttled = timed_copies(x, y, count)
            products_throttled = _timed_products(calls, product_count)
        finally:
            torch.set_num_threads(threads)
        result = {"threads": THREADS, "elements": ELEMENTS, "alone": stats(alone), "throttled": stats(throttled),
                  "products": [{"rows": r, "depth": d, "cols": c, "alone": stats(a), "throttled": stats(t)}
                               for ((r, d, c), _), a, t in zip(calls, products_alone, products_throttled)]}
    if rank == 0:
        torch.distributed.destroy_process_group(group)
    dist.barrier()
    return result
