"""Model mode, on the host: measure a workload in one launch on every rank of one node, or read
the cached measurement.

:func:`calibrate_workload` is the entry point. :func:`measure_with_launch` starts the ranks
(``python -m simtune.calib.workload_rank``, through :mod:`simtune.runner.local_ranks`, as
DeepSpeed's launcher would start them; see that module for what each rank measures), waits for
every rank's ``rank<N>.json`` and merges them (times: mean over ranks of the medians; memory: the
largest rank).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from simtune.calibration.workload import (DEFAULT_MICRO_BATCH_SIZES, ENGINE_TIMES, LOG_PREFIX, Log, MeasureScope,
                                          MicroBatchMeasurement, Request, TimeStats, WorkloadCalibration, WorkloadCalibrationError,
                                          cached_measurement, fingerprint, measurement_request, model_identity,
                                          rank_threads, save, say)
from simtune.hardware.profile import HardwareProfile
from simtune.runner import local_ranks
from simtune.runner.launcher import free_port, launch_env, release_port, run_process_group
from simtune.runner.resources import Resources
from simtune.workloads.presets import Workload
from simtune.watchdog import remove_shm_buffers

RANK_MODULE = "simtune.calib.workload_rank"


def failure_reason(output: str, returncode: int) -> str:
    """Why a measuring launch failed, from its output: the first rank's own failure line (the
    other ranks then fail in their collectives, in lines that come later and say less), else the
    last line that names an error, else the exit code."""
    lines = [line.strip() for line in output.splitlines() if LOG_PREFIX in line or "Error" in line]
    own = [line for line in lines if line.startswith(f"{LOG_PREFIX} failed on rank")]
    return own[0] if own else lines[-1] if lines else f"exit code {returncode}"


def check_one_library(workloads: Sequence[Workload]) -> None:
    """Refuse workloads of more than one model library (``model_type`` and task) for one launch:
    its first workload's reading of the program's memory stands for the others'."""
    library = sorted({(w.model_type, w.task) for w in workloads})
    if len(library) > 1:
        raise ValueError(f"One launch measures workloads of one model library, not {library}")


def calibrate_workload(workload: Workload, profile: HardwareProfile, *, precision: str,
                       num_gpus: Optional[int] = None, micro_batch_sizes: Sequence[int] = DEFAULT_MICRO_BATCH_SIZES,
                       cache_dir: Optional[os.PathLike[str] | str] = None, in_process: bool = False,
                       refresh: bool = False, repeats: int = 10, timeout_s: float = 900.0,
                       log: Optional[Log] = say, scope: Optional[MeasureScope] = None,
                       also: Sequence[tuple[Workload, MeasureScope]] = ()) -> WorkloadCalibration:
    """Measure a model-mode workload (a :class:`~simtune.workloads.Workload`) on this machine for
    ``profile`` (a :class:`~simtune.hardware.HardwareProfile`: the profile of this machine), or
    return the cached measurement of the same inputs (and say so through ``log``).

    By default one launch on ``num_gpus`` local ranks (default: the profile's ranks per node)
    measures the model on every rank at once, then real engines at every ZeRO stage
    (:mod:`simtune.calib.workload_rank`). ``in_process`` measures only the model, here,
    with the threads one rank gets (no engines, no process memory). ``refresh`` measures even
    when cached. ``scope``: the optional parts to measure (default all; a cached measurement
    without one of them is measured again). ``also``: more workloads (with their scopes) to
    measure in the same launch and cache (see :func:`calibrate_workloads`).
    """
    return calibrate_workloads(((workload, scope or MeasureScope()), *also), profile, precision=precision,
                               num_gpus=num_gpus, micro_batch_sizes=micro_batch_sizes, cache_dir=cache_dir,
                               in_process=in_process, refresh=refresh, repeats=repeats, timeout_s=timeout_s,
                               log=log)[0]


def calibrate_workloads(parts: Sequence[tuple[Workload, MeasureScope]], profile: HardwareProfile, *, precision: str,
                        num_gpus: Optional[int] = None,
                        micro_batch_sizes: Sequence[int] = DEFAULT_MICRO_BATCH_SIZES,
                        cache_dir: Optional[os.PathLike[str] | str] = None, in_process: bool = False,
                        refresh: bool = False, repeats: int = 10, timeout_s: float = 900.0,
                        log: Optional[Log] = say) -> tuple[WorkloadCalibration, ...]:
    """:func:`calibrate_workload` of several workloads of one model library (the same
    ``model_type`` and task: see :mod:`simtune.calib.workload_rank`), each with its scope: the
    cached ones are read, the others measured in one launch (one start of the ranks, not one per
    workload) and cached. One calibration per workload, in order."""
    for workload, _ in parts:
        if not isinstance(workload, Workload):
            raise TypeError(f"calibrate_workload takes a Workload, not {type(workload).__name__}")
    check_one_library([w for w, _ in parts])
    found: list[Optional[WorkloadCalibration]] = []
    todo: list[tuple[int, Path, Request]] = []
    ranks = num_gpus if num_gpus is not None else profile.device.count_per_node
    for i, (workload, scope) in enumerate(parts):
        key = fingerprint(model_identity(workload), workload.seq_len, precision, profile.name)
        path, cached = cached_measurement(key, cache_dir, refresh, f"{workload.name} (seq {workload.seq_len}, "
                                          f"{precision}, profile {profile.name})", log, scope)
        found.append(cached)
        if cached is None:
            todo.append((i, path, measurement_request(
                workload, precision, threads=rank_threads(profile), micro_batch_sizes=micro_batch_sizes,
                repeats=repeats, scope=scope, memory_limit_bytes=int(profile.device.usable_memory_bytes),
                profile_name=profile.name, fingerprint=key)))
    if not todo:
        return tuple(c for c in found if c is not None)
    if log:
        what = " and ".join(f"{parts[i][0].name} (seq {parts[i][0].seq_len}, {precision})" for i, _, _ in todo)
        where = "in this process" if in_process else f"in one launch on {ranks} rank(s)"
        log(f"measuring {what} {where}...")
    if in_process:
        from simtune.calib.workload_measure import measure  # torch: the host loads it only to measure here

        measured = tuple(measure(request) for _, _, request in todo)
    else:
        measured = measure_several_with_launch([request for _, _, request in todo], ranks, timeout_s=timeout_s)
    for (i, path, _), calibration in zip(todo, measured):
        save(calibration, path)
        found[i] = calibration
        if log:
            log(f"workload calibration saved to {path} ({calibration.seconds:.1f} s).")
    return tuple(c for c in found if c is not None)


