"""Model mode: measure a workload in one launch, on every rank of one node at once.

:mod:`simtune.runner.local_ranks` starts each rank as
``python -m simtune.calibration.workload_launch --local_rank=N --request=REQUEST.json`` with the
variables DeepSpeed's launcher sets (without its two interpreters that import DeepSpeed first); the
ranks run side by side, so they share the machine as training ranks do (on CPU: the cores, caches
and memory bandwidth; ``OMP_NUM_THREADS`` = cores / ranks). Each rank, in order:

1. reads its resident memory after importing torch and DeepSpeed and joining the process group
   (the hardware profile's fixed overhead is this same reading), then after importing the model's
   library, building the model and running one forward and backward: the difference, less the
   model's fp32 parameters and gradients, is the program's own memory (code, kernel caches,
   thread and allocator pools);
2. measures the model itself (:func:`~simtune.calibration.workload_measure.measure_module`);
3. builds a ZeRO-2 engine of a tiny model: what it adds is the memory of ZeRO's runtime (code
   it loads on first use), which the cost model adds at stages 1-3 on CPU;
4. for each ZeRO stage, at the middle measured micro-batch size, builds a real
   engine of the model (DeepSpeed's default knobs, no accumulation; at stages 1-3 a second one
   with buckets of 1/8 of the model, which issues several reductions, when the request asks for
   it: a search none of whose configurations issues another number of reductions than the
   default bucket does not need the cost per call), reads its peak memory over
   building, ``deepspeed.initialize`` and ``ENGINE_MEMORY_STEPS`` steps, then times its
   forward, backward and step calls over ``ENGINE_STEPS`` steps, timing the bare model on the
   same batch size in each iteration too (the pair gives what the engine adds). Stage 3 comes
   last: its engine replaces torch's linear function for the rest of the process, as ZeRO-3
   training does.

Each rank writes ``rank<N>.json``; :func:`measure_with_launch` merges them (times: mean over
ranks of the medians; memory: the largest rank).

When the machine has no hardware profile yet, the same launch first runs the machine's quick
calibration (:func:`simtune.calib.run_all.measure`, exactly what ``simtune calibrate --quick`` runs; rank 0
writes its raw output) and takes the memory limit from it: one launch instead of two, which saves
a second start of the ranks: their imports and the process group's rendezvous.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from simtune.calibration.workload import (ENGINE_TIMES, EngineMeasurement, TimeStats, WorkloadCalibration,
                                          WorkloadCalibrationError)

ENGINE_MEMORY_STEPS = 6
"""Steps inside the engine's peak-memory reading (the heap grows over the first few)."""
ENGINE_STEPS = 12
PREFIX = "simtune-workload:"


def engine_config(stage: int, micro_batch_size: int, world_size: int, precision: str, device: str,
                  reduce_bucket_size: Optional[int] = None) -> dict:
    """A DeepSpeed config for one measuring engine: AdamW (torch's on CPU, as the training
    program uses it), DeepSpeed's default ZeRO knobs unless a reduce_bucket_size is given."""
    zero: dict[str, Any] = {"stage": stage}
    if reduce_bucket_size is not None:
        zero["reduce_bucket_size"] = reduce_bucket_size
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro_batch_size * world_size,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.0}},
        "zero_optimization": zero,
    }
    if device == "cpu":
        config["optimizer"]["params"]["torch_adam"] = True
    if precision in ("bf16", "fp16"):
        config[precision] = {"enabled": True}
    return config


