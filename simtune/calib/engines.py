"""Real DeepSpeed engines of the measured model, one per ZeRO stage, timed call by call.

Each engine (DeepSpeed's default knobs, no accumulation; at stages 1-3 a second one with buckets
of 1/``SMALL_BUCKETS`` of the model, which issues several reductions, when asked: a search none of
whose configurations issues another number of reductions than the default bucket does not need
the cost per call) has its peak memory read over building, ``deepspeed.initialize`` and
``ENGINE_MEMORY_STEPS`` steps, then its forward, backward and step calls timed over
``ENGINE_STEPS`` steps (``BASE_ENGINE_STEPS`` at stage 0, the base of every other stage's
costs), timing the bare model on the same batch size in each iteration too (the pair gives what
the engine adds). Stage 3 comes last: its engine replaces torch's linear function
for the rest of the process, as ZeRO-3 training does.
"""

from __future__ import annotations

import copy
import gc
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import deepspeed
import torch

from simtune.calib.workload_measure import LossOf, MakeBatch, PeakMemory, timed_once
from simtune.calibration.workload import DEFAULT_MICRO_BATCH_SIZES, ENGINE_TIMES, EngineMeasurement, TimeStats
from simtune.precision import TORCH_DTYPE_NAMES, autocast_parts
from simtune.workloads import DEFAULT_OPTIMIZER

ENGINE_MEMORY_STEPS = 6
"""Steps inside the engine's peak-memory reading (the heap grows over the first few)."""
ENGINE_STEPS = 12
BASE_ENGINE_STEPS = 24
"""Timed steps of stage 0's engine with DeepSpeed's default knobs: every stage's per-unit costs
are read as differences to its residual, and one step's engine-less-model difference varies by
3.6 ms (sd) on 2 CPU ranks, so 12 steps leave its median 1.1 ms (sd) off where 24 leave 0.6
(benchmarks/results/engine_wait.txt)."""


def engine_config(stage: int, micro_batch_size: int, world_size: int, precision: str, device: str,
                  reduce_bucket_size: Optional[int] = None) -> dict[str, Any]:
    """A DeepSpeed config for one measuring engine: AdamW (torch's on CPU, as the training
    program uses it), DeepSpeed's default ZeRO knobs unless a reduce_bucket_size is given, the
    precision's section (``torch_autocast`` for a ``"bf16+autocast"`` label)."""
    zero: dict[str, Any] = {"stage": stage}
    if reduce_bucket_size is not None:
        zero["reduce_bucket_size"] = reduce_bucket_size
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro_batch_size * world_size,
        "optimizer": copy.deepcopy(DEFAULT_OPTIMIZER),
        "zero_optimization": zero,
    }
    if device == "cpu":
        config["optimizer"]["params"]["torch_adam"] = True
    dtype, autocast = autocast_parts(precision)
    if autocast:  # DeepSpeed's torch_autocast: an fp32 model, its forward inside torch.autocast
        config["torch_autocast"] = {"enabled": True, "dtype": TORCH_DTYPE_NAMES[dtype]}
    elif dtype in ("bf16", "fp16"):
        config[dtype] = {"enabled": True}
    return config


def measure_real_engine(stage: int, micro_batch_size: int, build: Callable[[], torch.nn.Module],
                        module: torch.nn.Module, make_batch: MakeBatch, loss_of: LossOf, precision: str, world: int,
                        device: torch.device, sync: Callable[[], None],
                        reduce_bucket_size: Optional[int] = None) -> EngineMeasurement:
    """Build a real engine around ``build()`` (a new model) and measure it: the peak memory above
    what was held before (building the model, ``deepspeed.initialize`` and
    ``ENGINE_MEMORY_STEPS`` steps), then ``ENGINE_STEPS`` steps (``BASE_ENGINE_STEPS`` at stage 0)
    timed call by call, each after the bare ``module``'s forward and backward on the same batch
    size (the pair). ``loss_of`` takes the loss from a model's output."""
    gc.collect()
    torch.distributed.barrier()
    with PeakMemory(device) as peak:
        engine = warm_engine(stage, micro_batch_size, build, make_batch, loss_of, precision, world, device,
                             reduce_bucket_size)
    steps = BASE_ENGINE_STEPS if stage == 0 and reduce_bucket_size is None else ENGINE_STEPS
    samples = timed_engine_steps(engine, module, make_batch, loss_of, micro_batch_size, sync, steps)
    del engine
    return EngineMeasurement(stage=stage, world_size=world, micro_batch_size=micro_batch_size,
                             peak_bytes=peak.peak_bytes, reduce_bucket_size=reduce_bucket_size,
                             **{k: TimeStats.of(samples[k]) for k in ENGINE_TIMES})