def _mean_stats(items: list[TimeStats]) -> TimeStats:
    return TimeStats(min_s=min(s.min_s for s in items), median_s=statistics.fmean(s.median_s for s in items),
                     max_s=max(s.max_s for s in items), repeats=sum(s.repeats for s in items))


def merge_ranks(parts: list[WorkloadCalibration]) -> WorkloadCalibration:
    """One calibration from every rank's: times are the mean of the ranks' medians (min of mins,
    max of maxes), memory the largest rank's."""
    first = parts[0]
    measurements = []
    for rows in zip(*(p.measurements for p in parts)):
        def mean(name: str, rows: tuple[MicroBatchMeasurement, ...] = rows) -> TimeStats | None:
            values = [getattr(r, name) for r in rows]
            return None if any(v is None for v in values) else _mean_stats(values)

        def most(name: str, rows: tuple[MicroBatchMeasurement, ...] = rows) -> int | None:
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


def run_in_own_group(command: list[str], env: dict[str, str], timeout_s: Optional[float],
                     finished: Optional[Callable[[], bool]] = None, port: Optional[int] = None) -> tuple[int, str]:
    """Run a launch with the runner's process-group handling (a time-out or an interrupt ends the
    launcher and every rank; ``finished()`` says the ranks' results are written, see
    :func:`~simtune.runner.launcher.run_process_group`); returns the exit code and the output.
    Raises ``subprocess.TimeoutExpired`` at the time-out."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        returncode, timed_out, _ = run_process_group(command, env, os.getcwd(), log, subprocess.STDOUT, timeout_s,
                                                     finished=finished, port=port)
        if timed_out:
            raise subprocess.TimeoutExpired(command, timeout_s or 0.0)
        log.seek(0)
        return returncode, log.read()


def measure_with_launch(request: Request, num_gpus: int, *, stages: tuple[int, ...] = (0, 1, 2, 3),
                        timeout_s: float = 900.0, machine_raw: Optional[Path] = None) -> WorkloadCalibration:
    """Run the measurement on ``num_gpus`` local ranks (started by
    :mod:`~simtune.runner.local_ranks`, as DeepSpeed's launcher would start them); merge.
    With ``machine_raw``, the launch calibrates the machine first and writes the raw output there
    (the request's memory limit is then the one measured)."""
    return measure_several_with_launch((request,), num_gpus, stages=stages, timeout_s=timeout_s,
                                       machine_raw=machine_raw)[0]


def measure_several_with_launch(requests: Sequence[Request], num_gpus: int, *,
                                stages: tuple[int, ...] = (0, 1, 2, 3), timeout_s: float = 900.0,
                                machine_raw: Optional[Path] = None) -> tuple[WorkloadCalibration, ...]:
    """:func:`measure_with_launch` of several workloads of one model library in one launch, in
    order (their stage-3 engines after every other engine: see :mod:`simtune.calib.workload_rank`);
    one calibration per request."""
    started = time.perf_counter()
    resources = Resources.resolve(num_gpus=num_gpus)
    with tempfile.TemporaryDirectory(prefix="simtune-workload-") as folder:
        def fields(request: Request) -> dict[str, object]:
            return {**dataclasses.asdict(request), "stages": list(stages) if request.engines else []}

        outs = [Path(folder)] + [Path(folder) / f"also{i}" for i in range(1, len(requests))]
        request_path = Path(folder) / "request.json"
        request_path.write_text(json.dumps({**fields(requests[0]), "out_dir": folder,
                                            "also": [fields(r) for r in requests[1:]],
                                            "machine_raw": str(machine_raw) if machine_raw else None}))
        port = free_port()
        command = local_ranks.command(resources.world_size, port, RANK_MODULE,
                                      [f"--request={request_path}"])
        env = launch_env(resources, folder)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")

        def finished() -> bool:  # every rank wrote its files, just before the last barrier and its exit
            return (all(len(list(out.glob("rank*.json"))) == resources.world_size for out in outs)
                    and (machine_raw is None or Path(machine_raw).is_file()))

        names = " and ".join(dict.fromkeys(r.model for r in requests))
        try:
            returncode, output = run_in_own_group(command, env, timeout_s, finished, port)
        except subprocess.TimeoutExpired:
            raise WorkloadCalibrationError(
                f"Measuring {names} took longer than {timeout_s:.0f} s and was stopped.") from None
        finally:
            remove_shm_buffers(port)
            release_port(port)
        if returncode != 0 or not finished():
            raise WorkloadCalibrationError(f"Measuring {names} in a launch failed: "
                                           f"{failure_reason(output, returncode).rstrip('.')}.")
        merged = [merge_ranks([WorkloadCalibration.from_dict(json.loads(p.read_text()))
                               for p in sorted(out.glob("rank*.json"))]) for out in outs]
    seconds = time.perf_counter() - started
    return tuple(dataclasses.replace(m, seconds=seconds) for m in merged)
