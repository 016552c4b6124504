"""A shared launch: one launch whose ranks run the script again and again, one run per request.

Started like a probe run, with ``--simtune-serve=<folder>`` where a run has
``--simtune-probe=<probe.json>``::

    deepspeed <launcher args> --module simtune.probe --simtune-serve=<folder> SCRIPT

Each rank imports torch and DeepSpeed and joins the process group (simtune's training program
also imports its model library: :func:`warm_up`), then waits for ``request-1.json`` in the folder
(:mod:`simtune.probe.protocol`), and so on. A request names the script's arguments, the run's
probe.json and its two logs. Each run is what the probe's own launch of it would be: the
process's peak memory is reset (:meth:`~simtune.probe.device.HostDevice.reset_peak`; on the host,
what the process kept of the runs before still counts, so those readings say so:
``SHARED_RSS_KIND``), the script runs as ``__main__`` with the run's arguments, its output goes
to the run's logs (at the file descriptors, so that C++ output does too), and the same
:class:`~simtune.probe.instrument.Instrument` times the engine ``deepspeed.initialize`` returns
and writes metrics.json. Only the end differs: once the window closed the ranks unwind to the
loop (:class:`~simtune.probe.instrument.RunEnded`), the engine is destroyed (``engine.destroy()``
removes ZeRO-3's hooks), what DeepSpeed keeps of a ZeRO-3 model past ``destroy()`` is dropped
(:func:`forget_zero3_model`), torch's ``linear`` that ZeRO-3 replaced is put back and the garbage
collected; rank 0 writes the reply and the ranks take the next request, unless the engine outlived
the run (something still holds it) or, on CUDA, more than :data:`LEFT_BEHIND_BYTES` stay
allocated beyond what the launch held before its first run: then the reply says so and the launch
ends, so that no run is measured beside another's leftovers. A run that ends any other
way (out of the memory budget, an exception, the script ending early) ends the launch with the
exit code its own launch would have had, so that the launcher stops every rank and the runner
reads the outcome as it reads any launch's.

What a run saves is the launch's start: two launcher interpreters and every rank importing torch,
DeepSpeed and the model library and meeting at the rendezvous, some 8 s of a 10 s run of a small
model on two CPU processes (benchmarks/results/shared_launch.txt).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NoReturn

from simtune.probe.instrument import Instrument, RunEnded, end_process
from simtune.probe.protocol import (SHARED_RSS_KIND, ProbeSettings, reply_path, request_path, started_path,
                                    write_json_atomically)

POLL_S = 0.01
"""How often a waiting rank looks for the next request."""


class _Current:
    """The instrument of the run in progress (``deepspeed.initialize`` attaches its engine)."""

    instrument: Instrument | None = None


def _raise_run_ended(code: int) -> NoReturn:
    raise RunEnded(code)


def install_dispatch(current: _Current) -> None:
    """Replace ``deepspeed.initialize`` once, so the engine it returns is attached to the
    instrument of the run in progress."""
    import functools

    import deepspeed

    original = deepspeed.initialize

    @functools.wraps(original)
    def initialize(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if current.instrument is not None:
            current.instrument.attach(result[0])
        return result

    deepspeed.initialize = initialize


def warm_up(script: str) -> None:
    """Import torch and DeepSpeed and join the process group; for simtune's own training program
    also its ``warm_up()`` (the model library's import). A script's module level is never run
    here: a script that trains at its top level would train."""
    import deepspeed

    from simtune.workloads import TRAIN_PROGRAM

    deepspeed.init_distributed()
    if os.path.realpath(script) == os.path.realpath(TRAIN_PROGRAM):
        from simtune.workloads.train import warm_up as program_warm_up

        program_warm_up()


@contextmanager
def logs_to(stdout_path: str, stderr_path: str) -> Iterator[None]:
    """Send this process's standard output and error (file descriptors 1 and 2) to the two files,
    appended, until the block ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        for fd, path in ((1, stdout_path), (2, stderr_path)):
            target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(target, fd)
            os.close(target)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def wait_for(path: Path) -> dict[str, Any]:
    """The JSON object at ``path`` once it exists; the rank leaves if its launcher is gone."""
    parent = os.getppid()
    while not path.is_file():
        if os.getppid() != parent:
            end_process(1)
        time.sleep(POLL_S)
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object.")
    return data


def run_once(request: dict[str, Any], current: _Current, script: str, local_rank: str | None,
             first: bool = True) -> int:
    """One run of ``script`` for ``request``: its exit code (0 when the window closed). ``first``:
    no run came before it in this process."""
    from simtune.probe.device import current_device
    from simtune.probe.main import run_as_main

    settings = ProbeSettings.read(request["probe"])
    device = current_device()
    device.reset_peak()
    instrument = Instrument(settings, end=_raise_run_ended)
    if not first and device.kind != "cuda":
        instrument.memory_kind = SHARED_RSS_KIND
    current.instrument = instrument
    rank = [] if local_rank is None else [f"--local_rank={local_rank}"]
    saved_path, saved_argv = list(sys.path), list(sys.argv)  # run_as_main sets both; scripts edit the path
    try:
        run_as_main(script, [script, *rank, *request["argv"]], _raise_run_ended)
        instrument.report_no_metrics()
    except RunEnded as ended:
        ended.__traceback__ = None  # its frames hold the script's model and engine
        return ended.code
    finally:
        sys.path[:], sys.argv[:] = saved_path, saved_argv
    return 0  # not reached: report_no_metrics ends the run


def release(current: _Current) -> bool:
    """Free what the run left: its engine (destroyed), the instrument, ZeRO-3's references to the
    model and its ``linear``. Whether the engine is gone: whatever still holds it (the script's own
    globals, a reference DeepSpeed keeps that :func:`forget_zero3_model` does not know) keeps its
    model and optimizer states, which would count in every later run's peak memory."""
    instrument, current.instrument = current.instrument, None
    engine = None if instrument is None else instrument.engine
    if engine is None:
        return True
    if hasattr(engine, "destroy"):
        engine.destroy()
    gone = weakref.ref(engine)
    del instrument, engine
    forget_zero3_model()
    restore_linear()
    gc.collect()
    return gone() is None


def forget_zero3_model() -> None:
    """Drop the two references to a ZeRO-3 model that DeepSpeed keeps after ``engine.destroy()``
    (DeepSpeed 0.19): the model pushed onto ``parameter_offload.FWD_MODULE_STACK`` when the engine
    set its hooks up, never popped, and the class-wide ``functools.lru_cache`` of
    ``PartitionedParameterCoordinator.__params_to_release``, whose keys hold the coordinator
    (which holds the model) and its modules. Either alone keeps the engine, its model and its
    optimizer states alive for the rest of the process. Called between runs only: no engine is
    running then, and the next one's stack and cache start afresh."""
    try:
        from deepspeed.runtime.zero import parameter_offload
        from deepspeed.runtime.zero.partitioned_param_coordinator import PartitionedParameterCoordinator
    except ImportError:
        return
    del parameter_offload.FWD_MODULE_STACK[:]
    for attribute in vars(PartitionedParameterCoordinator).values():
        wrapped = [cell.cell_contents for cell in getattr(attribute, "__closure__", None) or ()]
        for cached in [attribute, *wrapped]:  # the cache itself, or under DeepSpeed's nvtx wrapper
            if callable(getattr(cached, "cache_clear", None)):
                cached.cache_clear()


def on_every_rank(flag: bool) -> bool:
    """``flag`` true on every rank (one gather), so that the ranks leave or stay together."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    flags: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(flags, flag)
    return all(bool(f) for f in flags)


def restore_linear() -> None:
    """Put back torch's ``linear`` where a ZeRO-3 engine replaced it for the rest of the process."""
    import torch
    from deepspeed.runtime.zero.partition_parameters import InsertPostInitMethodToModuleSubClasses

    original = getattr(InsertPostInitMethodToModuleSubClasses, "linear_bk", None)
    if original is not None:
        torch.nn.functional.linear = original


def serve(folder: str, script: str, local_rank: str | None) -> NoReturn:
    """Run the requests in ``folder`` one after another (see the module docstring)."""
    from simtune.probe.device import current_device

    current = _Current()
    install_dispatch(current)
    warm_up(script)
    device = current_device()
    baseline = device.allocated_bytes()
    rank0 = os.environ.get("RANK", "0") == "0"
    number = 1
    while True:
        request = wait_for(request_path(folder, number))
        if request.get("stop"):
            end_process(0)
        if rank0:
            started_path(folder, number).touch()
        started = time.perf_counter()
        with logs_to(request["stdout"], request["stderr"]):
            code = run_once(request, current, script, local_rank, first=number == 1)
        if code != 0:
            end_process(code)
        why = left_behind(release(current), baseline, device.allocated_bytes())
        ends = not on_every_rank(why is None)
        if rank0:
            write_json_atomically(reply_path(folder, number), {
                "returncode": 0, "run_s": round(time.perf_counter() - started, 3),
                "ends": (why or "another rank's run left memory behind") if ends else None})
        if ends:  # a new launch serves the next request, with none of this run's memory
            end_process(0)
        number += 1


LEFT_BEHIND_BYTES = 64 * 2**20
"""Device memory a released run may leave allocated beyond what the launch held before its first
run (a generator's state, small buffers a library keeps); more is a model's or an optimizer's."""


def left_behind(engine_freed: bool, baseline: int | None, allocated: int | None) -> str | None:
    """Why the launch must end after a run (None: it may take the next): its engine outlived it,
    or the device holds more than :data:`LEFT_BEHIND_BYTES` beyond ``baseline`` (the bytes
    allocated before the first run; None on the host, whose resident set cannot say)."""
    if not engine_freed:
        return "its engine outlived it"
    if baseline is not None and allocated is not None and allocated - baseline > LEFT_BEHIND_BYTES:
        return f"{(allocated - baseline) / 2**20:.0f} MiB of device memory still allocated after it"
    return None
