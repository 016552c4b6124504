"""What a CPU rank's throttled OpenMP pool adds to a micro-step.

torch's CPU kernels split work of at least :data:`GRAIN_ELEMENTS` elements over GNU OpenMP
threads (``at::internal::GRAIN_SIZE``; matrix products always go to the BLAS's threads). An idle
worker spins about 300,000 iterations before it sleeps, but only 100 once the process has more
OpenMP threads than CPUs (libgomp, config/linux/wait.h ``do_spin``; env.c). A gloo all-gather runs
torch copies on the process group's own thread, which then holds an OpenMP team of its own: after
the first all-gather of a tensor above the grain size every parallel kernel of a rank with two or
more threads wakes its workers (benchmarks/results/openmp_wakeups.txt: bert-tiny's ZeRO-3 steps
at two threads slept 236 times a step on one rank and cost 28.5 ms over stage 0, against 16.0 ms
at one thread and 15.0 ms at two with ``OMP_WAIT_POLICY=ACTIVE``). It applies where

    threads per rank >= 2 and (stage 3, or stages 1-2 with dp > 1: their updated partitions are
    all-gathered after the step)

and then, per micro-step,

    forward_s  = wake_s x (parallel kernels of the forward  + 2 x hooked modules at stage 3)
                 + (product_wake_s - wake_s) x (the forward's matrix products)
    backward_s = wake_s x (parallel kernels of the backward + 2 x hooked modules at stage 3
                           + parallel kernels of the recomputed layers)
                 + (product_wake_s - wake_s) x (the backward's and the recomputation's products)

with ``wake_s`` the calibration's measurement (``HardwareSpec.pool_wake_s``: a 65,536-element
copy at two threads after gaps of 20 and 200 us, throttled minus alone), ``product_wake_s`` the
same for matrix products (``HardwareSpec.pool_product_wake_s``: the median over three products of
4 to 134 MFLOPs; ``wake_s`` where not measured) and the kernels those of
:mod:`simtune.model.operators` whose tensors reach the grain size (every matrix product; a
memory-bound operator where its elements per micro-batch do). A product pays about twice what a
copy pays (benchmarks/results/openmp_wakeups_calibration.txt: 57-127 us against 39-54 us at two
threads, read as the calibration reads them). Stage 3 fetches and releases each module with
parameters once per pass (one parallel copy each way). Counted for bert-tiny at 128
tokens and micro-batch 4: 119 kernels and 96 fetches and releases, 215 wake-ups a step where the
benchmark counted 236 sleeps of the training thread.
"""

from __future__ import annotations

from simtune.model.checkpointing import checkpointed_layers
from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig
from simtune.model.operators import Operators, model_operators

GRAIN_ELEMENTS = 32768
"""torch's ``at::internal::GRAIN_SIZE``: element-wise kernels below it run on the calling thread."""


def throttled(hw: HardwareSpec, c: TrainConfig) -> bool:
    """Whether a rank's OpenMP pool runs throttled in this configuration (see the module)."""
    if not hw.pool_wake_s or hw.threads_per_rank is None or hw.threads_per_rank < 2:
        return False
    return c.stage == 3 or (c.stage in (1, 2) and c.dp_degree > 1)


def _kernel_wake_ups(ops: Operators, m: ModelSpec, c: TrainConfig) -> tuple[int, int]:
    grain, mbs = GRAIN_ELEMENTS * c.mp_degree, c.micro_batch_size  # a rank holds 1/mp of the elements
    modules = 2 * m.hooked_modules if c.stage == 3 else 0
    forward = ops.kernels(m.num_layers, False, min_elements=grain, samples=mbs) + modules
    backward = (ops.kernels(m.num_layers, True, min_elements=grain, samples=mbs) + modules
                + ops.kernels(checkpointed_layers(m, c), False, outer=False, min_elements=grain, samples=mbs))
    return forward, backward


def _product_wake_ups(ops: Operators, m: ModelSpec, c: TrainConfig) -> tuple[int, int]:
    return (ops.products(m.num_layers, False),
            ops.products(m.num_layers, True) + ops.products(checkpointed_layers(m, c), False, outer=False))


def wake_ups(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> tuple[int, int]:
    """(forward, backward) wake-ups of one micro-step where the pool is throttled, else (0, 0)."""
    if not throttled(hw, c):
        return 0, 0
    return _kernel_wake_ups(model_operators(m, hw, c.autocast), m, c)


def product_wake_ups(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> tuple[int, int]:
    """Of :func:`wake_ups`, the (forward, backward) matrix products."""
    if not throttled(hw, c):
        return 0, 0
    return _product_wake_ups(model_operators(m, hw, c.autocast), m, c)


def pool_wake_s(m: ModelSpec, hw: HardwareSpec, c: TrainConfig) -> tuple[float, float]:
    """(forward, backward) seconds one micro-step spends waking a throttled pool's workers."""
    if not throttled(hw, c):
        return 0.0, 0.0
    ops = model_operators(m, hw, c.autocast)
    wake = hw.pool_wake_s or 0.0
    forward, backward = _kernel_wake_ups(ops, m, c)
    if hw.pool_product_wake_s is None:
        return forward * wake, backward * wake
    extra = hw.pool_product_wake_s - wake
    products_fwd, products_bwd = _product_wake_ups(ops, m, c)
    return forward * wake + products_fwd * extra, backward * wake + products_bwd * extra