def warm_engine(stage: int, micro_batch_size: int, build: Callable[[], torch.nn.Module], make_batch: MakeBatch,
                loss_of: LossOf, precision: str, world: int, device: torch.device,
                reduce_bucket_size: Optional[int] = None) -> Any:
    """A DeepSpeed engine (:func:`engine_config`) around ``build()``, after
    ``ENGINE_MEMORY_STEPS`` training steps."""
    trained = build()
    engine, *_ = deepspeed.initialize(model=trained, model_parameters=list(trained.parameters()),
                                      config=engine_config(stage, micro_batch_size, world, precision, device.type,
                                                           reduce_bucket_size))
    for _ in range(ENGINE_MEMORY_STEPS):
        engine.backward(loss_of(engine(**make_batch(micro_batch_size))))
        engine.step()
    return engine


def timed_engine_steps(engine: Any, module: torch.nn.Module, make_batch: MakeBatch, loss_of: LossOf,
                       micro_batch_size: int, sync: Callable[[], None], steps: int) -> dict[str, list[float]]:
    """Per step, seconds of each of :data:`ENGINE_TIMES` (the bare ``module``'s forward and
    backward first, between barriers, then the engine's loop, forward, backward and step calls),
    and ``"backward_started"``: the monotonic clock (``time.perf_counter``, one clock for every
    process of a Linux machine) as the engine's backward began, which places each rank's
    backward beside the others'."""
    samples: dict[str, list[float]] = {k: [] for k in (*ENGINE_TIMES, "backward_started")}
    for _ in range(steps):
        torch.distributed.barrier()
        module_forward, module_backward = timed_once(module, make_batch(micro_batch_size), loss_of, sync)
        torch.distributed.barrier()
        sync()
        t0 = time.perf_counter()
        batch = make_batch(micro_batch_size)
        t1 = time.perf_counter()
        loss = loss_of(engine(**batch))
        sync()
        t2 = time.perf_counter()
        engine.backward(loss)
        sync()
        t3 = time.perf_counter()
        engine.step()
        sync()
        t4 = time.perf_counter()
        del loss
        samples["forward"].append(t2 - t1)
        samples["backward"].append(t3 - t2)
        samples["step"].append(t4 - t3)
        samples["loop"].append(t1 - t0)
        samples["module_forward"].append(module_forward)
        samples["module_backward"].append(module_backward)
        samples["backward_started"].append(t2)
    return samples


SMALL_BUCKETS = 8
"""The extra engines of stages 1-3 reduce gradients in buckets of about 1/SMALL_BUCKETS of the
model, so that they issue several reduction calls where the default bucket issues one or few."""


def small_bucket_elements(model: torch.nn.Module) -> int:
    """reduce_bucket_size of the extra engines: 1/SMALL_BUCKETS of the parameters (even, as
    DeepSpeed wants bucket sizes)."""
    params = sum(p.numel() for p in {p.data_ptr(): p for p in model.parameters()}.values())
    return max(2, (params // SMALL_BUCKETS) // 2 * 2)


def engine_micro_batch_sizes(measured_sizes: list[int]) -> tuple[int, ...]:
    """Micro-batch sizes the engines run at: the middle of the measured sizes up to the default
    ones' largest (the engine overheads are taken as the same at every size; the larger sizes a
    search's space adds would lengthen every engine's steps)."""
    usual = [m for m in measured_sizes if m <= DEFAULT_MICRO_BATCH_SIZES[-1]] or measured_sizes[:1]
    middle = usual[len(usual) // 2] if usual else 1
    return (middle,)


def measure_stage_engines(build: Callable[[], torch.nn.Module], module: torch.nn.Module, make_batch: MakeBatch,
                          loss_of: LossOf, precision: str, world: int, device: torch.device,
                          sync: Callable[[], None], measured_sizes: list[int],
                          stages: tuple[int, ...] = (0, 1, 2, 3), small_buckets: bool = True
                          ) -> tuple[EngineMeasurement, ...]:
    """Real engines of ``build()`` (a new model each) at every stage in ``stages`` and the sizes
    of :func:`engine_micro_batch_sizes`, paired with the bare ``module``
    (:func:`measure_real_engine`); at stages 1-3 a second engine with small buckets unless
    ``small_buckets`` is False. Stage 3 should come last: its engine replaces torch's linear
    function for the rest of the process."""
    small = small_bucket_elements(module)
    engines = []
    with frozen_heap():
        for stage in stages:
            for mbs in engine_micro_batch_sizes(measured_sizes):
                for buckets in ((None, small) if stage >= 1 and small_buckets else (None,)):
                    engines.append(measure_real_engine(stage, mbs, build, module, make_batch, loss_of, precision,
                                                       world, device, sync, reduce_bucket_size=buckets))
    return tuple(engines)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect once, then freeze what is alive (torch, DeepSpeed, the model's library, the
    measured model: it stays alive) until the block ends, so that the ``gc.collect()`` before
    each engine's memory reading does not walk it again (0.28 s each with transformers loaded,
    0.05 s frozen). Inside a frozen block it does nothing."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