def measure_real_engine(stage: int, micro_batch_size: int, build: Any, module: Any, make_batch: Any, loss_of: Any,
                        precision: str, world: int, device: Any, sync: Any,
                        reduce_bucket_size: Optional[int] = None) -> EngineMeasurement:
    """Build a real engine around ``build()`` (a new model) and measure it: the peak memory above
    what was held before (building the model, ``deepspeed.initialize`` and
    ``ENGINE_MEMORY_STEPS`` steps), then ``ENGINE_STEPS`` steps timed call by call, each after the
    bare ``module``'s forward and backward on the same batch size (the pair). ``loss_of`` takes
    the loss from a model's output."""
    import deepspeed
    import torch

    from simtune.calibration.workload_measure import PeakMemory, timed_once

    gc.collect()
    torch.distributed.barrier()
    with PeakMemory(device) as peak:
        trained = build()
        engine, *_ = deepspeed.initialize(model=trained, model_parameters=list(trained.parameters()),
                                          config=engine_config(stage, micro_batch_size, world, precision,
                                                               device.type, reduce_bucket_size))
        for _ in range(ENGINE_MEMORY_STEPS):
            engine.backward(loss_of(engine(**make_batch(micro_batch_size))))
            engine.step()
    samples: dict[str, list[float]] = {k: [] for k in ENGINE_TIMES}
    for _ in range(ENGINE_STEPS):
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
        samples["forward"].append(t2 - t1)
        samples["backward"].append(t3 - t2)
        samples["step"].append(t4 - t3)
        samples["loop"].append(t1 - t0)
        samples["module_forward"].append(module_forward)
        samples["module_backward"].append(module_backward)
    del engine, trained, loss
    return EngineMeasurement(stage=stage, world_size=world, micro_batch_size=micro_batch_size,
                             peak_bytes=peak.peak_bytes, reduce_bucket_size=reduce_bucket_size,
                             **{k: TimeStats.of(v) for k, v in samples.items()})


SMALL_BUCKETS = 8
"""The extra engines of stages 1-3 reduce gradients in buckets of about 1/SMALL_BUCKETS of the
model, so that they issue several reduction calls where the default bucket issues one or few."""


