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


def calibrate_workload(workload: Workload, profile: HardwareProfile, *, precision: str,
                       num_gpus: Optional[int] = None, micro_batch_sizes: Sequence[int] = DEFAULT_MICRO_BATCH_SIZES,
                       cache_dir: Optional[os.PathLike[str] | str] = None, in_process: bool = False,
                       refresh: bool = False, repeats: int = 10, timeout_s: float = 900.0,
                       log: Optional[Log] = say, scope: Optional[MeasureScope] = None) -> WorkloadCalibration:
    """Measure a model-mode workload (a :class:`~simtune.workloads.Workload`) on this machine for
    ``profile`` (a :class:`~simtune.hardware.HardwareProfile`: the profile of this machine), or
    return the cached measurement of the same inputs (and say so through ``log``).

    By default one launch on ``num_gpus`` local ranks (default: the profile's ranks per node)
    measures the model on every rank at once, then real engines at every ZeRO stage
    (:mod:`simtune.calib.workload_rank`). ``in_process`` measures only the model, here,
    with the threads one rank gets (no engines, no process memory). ``refresh`` measures even
    when cached. ``scope``: the optional parts to measure (default all; a cached measurement
    without one of them is measured again).
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"calibrate_workload takes a Workload, not {type(workload).__name__}")
    scope = scope or MeasureScope()
    key = fingerprint(model_identity(workload), workload.seq_len, precision, profile.name)
    path, cached = cached_measurement(key, cache_dir, refresh, f"{workload.name} (seq {workload.seq_len}, "
                                      f"{precision}, profile {profile.name})", log, scope)
    if cached is not None:
        return cached
    ranks = num_gpus if num_gpus is not None else profile.device.count_per_node
    request = measurement_request(workload, precision, threads=rank_threads(profile),
                                  micro_batch_sizes=micro_batch_sizes, repeats=repeats, scope=scope,
                                  memory_limit_bytes=int(profile.device.usable_memory_bytes),
                                  profile_name=profile.name, fingerprint=key)
    if log:
        where = "in this process" if in_process else f"in one launch on {ranks} rank(s)"
        log(f"measuring {workload.name} (seq {workload.seq_len}, {precision}) {where}...")
    if in_process:
        from simtune.calib.workload_measure import measure  # torch: the host loads it only to measure here

        calibration = measure(request)
    else:
        calibration = measure_with_launch(request, ranks, timeout_s=timeout_s)
    save(calibration, path)
    if log:
        log(f"workload calibration saved to {path} ({calibration.seconds:.1f} s).")
    return calibration


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
    started = time.perf_counter()
    resources = Resources.resolve(num_gpus=num_gpus)
    with tempfile.TemporaryDirectory(prefix="simtune-workload-") as folder:
        request_path = Path(folder) / "request.json"
        request_path.write_text(json.dumps({**dataclasses.asdict(request), "out_dir": folder,
                                            "stages": list(stages) if request.engines else [],
                                            "machine_raw": str(machine_raw) if machine_raw else None}))
        port = free_port()
        command = local_ranks.command(resources.world_size, port, RANK_MODULE,
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
            raise WorkloadCalibrationError(f"Measuring {request.model} in a launch failed: "
                                           f"{failure_reason(output, returncode).rstrip('.')}.")
        parts = sorted(Path(folder).glob("rank*.json"))
        merged = merge_ranks([WorkloadCalibration.from_dict(json.loads(p.read_text())) for p in parts])
    return dataclasses.replace(merged, seconds=time.perf_counter() - started)
