"""A machine with no hardware profile and a workload to measure: both in one launch.

The first search on a machine needs the machine's quick calibration (``simtune calibrate
--quick``) and the workload's measurement. Each alone is a launch, and on a small model much of a
launch is its start: torch and DeepSpeed imported by every rank and the process group's
rendezvous (some 2 s of the 5 s of the quick calibration on 2 CPU processes). :func:`calibrate_machine_and_workload` runs both in the workload's launch
(:mod:`simtune.calibration.workload_launch` with a ``machine_raw`` path): the ranks run
``simtune.calib.run_all``'s sections first, exactly as the calibration's own launch would, then measure the
workload with the memory limit that calibration found. The profile is fitted and saved as
``simtune calibrate --quick`` saves it (also when the workload's part then fails), and the
measurement is cached under that profile's name.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from simtune.calibration.calibrate import calibrate_command, save_measured_profile
from simtune.calibration.workload import (DEFAULT_MICRO_BATCH_SIZES, MeasureScope, WorkloadCalibration,
                                          WorkloadCalibrationError, cache_path, fingerprint, measurement_request,
                                          model_identity, save, threads_per_rank)
from simtune.calibration.workload_launch import measure_with_launch
from simtune.hardware.profile import HardwareProfile
from simtune.runner.resources import Resources, detect_accelerator
from simtune.workloads.presets import Workload


@dataclass(frozen=True)
class MachineAndWorkload:
    profile: HardwareProfile
    profile_path: Path
    calibration: WorkloadCalibration
    cache_path: Path
    seconds: float
    """Wall time of the launch and the fitting."""


def calibrate_machine_and_workload(workload: Workload, num_gpus: int, *, precision: str,
                                   micro_batch_sizes: Sequence[int] = DEFAULT_MICRO_BATCH_SIZES, repeats: int = 10,
                                   timeout_s: float = 900.0, cache_dir: Optional[str] = None,
                                   profile_out: Optional[str] = None,
                                   scope: Optional[MeasureScope] = None) -> MachineAndWorkload:
    """Calibrate this machine (quick) and measure a model-mode ``workload`` on ``num_gpus`` local
    ranks in one launch; save the profile (``profile_out``, default the user profile folder) and
    cache the measurement (``cache_dir``, default the user cache). ``scope``: the optional parts
    of the workload's measurement (default all)."""
    accelerator = detect_accelerator()
    Resources.local(num_gpus=num_gpus, accelerator=accelerator)  # refuses more GPUs than this machine has
    started = time.monotonic()
    request = measurement_request(workload, precision, threads=threads_per_rank(accelerator, num_gpus),
                                  micro_batch_sizes=micro_batch_sizes, repeats=repeats, scope=scope)
    folder = Path(tempfile.mkdtemp(prefix="simtune-calibrate-"))
    raw_path = folder / "calib_raw.json"

    def fit_and_save() -> tuple[HardwareProfile, Path]:
        raw = json.loads(raw_path.read_text(encoding="utf-8"))
        return save_measured_profile(
            raw, command=calibrate_command(num_gpus, 1, None, None, profile_out, True), out=profile_out,
            note=f"measured in one launch with the workload measurement of {workload.name} "
                 f"(simtune.calibration.workload_launch)")

    try:
        try:
            measured = measure_with_launch(request, num_gpus, timeout_s=timeout_s, machine_raw=raw_path)
        except WorkloadCalibrationError:
            if raw_path.is_file():  # the machine was measured before the workload failed: keep its profile
                fit_and_save()
            raise
        profile, profile_path = fit_and_save()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    key = fingerprint(model_identity(workload), workload.seq_len, precision, profile.name)
    calibration = dataclasses.replace(measured, profile_name=profile.name, fingerprint=key)
    path = cache_path(cache_dir, key)
    save(calibration, path)
    return MachineAndWorkload(profile, profile_path, calibration, path, time.monotonic() - started)


__all__ = ["MachineAndWorkload", "calibrate_machine_and_workload"]
