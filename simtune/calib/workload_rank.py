"""Model mode, on every rank: measure a workload side by side with the other ranks of one node.

:mod:`simtune.calibration.workload_launch` starts each rank as
``python -m simtune.calib.workload_rank --local_rank=N --request=REQUEST.json`` (through
:mod:`simtune.runner.local_ranks`, with the variables DeepSpeed's launcher sets, without its two
interpreters that import DeepSpeed first); the ranks run side by side, so they share the machine
as training ranks do (on CPU: the cores, caches and memory bandwidth; ``OMP_NUM_THREADS`` =
cores / ranks). Each rank, in order:

1. reads its resident memory after importing torch and DeepSpeed and joining the process group
   (the hardware profile's fixed overhead is this same reading), then after importing the model's
   library, building the model and running one forward and backward: the difference, less the
   model's fp32 parameters and gradients, is the program's own memory (code, kernel caches,
   thread and allocator pools);
2. measures the model itself (:func:`~simtune.calib.workload_measure.measure_module`);
3. builds a ZeRO-2 engine of a tiny model: what it adds is the memory of ZeRO's runtime (code
   it loads on first use), which the cost model adds at stages 1-3 on CPU;
4. for each ZeRO stage, at the middle measured micro-batch size, builds and times real engines of
   the model (:mod:`simtune.calib.engines`).

Each rank writes ``rank<N>.json``, which the host merges.

When the machine has no hardware profile yet, the same launch first runs the machine's quick
calibration (:func:`simtune.calib.run_all.measure`, exactly what ``simtune calibrate --quick``
runs; rank 0 writes its raw output) and takes the memory limit from it: one launch instead of two,
which saves a second start of the ranks: their imports and the process group's rendezvous.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator

from simtune.calib.engines import engine_config, frozen_heap, measure_stage_engines
from simtune.calib.run_all import measure
from simtune.calib.workload_measure import (build_measured_model, calibration_from, checkpointing_switch,
                                            device_sync, device_text, measure_module, rss_bytes, token_batches)
from simtune.calibration.workload import LOG_PREFIX, Request
from simtune.probe.collectives import Collectives
from simtune.probe.device import release_free_heap
from simtune.probe.protocol import write_json_atomically
from simtune.workloads.presets import Workload, build_model, load_workload


def _zero_runtime_bytes(precision: str, world_size: int, device: torch.device) -> int:
    """Resident memory added by a first ZeRO engine (stage 2) of a tiny model: the code and state
    ZeRO's runtime loads on first use. (A ZeRO-3 engine is not built here: it would replace
    torch's linear function for the rest of the process, which ZeRO-1/2 training never sees.)
    0 off CPU, where the cost model does not count it."""
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


def _program_memory(request: Request, device: torch.device) -> tuple[Workload, int, int]:
    """(the workload, resident memory before it is loaded, what loading it, building the model and
    its first forward and backward add beyond its fp32 parameters and gradients: the program's
    own memory); off CPU the two readings are 0, as the cost model counts them only there."""
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


def _calibrate_machine(raw_path: str, local_rank: int, after_baseline: Callable[[], None]) -> int:
    """The machine's quick calibration on every rank (``after_baseline()`` runs once its memory
    baseline is read); rank 0 writes the raw output to ``raw_path``. Returns the memory a rank may
    use (the profile's), the same on every rank."""
    raw = measure(quick=True, local_rank=local_rank, after_baseline=after_baseline)
    limit: list[Any] = [None]
    if raw is not None:
        from simtune.calibration.build import build_profile  # scipy: not in a rank's memory baseline

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
        memory: list[tuple[Workload, int, int]] = []
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
        ranks = Collectives()
        torch.distributed.barrier()
        measured = measure_module(model, make_batch, micro_batch_sizes=request.micro_batch_sizes,
                                  repeats=request.repeats, memory_limit_bytes=request.memory_limit_bytes,
                                  checkpointing=checkpointing_switch(model, request),
                                  barrier=torch.distributed.barrier,
                                  agree=lambda value: ranks.max_int(round(value * 1e9)) / 1e9)  # integers: ns
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
        traceback.print_exc()
        print(f"{LOG_PREFIX} failed on rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skips ZeRO-3's abort at interpreter exit


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1:]))