def small_bucket_elements(model: Any) -> int:
    """reduce_bucket_size of the extra engines: 1/SMALL_BUCKETS of the parameters (even, as
    DeepSpeed wants bucket sizes)."""
    params = sum(p.numel() for p in {p.data_ptr(): p for p in model.parameters()}.values())
    return max(2, (params // SMALL_BUCKETS) // 2 * 2)


def engine_micro_batch_sizes(measured_sizes: list[int]) -> tuple[int, ...]:
    """Micro-batch sizes the engines run at: the middle of the measured sizes (the engine
    overheads are taken as the same at every size)."""
    middle = measured_sizes[len(measured_sizes) // 2] if measured_sizes else 1
    return (middle,)


def measure_stage_engines(build: Any, module: Any, make_batch: Any, loss_of: Any, precision: str, world: int,
                          device: Any, sync: Any, measured_sizes: list[int],
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


def _zero_runtime_bytes(precision: str, world_size: int, device: Any) -> int:
    """Resident memory added by a first ZeRO engine (stage 2) of a tiny model: the code and state
    ZeRO's runtime loads on first use. (A ZeRO-3 engine is not built here: it would replace
    torch's linear function for the rest of the process, which ZeRO-1/2 training never sees.)
    0 off CPU, where the cost model does not count it."""
    import deepspeed
    import torch

    from simtune.calibration.workload_measure import release_free_heap, rss_bytes

    if device.type != "cpu":  # only a CPU rank's resident set holds it: nothing to read
        return 0
    gc.collect()
    release_free_heap()
    before = rss_bytes()
    tiny = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)).to(device)
    engine, *_ = deepspeed.initialize(model=tiny, model_parameters=list(tiny.parameters()),
                                      config=engine_config(2, 1, world_size, precision, device.type))
    added = max(0, rss_bytes() - before)
    del engine, tiny
    return added


def _program_memory(request: Any, device: Any) -> tuple[Any, int, int]:
    """(the workload, resident memory before it is loaded, what loading it, building the model and
    its first forward and backward add beyond its fp32 parameters and gradients: the program's
    own memory); off CPU the two readings are 0, as the cost model counts them only there."""
    import torch

    from simtune.calibration.workload_measure import release_free_heap, rss_bytes, token_batches
    from simtune.workloads.presets import build_model, load_workload

    if device.type != "cpu":  # only a CPU rank's resident set holds the program: nothing to read
        return load_workload(request.model, seq_len=request.seq_len), 0, 0
    release_free_heap()
    base = rss_bytes()
    workload = load_workload(request.model, seq_len=request.seq_len)
    torch.manual_seed(1234)
    model = build_model(workload).to(device)
    fp32_bytes = sum(p.numel() * p.element_size() for p in {p.data_ptr(): p for p in model.parameters()}.values())
    first = token_batches(workload, device, seed=99)(1)
    model(**first).loss.backward()  # what the first iteration leaves behind
    program = max(0, rss_bytes() - base - 2 * fp32_bytes)
    del model, first
    return workload, base, program


def _calibrate_machine(raw_path: str, local_rank: int, after_baseline: Any) -> int:
    """The machine's quick calibration on every rank (``after_baseline()`` runs once its memory
    baseline is read); rank 0 writes the raw output to ``raw_path``. Returns the memory a rank may
    use (the profile's), the same on every rank."""
    import torch

    from simtune.calib.run_all import measure

    raw = measure(quick=True, local_rank=local_rank, after_baseline=after_baseline)
    limit: list[Any] = [None]
    if raw is not None:
        from simtune.calibration.build import build_profile  # scipy: imported after the baseline

        Path(raw_path).write_text(json.dumps(raw))
        limit[0] = int(build_profile(raw).device.usable_memory_bytes)
    torch.distributed.broadcast_object_list(limit, src=0)
    return int(limit[0])


def rank_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--request", required=True)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", "0")))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = json.loads(Path(args.request).read_text())
    out_dir = Path(data.pop("out_dir"))
    stages = tuple(data.pop("stages"))
    machine_raw = data.pop("machine_raw", None)

    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator

    from simtune.calibration.workload_measure import (Request, build_measured_model, calibration_from, device_sync,
                                                      device_text, checkpointing_switch, measure_module,
                                                      token_batches)
    from simtune.probe.protocol import write_json_atomically

    data["micro_batch_sizes"] = tuple(data["micro_batch_sizes"])
    request = Request(**data)
    deepspeed.init_distributed()
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    get_accelerator().set_device(args.local_rank)
    device = torch.device(get_accelerator().current_device_name())
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(request.threads)
    sync = device_sync(device)
    try:
        memory: list[tuple[Any, int, int]] = []
        if machine_raw:
            # the program's memory is read right after the calibration's baseline, before its
            # benchmarks leave their own allocations behind, as a launch of its own would read it
            limit = _calibrate_machine(machine_raw, args.local_rank,
                                       lambda: memory.append(_program_memory(request, device)))
            request = dataclasses.replace(request, memory_limit_bytes=limit)
        else:
            memory.append(_program_memory(request, device))
        workload, base, program = memory[0]

        model = build_measured_model(workload, request.precision, device)
        make_batch = token_batches(workload, device, seed=4321 + rank)
        torch.distributed.barrier()
        measured = measure_module(model, make_batch, micro_batch_sizes=request.micro_batch_sizes,
                                  repeats=request.repeats, memory_limit_bytes=request.memory_limit_bytes,
                                  checkpointing=checkpointing_switch(model, request),
                                  barrier=torch.distributed.barrier)
        with frozen_heap():
            zero_runtime = _zero_runtime_bytes(request.precision, world, device)
            engines = measure_stage_engines(
                lambda: build_measured_model(workload, "fp32", device), model, make_batch, lambda out: out.loss,
                request.precision, world, device, sync, [m.micro_batch_size for m in measured[0]], stages,
                small_buckets=request.bucket_engines)
        calibration = calibration_from(
            request, workload, model, measured, device_text=device_text(device), started=started, ranks=world,
            base_rss_bytes=base, program_overhead_bytes=program,
            zero_runtime_bytes=zero_runtime, engines=engines)
        # whole or absent: the host watches for these files
        write_json_atomically(out_dir / f"rank{rank}.json", calibration.to_dict())
    except BaseException as exc:  # every rank must leave, or the launch hangs in a collective
        import traceback

        traceback.print_exc()
        print(f"{PREFIX} failed on rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skips ZeRO-3's abort at interpreter exit


# ---------------------------------------------------------------------- the host side
def _mean_stats(items: list[TimeStats]) -> TimeStats:
    return TimeStats(min_s=min(s.min_s for s in items), median_s=statistics.fmean(s.median_s for s in items),
                     max_s=max(s.max_s for s in items), repeats=sum(s.repeats for s in items))


def merge_ranks(parts: list[WorkloadCalibration]) -> WorkloadCalibration:
    """One calibration from every rank's: times are the mean of the ranks' medians (min of mins,
    max of maxes), memory the largest rank's."""
    first = parts[0]
    measurements = []
    for rows in zip(*(p.measurements for p in parts)):
        def mean(name: str, rows=rows) -> TimeStats | None:
            values = [getattr(r, name) for r in rows]
            return None if any(v is None for v in values) else _mean_stats(values)

        def most(name: str, rows=rows) -> int | None:
            values = [getattr(r, name) for r in rows]
            return None if any(v is None for v in values) else max(values)

        measurements.append(dataclasses.replace(
            rows[0], forward=mean("forward"), backward=mean("backward"), peak_bytes=most("peak_bytes"),
            activation_peak_bytes=most("activation_peak_bytes"), forward_checkpointed=mean("forward_checkpointed"),
            backward_checkpointed=mean("backward_checkpointed"),
            activation_peak_checkpointed_bytes=most("activation_peak_checkpointed_bytes")))
    engines = [dataclasses.replace(rows[0], peak_bytes=max(r.peak_bytes for r in rows),
                                   **{k: _mean_stats([getattr(r, k) for r in rows]) for k in ENGINE_TIMES})
               for rows in zip(*(p.engines for p in parts))]
    return dataclasses.replace(
        first, measurements=tuple(measurements), engines=tuple(engines),
        base_rss_bytes=max(p.base_rss_bytes for p in parts),
        program_overhead_bytes=max(p.program_overhead_bytes for p in parts),
        zero_runtime_bytes=max(p.zero_runtime_bytes for p in parts), seconds=max(p.seconds for p in parts))


def run_in_own_group(command: list[str], env: dict[str, str], timeout_s: float,
                     finished: Optional[Any] = None, port: Optional[int] = None) -> tuple[int, str]:
    """Run a launch with the runner's process-group handling (a time-out or an interrupt ends the
    launcher and every rank; ``finished()`` says the ranks' results are written, see
    :func:`~simtune.runner.launcher.run_process_group`); returns the exit code and the output.
    Raises ``subprocess.TimeoutExpired`` at the time-out."""
    from simtune.runner.launcher import run_process_group

    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        returncode, timed_out, _ = run_process_group(command, env, os.getcwd(), log, subprocess.STDOUT, timeout_s,
                                                     finished=finished, port=port)
        if timed_out:
            raise subprocess.TimeoutExpired(command, timeout_s)
        log.seek(0)
        return returncode, log.read()


def measure_with_launch(request: Any, num_gpus: int, *, stages: tuple[int, ...] = (0, 1, 2, 3),
                        timeout_s: float = 900.0, machine_raw: Optional[Path] = None) -> WorkloadCalibration:
    """Run the measurement on ``num_gpus`` local ranks (started by
    :mod:`~simtune.runner.local_ranks`, as DeepSpeed's launcher would start them); merge.
    With ``machine_raw``, the launch calibrates the machine first and writes the raw output there
    (the request's memory limit is then the one measured)."""
    from simtune.runner import local_ranks
    from simtune.runner.launcher import free_port, launch_env, release_port
    from simtune.runner.resources import Resources
    from simtune.runner.runner import remove_shm_buffers

    started = time.perf_counter()
    resources = Resources.resolve(num_gpus=num_gpus)
    with tempfile.TemporaryDirectory(prefix="simtune-workload-") as folder:
        request_path = Path(folder) / "request.json"
        request_path.write_text(json.dumps({**dataclasses.asdict(request), "out_dir": folder, "stages": list(stages),
                                            "machine_raw": str(machine_raw) if machine_raw else None}))
        port = free_port()
        command = local_ranks.command(resources.world_size, port, "simtune.calibration.workload_launch",
                                      [f"--request={request_path}"])
        env = launch_env(resources, folder)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")

        def finished() -> bool:  # every rank wrote its file, just before the last barrier and its exit
            return (len(list(Path(folder).glob("rank*.json"))) == resources.world_size
                    and (machine_raw is None or Path(machine_raw).is_file()))

        try:
            returncode, output = run_in_own_group(command, env, timeout_s, finished, port)
        except subprocess.TimeoutExpired:
            raise WorkloadCalibrationError(
                f"Measuring {request.model} took longer than {timeout_s:.0f} s and was stopped.") from None
        finally:
            remove_shm_buffers(port)
            release_port(port)
        if returncode != 0 or not finished():
            lines = [line.strip() for line in output.splitlines() if PREFIX in line or "Error" in line]
            reason = lines[-1] if lines else f"exit code {returncode}"
            raise WorkloadCalibrationError(f"Measuring {request.model} in a launch failed: {reason.rstrip('.')}.")
        parts = sorted(Path(folder).glob("rank*.json"))
        merged = merge_ranks([WorkloadCalibration.from_dict(json.loads(p.read_text())) for p in parts])
    return dataclasses.replace(merged, seconds=time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1:]))
