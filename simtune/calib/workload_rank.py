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

A launch may measure more workloads after the first (``also`` in the request file), each written
to ``also<I>/rank<N>.json``: models of the same library (the first's reading of the program's and
ZeRO's runtime memory stands for theirs: the code is loaded once per process), such as the
engine reference and its heavy twin. Each is measured through stage 2 in turn, then their stage-3
engines in the same order: a ZeRO-3 engine changes torch's linear function for the rest of the
process, so no engine of a lower stage may follow one. One start of the ranks instead of one per
workload.

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


@dataclasses.dataclass
class _Part:
    """One workload of the launch, between its measurement through stage 2 and its stage-3
    engines."""

    request: Request
    workload: Workload
    stages: tuple[int, ...]
    out_path: Path
    model: Any = None
    make_batch: Any = None
    measured: Any = None
    engines: tuple = ()


def _parts(data: dict[str, Any], out_dir: Path) -> list[_Part]:
    """The launch's workloads: the request file's own first, then its ``also`` list."""
    def part(fields: dict[str, Any], out_path: Path) -> _Part:
        stages = tuple(fields.pop("stages"))
        fields["micro_batch_sizes"] = tuple(fields["micro_batch_sizes"])
        request = Request(**fields)
        return _Part(request, load_workload(request.model, seq_len=request.seq_len), stages, out_path)

    also = data.pop("also", [])
    parts = [part(data, out_dir)]
    parts += [part(dict(fields), out_dir / f"also{i}") for i, fields in enumerate(also, start=1)]
    return parts


def _measure_part(part: _Part, stages: tuple[int, ...], world: int, device: torch.device,
                  sync: Callable[[], None], rank: int) -> None:
    """The part's model (the first time) and its engines at ``stages``."""
    request, workload = part.request, part.workload
    if part.model is None:
        part.model = build_measured_model(workload, request.precision, device)
        part.make_batch = token_batches(workload, device, seed=4321 + rank)
        ranks = Collectives()
        torch.distributed.barrier()
        part.measured = measure_module(part.model, part.make_batch, micro_batch_sizes=request.micro_batch_sizes,
                                       repeats=request.repeats, memory_limit_bytes=request.memory_limit_bytes,
                                       checkpointing=checkpointing_switch(part.model, request),
                                       barrier=torch.distributed.barrier,
                                       agree=lambda value: ranks.max_int(round(value * 1e9)) / 1e9)  # integers: ns
    if stages:
        with frozen_heap():
            part.engines += measure_stage_engines(
                lambda: build_measured_model(workload, "fp32", device), part.model, part.make_batch,
                lambda out: out.loss, request.precision, world, device, sync,
                [m.micro_batch_size for m in part.measured[0]], stages, small_buckets=request.bucket_engines)


def rank_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--request", required=True)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", "0")))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = json.loads(Path(args.request).read_text())
    out_dir = Path(data.pop("out_dir"))
    machine_raw = data.pop("machine_raw", None)
    parts = _parts(data, out_dir)

    deepspeed.init_distributed()
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    get_accelerator().set_device(args.local_rank)
    device = torch.device(get_accelerator().current_device_name())
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(parts[0].request.threads)
    sync = device_sync(device)
    try:
        memory: list[tuple[Workload, int, int]] = []
        if machine_raw:
            # the program's memory is read right after the calibration's baseline, before its
            # benchmarks leave their own allocations behind, as a launch of its own would read it
            limit = _calibrate_machine(machine_raw, args.local_rank,
                                       lambda: memory.append(_program_memory(parts[0].request, device)))
            for part in parts:
                part.request = dataclasses.replace(part.request, memory_limit_bytes=limit)
        else:
            memory.append(_program_memory(parts[0].request, device))
        _, base, program = memory[0]

        zero_runtime = 0
        for i, part in enumerate(parts):
            # with other workloads in the launch, stage 3 waits until every one is through stage 2
            early = part.stages if len(parts) == 1 else tuple(s for s in part.stages if s < 3)
            _measure_part(part, (), world, device, sync, rank)
            if i == 0:
                with frozen_heap():
                    zero_runtime = _zero_runtime_bytes(part.request.precision, world, device)
            _measure_part(part, early, world, device, sync, rank)
        if len(parts) > 1:
            for part in parts:
                _measure_part(part, tuple(s for s in part.stages if s >= 3), world, device, sync, rank)
        # whole or absent: the host watches for these files, the first workload's last
        for part in reversed(parts):
            calibration = calibration_from(
                part.request, part.workload, part.model, part.measured, device_text=device_text(device),
                started=started, ranks=world, base_rss_bytes=base, program_overhead_bytes=program,
                zero_runtime_bytes=zero_runtime, engines=part.engines)
            part.out_path.mkdir(parents=True, exist_ok=True)
            write_json_atomically(part.out_path / f"rank{rank}.json", calibration.to_dict())
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
